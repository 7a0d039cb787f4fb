package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/storage"
)

// DialCheck is what the dial policy is asked before any leg is written or
// dialed.
type DialCheck struct {
	Actor          core.Actor
	ConversationID string
	UserID         *string
	GuestID        *string
	// Number is validated E.164 (or a configured extension).
	Number string
	// Source: "published", "new_number", "redirect" or "guest".
	Source string
}

// Policy is the dial policy in force (the guests' side reads its join-link
// limits).
func (en *Engine) Policy() *policy.Policy { return en.policy }

// planDial applies the dial policy's number rules (a refusal is audited)
// and prepares the count of the dial against the limits: decideTx makes it
// in the dial's transaction, refused answers a refusal. nil plan: every
// limit is off, nothing to count (no grant).
func (en *Engine) planDial(ctx context.Context, d DialCheck) (*dialPlan, error) {
	guest := policy.IsGuestSource(d.Source) || d.GuestID != nil
	p := en.policy
	if r := p.NumberRule(en.numbers, d.Number, guest); r != nil {
		en.auditRefusal(ctx, nil, d, r)
		return nil, r.Err()
	}
	if !p.Limited() {
		return nil, nil
	}
	return en.planLimits(ctx, p, d, guest)
}

// decideTx counts the dial in tx (storage.DecideDialIn): its outcome is in
// dp.res once tx's next statement has returned (at once on SQLite).
func (en *Engine) decideTx(ctx context.Context, tx *storage.Store, dp *dialPlan) error {
	return tx.DecideDialIn(ctx, dp.keys, dp.limits, dp.grant, &dp.res)
}

// errDialRefused: the dial's decision refused it (dialTx); Dial answers
// with refusalOf once the transaction is rolled back.
var errDialRefused = errors.New("dial refused by the dial policy")

// dialLimit is one limit of a decision with the words of its refusal.
type dialLimit struct {
	storage.DialLimit
	rule, name, words string
}

// dialPlan is a dial's count against the limits: the scopes it locks,
// the limits it counts, the grant it records when within them, and, once
// decided, the outcome.
type dialPlan struct {
	d      DialCheck
	on     []dialLimit
	limits []storage.DialLimit
	keys   []string
	grant  *storage.DialGrant
	since  time.Time
	res    storage.DialDecision
}

// planLimits prepares the caps and rates a dial is counted against. The
// decision (storage.DecideDialIn) locks per scope (the caller, their
// account, the conversation) rather than for the whole cluster, so dials
// of different people in different conversations never wait for each
// other. The service-wide caps are the exception: counted without a lock,
// they may be exceeded by the dials deciding at the same moment (README,
// "Several replicas").
func (en *Engine) planLimits(ctx context.Context, p *policy.Policy, d DialCheck, guest bool) (*dialPlan, error) {
	now := p.Now().UTC()
	en.forgetOldGrants(ctx, p, now)
	who := storage.DialScope{}
	whoWord := "you have"
	maxLegs, maxDials := p.MaxLegsUser, p.DialsUser
	keys := []string{"dial:conv:" + d.ConversationID}
	switch {
	case d.GuestID != nil:
		who.GuestID = *d.GuestID
		maxLegs, maxDials = p.MaxLegsGuest, p.DialsGuest
		keys = append(keys, "dial:guest:"+who.GuestID)
	case d.UserID != nil:
		who.UserID = *d.UserID
	default:
		maxLegs, maxDials = 0, 0 // nobody to count against; the other limits still hold
	}
	// The account answers for the dial: the user, or for a guest the user
	// who made their join link, so that nobody spends the service's budget
	// through links without it counting against them.
	account := who.UserID
	if d.GuestID != nil {
		maker, err := en.store.LinkMakerOfGuest(ctx, *d.GuestID)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		account = maker
	}
	if account != "" {
		// A user's own scope is their account's: one key serialises both.
		keys = append(keys, "dial:account:"+account)
	}
	acct := storage.DialScope{Account: account}
	acctLegs, acctDials := p.AccountShareOf(p.MaxLegs), p.AccountShareOf(p.DialsTotal)
	makerDials := 0
	if d.GuestID != nil {
		makerDials = p.GuestDialsMaker
	}
	if account == "" {
		acctLegs, acctDials, makerDials = 0, 0, 0
	}
	conv := storage.DialScope{ConversationID: d.ConversationID}
	since := now.Add(-p.Window)
	// Calls up at once (live legs: an allowed dial's leg is written in
	// the decision's transaction), then dial-outs in the rate window.
	all := []dialLimit{
		{storage.DialLimit{Scope: who, Live: true, Max: maxLegs}, policy.RuleTooManyCalls,
			"max_live_legs_per_caller", whoWord + " %d calls up already; hang one up first"},
		{storage.DialLimit{Scope: conv, Live: true, Max: p.MaxLegsConv}, policy.RuleTooManyCalls,
			"max_live_legs_per_conversation", "this conversation has %d calls up already"},
		{storage.DialLimit{Scope: acct, Live: true, Max: acctLegs}, policy.RuleTooManyCalls,
			"max_live_legs_per_account", accountWords(d, "%d calls up, the share of convoice's calls one account may hold (max_live_legs_per_account)")},
		{storage.DialLimit{Scope: storage.DialScope{}, Live: true, Max: p.MaxLegs}, policy.RuleTooManyCalls,
			"max_live_legs", "convoice has %d calls up, its limit; try again when some have ended"},
		{storage.DialLimit{Scope: who, Since: since, Max: maxDials}, policy.RuleRateLimited,
			"dials_per_caller", "you have placed %d calls in the last %s"},
		{storage.DialLimit{Scope: conv, Since: since, Max: p.DialsConv}, policy.RuleRateLimited,
			"dials_per_conversation", "this conversation has placed %d calls in the last %s"},
		{storage.DialLimit{Scope: storage.DialScope{Account: account, AnyGuest: true}, Since: since, Max: makerDials}, policy.RuleRateLimited,
			"guest_dials_per_link_maker", "the guests of the join links of this link's maker have placed %d calls in the last %s (guest_dials_per_link_maker)"},
		{storage.DialLimit{Scope: acct, Since: since, Max: acctDials}, policy.RuleRateLimited,
			"dials_per_account", accountWords(d, "placed %d calls in the last %s, the share of convoice's calls one account may place (dials_per_account)")},
		{storage.DialLimit{Scope: storage.DialScope{}, Since: since, Max: p.DialsTotal}, policy.RuleRateLimited,
			"dials_total", "convoice has placed %d calls in the last %s, its limit"},
	}
	if guest {
		all = append(all, dialLimit{storage.DialLimit{Scope: storage.DialScope{ConversationID: d.ConversationID, AnyGuest: true},
			Since: since, Max: p.GuestDialsConv}, policy.RuleRateLimited,
			"guest_dials_per_conversation", "guests of this conversation have placed %d calls in the last %s"})
	}
	var on []dialLimit
	var limits []storage.DialLimit
	for _, l := range all {
		if l.Max > 0 {
			on = append(on, l)
			limits = append(limits, l.DialLimit)
		}
	}
	g := &storage.DialGrant{ID: core.NewID(), At: now, ConversationID: d.ConversationID, Number: d.Number,
		UserID: who.UserID, GuestID: who.GuestID, Account: account}
	return &dialPlan{d: d, on: on, limits: limits, keys: keys, grant: g, since: since}, nil
}

