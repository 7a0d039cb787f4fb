package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// Target is who a new leg calls and on whose behalf.
type Target struct {
	LegID        string // pre-chosen id (an invitation links to it), or "" for a new one
	UserID       *string
	GuestID      *string
	InvitationID *string
	Number       string
	// Source says where the number came from, for the dial policy and the
	// audit: "published" (the user's own published number), "new_number"
	// (typed in Join Conference), "redirect", or "guest" (a join link).
	Source string
}

// Dial records a new leg (starting the conference when there is none) and
// has the PBX place it. before, when set, runs inside the transaction first
// (accepting an invitation, say) and may refuse.
func (en *Engine) Dial(ctx context.Context, conv *storage.Conversation, a core.Actor, t Target,
	before func(tx *storage.Store, conf *storage.Conference) error) (core.JoinResult, error) {
	if en.draining.Load() {
		return core.JoinResult{}, core.Unavailable("convoice is shutting down; try again in a moment")
	}
	en.inflight.Add(1)
	defer en.inflight.Done()
	started := time.Now()

	// The number rules now; the limits are counted in the dial's
	// transaction (dialTx), so that the grant commits with the leg.
	dp, err := en.planDial(ctx, DialCheck{Actor: a, ConversationID: conv.ID, UserID: t.UserID, GuestID: t.GuestID,
		Number: t.Number, Source: t.Source})
	if err != nil {
		return core.JoinResult{}, err
	}
	// Fail fast, before anything is written, when no PBX can take a call
	// (after a node this replica just took over has its event connection).
	if !en.Ready() {
		for _, n := range en.nodes {
			en.awaitSwitch(ctx, n)
		}
	}
	if !en.Ready() {
		return core.JoinResult{}, core.Unavailable("the PBX is not reachable right now; no call was placed, try again shortly")
	}
	// placed is what dialTx settles before it lets this goroutine place
	// the call (tx.Proceed); invitation is set when the transaction is
	// done, and read only after Durable.
	var (
		placed     dialPlaced
		invitation *storage.Invitation
	)
	now := time.Now().UTC()
	// On PostgreSQL two requests (or replicas) may both find no conference
	// and both start one; the partial unique index lets one win, and the
	// other runs its transaction again and joins that conference.
	//
	// The call is placed as soon as the leg is committed, while the disk
	// makes it durable (storage.InTxEarly): the phone's ringing does not
	// wait for an fsync, the answer to the request does (durable below).
	var commit storage.Commit
	for attempt := 0; ; attempt++ {
		commit, err = en.store.InTxEarly(ctx, func(tx *storage.Store) error {
			inv, err := en.dialTx(ctx, tx, conv, a, t, dp, before, now, &placed)
			invitation = inv
			return err
		})
		if !errors.Is(err, errConferenceRace) || attempt == 2 {
			break
		}
	}
	if errors.Is(err, errConferenceRace) {
		err = core.Conflict("audio_starting", "the audio of this conversation is being started by someone else; try again")
	}
	var live *liveLegExists
	switch {
	case errors.As(err, &live):
		err = en.alreadyInAudio(ctx, live.confID, t)
	case errors.Is(err, storage.ErrLiveLeg) && placed.conf != nil:
		err = en.alreadyInAudio(ctx, placed.conf.ID, t)
	case errors.Is(err, errDialRefused):
		err = en.refused(ctx, dp)
	}
	if err != nil {
		// Nothing to release: a refused or failed transaction took its
		// grant with it.
		en.placed(&placed)
		return core.JoinResult{}, err
	}
	conf, leg := placed.conf, placed.leg
	// Once Durable has returned the records are committed (or the call
	// hung up): resyncs see them in the store from then on.
	defer en.placed(&placed)
	res, err := en.placeLeg(ctx, conv, conf, leg, placed.newConf, en.confirmFor(leg.Number, t.Source))
	if err == nil {
		en.metrics.DialToOriginate.WithLabelValues(conf.Node).Observe(time.Since(started).Seconds())
	}
	if derr := commit.Durable(); derr != nil {
		// The record of the call may be lost: do not leave a call that
		// nothing knows of.
		en.log.Error("dial not durable: hanging the call up", "leg", leg.ID, "err", derr)
		if err == nil {
			en.hangupLost(ctx, conf, leg.ID)
		}
		return core.JoinResult{}, derr
	}
	if err != nil {
		return core.JoinResult{}, err
	}
	if invitation != nil {
		iv := core.InvitationViewOf(invitation)
		res.Invitation = &iv
	}
	return res, nil
}

// placeLeg asks the conference's PBX node for the call (creating the
// conference there first when it is new), with confirm-to-join when
// confirm is set. A refusal ends the leg.
func (en *Engine) placeLeg(ctx context.Context, conv *storage.Conversation, conf *storage.Conference, leg *storage.Leg, newConf bool,
	confirm *pbx.Confirm) (core.JoinResult, error) {
	node, err := en.nodeOf(conf)
	if err != nil {
		en.failLeg(ctx, leg.ID, err.Error())
		return core.JoinResult{}, err
	}
	en.awaitSwitch(ctx, node)
	if newConf {
		en.metrics.Conferences.Inc()
		pctx, cancel := pbxCtx(ctx)
		err := node.Driver.CreateConference(pctx, conf.ID)
		cancel()
		if err != nil {
			en.log.Warn("create conference on pbx failed", "conference", conf.ID, "node", node.Name, "err", err)
			en.failLeg(ctx, leg.ID, "the PBX could not create the conference: "+err.Error())
			return core.JoinResult{}, en.pbxError(err)
		}
	}
	callerName := en.cfg.CallerIDName
	if conv.Subject != "" {
		callerName = en.cfg.CallerIDName + ": " + core.Truncate(conv.Subject, 40)
	}
	pctx, cancel := pbxCtx(ctx)
	err = node.Driver.Dial(pctx, pbx.DialRequest{LegID: leg.ID, ConferenceID: conf.ID, Number: leg.Number,
		CallerIDName: callerName, CallerIDNumber: en.cfg.CallerIDNumber, RingTimeout: en.cfg.RingTimeout, Confirm: confirm})
	cancel()
	switch {
	case err == nil || errors.Is(err, pbx.ErrExists):
		en.metrics.DialOuts.WithLabelValues(node.Name, "ok").Inc()
	default:
		en.metrics.DialOuts.WithLabelValues(node.Name, "error").Inc()
		en.log.Warn("originate failed", "leg", leg.ID, "node", node.Name, "number_kind", policy.DescribeNumber(leg.Number), "err", err)
		en.failLeg(ctx, leg.ID, "the PBX did not place the call: "+err.Error())
		return core.JoinResult{}, en.pbxError(err)
	}
	return core.JoinResult{Conference: core.ConferenceRef{ID: conf.ID, State: conf.State}, Leg: core.LegViewOf(leg)}, nil
}