// refusalOf is the refusal of a dial its decision refused: the first
// limit its counts reached.
func (en *Engine) refusalOf(ctx context.Context, dp *dialPlan) (*policy.Refusal, error) {
	p, counts, now, since := en.policy, dp.res.Counts, dp.grant.At, dp.since
	for i, l := range dp.on {
		n := counts[i]
		if n < int64(l.Max) {
			continue
		}
		if l.rule == policy.RuleTooManyCalls {
			return &policy.Refusal{Rule: l.rule, Message: fmt.Sprintf(l.words, n), Detail: fmt.Sprintf("%s=%d", l.name, l.Max)}, nil
		}
		wait := p.Window
		if oldest, err := en.store.OldestDialGrant(ctx, l.Scope, since); err == nil && !oldest.IsZero() {
			wait = oldest.Add(p.Window).Sub(now)
		}
		return &policy.Refusal{Rule: l.rule,
			Message: fmt.Sprintf(l.words+"; try again in %s", n, p.Window, wait.Round(time.Second)+time.Second),
			Detail:  fmt.Sprintf("%s=%d/%s", l.name, l.Max, p.Window)}, nil
	}
	return nil, fmt.Errorf("dial policy: no grant recorded and no limit reached")
}

// forgetOldGrants deletes, at most every grantSweep and off the dial's
// path, the grants no limit looks at any more (an index range delete). It
// used to run in every decision, where on PostgreSQL concurrent deletes of
// the same rows made every dial wait for the others.
func (en *Engine) forgetOldGrants(ctx context.Context, p *policy.Policy, now time.Time) {
	last := en.grantSweep.Load()
	if now.UnixNano()-last < int64(grantSweep) || !en.grantSweep.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	go func() {
		ctx := storage.LowPriority(context.WithoutCancel(ctx))
		if err := en.store.DeleteDialGrantsBefore(ctx, now.Add(-p.Window-time.Minute)); err != nil {
			en.log.Warn("forgetting old dial grants failed", "err", err)
		}
	}()
}

// grantSweep is how often forgetOldGrants deletes.
const grantSweep = 10 * time.Second

// accountWords starts a refusal of an account-wide limit: the account is
// the caller's own, or for a guest their link maker's.
func accountWords(d DialCheck, rest string) string {
	if d.GuestID != nil {
		return "the guests of this link's maker and the maker together have " + rest
	}
	return "you and the guests of your join links have " + rest
}

// refused is the answer to a dial its decision refused, audited.
func (en *Engine) refused(ctx context.Context, dp *dialPlan) error {
	ref, err := en.refusalOf(ctx, dp)
	if err != nil {
		return err
	}
	en.auditRefusal(ctx, nil, dp.d, ref)
	return ref.Err()
}

// dialedTx records a leg's dial-out, as an audit entry, in the
// transaction that creates the leg (and commits the dial's grant).
func (en *Engine) dialedTx(ctx context.Context, tx *storage.Store, a core.Actor, convID string, t Target, leg *storage.Leg) error {
	return en.audit.AddTx(ctx, tx, audit.Entry{Actor: a, GuestID: deref(t.GuestID), Action: audit.ActionDial, ConversationID: convID,
		TargetID: leg.ID, Number: t.Number, Source: t.Source, Detail: policy.NumberKind(t.Number)})
}

// auditRefusal records a refused dial (in tx when given).
func (en *Engine) auditRefusal(ctx context.Context, tx *storage.Store, d DialCheck, r *policy.Refusal) error {
	e := audit.Entry{Actor: d.Actor, GuestID: deref(d.GuestID), Action: audit.ActionDialRefused, ConversationID: d.ConversationID,
		Number: d.Number, Source: d.Source, Rule: r.Rule, Detail: r.Detail}
	if tx != nil {
		return en.audit.AddTx(ctx, tx, e)
	}
	en.audit.Add(ctx, e)
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