// pbxError says what a driver error means to the user.
func (en *Engine) pbxError(err error) error {
	switch {
	case errors.Is(err, pbx.ErrRefused):
		return &core.Error{Kind: core.KindPBXRefused, Code: "pbx_refused", Message: "the PBX refused the call: " + err.Error(), Err: err}
	case errors.Is(err, pbx.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &core.Error{Kind: core.KindUnavailable, Code: "pbx_unavailable", Message: "the PBX is not reachable right now; the call was not placed", Err: err}
	}
	if e, ok := core.AsError(err); ok {
		return e
	}
	return &core.Error{Kind: core.KindPBXRefused, Code: "pbx_error", Message: "the PBX could not place the call: " + err.Error(), Err: err}
}

// hangupLost hangs up a call whose record the store could not make
// durable; the store refuses writes by then, so only the PBX is told.
func (en *Engine) hangupLost(ctx context.Context, conf *storage.Conference, legID string) {
	node, err := en.nodeOf(conf)
	if err != nil {
		return
	}
	pctx, cancel := pbxCtx(context.WithoutCancel(ctx))
	defer cancel()
	if err := node.Driver.Hangup(pctx, legID); err != nil && !errors.Is(err, pbx.ErrNotFound) {
		en.log.Warn("hanging up a call without a durable record failed", "leg", legID, "err", err)
	}
}

// placed takes a dial's leg and new conference out of the placing set.
func (en *Engine) placed(p *dialPlaced) {
	if p.leg != nil {
		en.placing.Delete(p.leg.ID)
	}
	if p.newConf && p.conf != nil {
		en.placing.Delete(p.conf.ID)
	}
}

// isPlacing reports whether id is a leg or a new conference a dial of
// this process is placing, not committed yet.
func (en *Engine) isPlacing(id string) bool {
	_, ok := en.placing.Load(id)
	return ok
}

// placingIn reports whether a dial of this process is placing a leg into
// the conference.
func (en *Engine) placingIn(confID string) bool {
	found := false
	en.placing.Range(func(_, v any) bool {
		found = v.(string) == confID
		return !found
	})
	return found
}

// errConferenceRace: another transaction started the conversation's
// conference first (PostgreSQL); dial runs its transaction again.
var errConferenceRace = errors.New("conference started concurrently")

// liveLegExists: dialTx found the target's live call in the conference
// (the unique index of live legs refused a second one).
type liveLegExists struct{ confID string }

func (e *liveLegExists) Error() string { return "a live call exists in conference " + e.confID }

// alreadyInAudio is the refusal of a second live call: it names the call
// there is, read after the refused transaction.
func (en *Engine) alreadyInAudio(ctx context.Context, confID string, t Target) error {
	if t.UserID != nil {
		if l, err := en.store.LiveLegOfUser(ctx, confID, *t.UserID); err == nil {
			return &core.Error{Kind: core.KindConflict, Code: "already_in_audio",
				Message: fmt.Sprintf("a call to %s is already %s in this conference; hang it up first", l.Number, l.State)}
		}
	}
	return &core.Error{Kind: core.KindConflict, Code: "already_in_audio",
		Message: "a call to you is already being placed in this conference"}
}

// dialPlaced is what dialTx settles before the call may be placed.
type dialPlaced struct {
	conf    *storage.Conference
	leg     *storage.Leg
	newConf bool
}

// dialTx is Dial's transaction: find (and lock) or start the conference,
// refuse a second live leg, record the leg. Once the
// leg is written it fills p and lets the caller place the call
// (tx.Proceed): what follows only records (events, the invitation answered
// by joining, the audit), and should
// it fail the caller hangs the call up (Commit.Durable).
func (en *Engine) dialTx(ctx context.Context, tx *storage.Store, conv *storage.Conversation, a core.Actor, t Target, dp *dialPlan,
	before func(tx *storage.Store, conf *storage.Conference) error, now time.Time, p *dialPlaced,
) (invitation *storage.Invitation, err error) {
	// The conversation's lock first (see storage.LockConversation): then
	// its last leg ending cannot end the conference under us. Joining
	// directly answers one's own pending invitation: it is read with the
	// locks. Then the dial's count against the limits. On PostgreSQL all
	// of it goes out in one round trip (Flush) and the locks are held to
	// COMMIT; the scope locks come after the conversation's, so a dial
	// waiting for its conversation (a batch of call progress holds it, or
	// another join) does not hold its caller's other dials behind it.
	answers := ""
	if t.UserID != nil && t.InvitationID == nil {
		answers = *t.UserID
	}
	var jl storage.JoinLock
	if err := tx.LockConversationForJoinLater(ctx, conv.ID, answers, &jl); err != nil {
		return nil, err
	}
	if dp != nil {
		if err := en.decideTx(ctx, tx, dp); err != nil {
			return nil, err
		}
	}
	if err := tx.Flush(ctx); err != nil {
		return nil, err
	}
	conf, pending := jl.Conference, jl.Invitation
	if dp != nil && !dp.res.Granted {
		return nil, errDialRefused
	}
	newConf := false
	if conf == nil {
		node, perr := en.placeConference(ctx)
		if perr != nil {
			return nil, perr
		}
		conf = &storage.Conference{ID: core.NewID(), ConversationID: conv.ID, State: storage.ConferenceActive,
			Node: node.Name, CreatedBy: a.UserID, CreatedAt: now}
		if err := tx.CreateConference(ctx, conf); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				return nil, errConferenceRace
			}
			return nil, err
		}
		newConf = true
		if err := core.AppendEvent(ctx, tx, conv.ID, "audio.started", core.ConferenceViewOf(conf)); err != nil {
			return nil, err
		}
	}
	if before != nil {
		if err := before(tx, conf); err != nil {
			return nil, err
		}
	}
	legID := t.LegID
	if legID == "" {
		legID = core.NewID()
	}
	leg := &storage.Leg{ID: legID, ConferenceID: conf.ID, ConversationID: conv.ID, UserID: t.UserID,
		GuestID: t.GuestID, InvitationID: t.InvitationID, Node: conf.Node, Number: t.Number,
		State: storage.LegDialing, CreatedAt: now, UpdatedAt: now}
	// The unique index of live legs refuses a second live call of this
	// person in the conference (Dial names the one there is), whether it
	// is theirs already or a concurrent request (another replica, a double
	// click) placed it first. No read beforehand, and on PostgreSQL the
	// insert goes out with the COMMIT (its refusal is storage.ErrLiveLeg
	// then, which Dial maps the same way): the conversation stays locked
	// for two round trips, the one that takes the locks and the one that
	// commits.
	if err := tx.CreateLegLater(ctx, leg); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return nil, &liveLegExists{confID: conf.ID}
		}
		return nil, err
	}
	*p = dialPlaced{conf: conf, leg: leg, newConf: newConf}
	// The call may be on the PBX before this transaction commits: until
	// then a resync must not take it for an orphan (placing).
	en.placing.Store(leg.ID, conf.ID)
	if newConf {
		en.placing.Store(conf.ID, "")
	}
	tx.Proceed()

	if err := core.AppendEvent(ctx, tx, conv.ID, "leg.updated", core.LegViewOf(leg)); err != nil {
		return nil, err
	}
	if pending != nil && !newConf {
		pending.LegID = &leg.ID
		if err := en.SetInvitationState(ctx, tx, pending, storage.InvitationAccepted); err != nil {
			return nil, err
		}
		invitation = pending
	}
	// The others are invited when the first call is connected
	// (inviteOnFirstConnect), not now: a first call that fails invites
	// nobody.
	if err := en.dialedTx(ctx, tx, a, conv.ID, t, leg); err != nil {
		return nil, err
	}
	return invitation, nil
}
