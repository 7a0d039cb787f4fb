package engine

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nyaruka/phonenumbers"

	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
	"github.com/convoice/convoice/storage/pgtest"
)

// policyController is an engine with no PBX over a fresh store:
// enough for checkDial, which decides before anything reaches a PBX. The
// store is a new SQLite file, or, with CONVOICE_TEST_POSTGRES (a DSN of a
// throw-away server), a new PostgreSQL database.
func policyController(t testing.TB, p policy.Config) *Engine {
	t.Helper()
	dsn := pgtest.DSN(t, filepath.Join(t.TempDir(), "policy.db"))
	st, err := storage.Open(context.Background(), dsn, storage.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return New(Config{Region: "US", Extensions: regexp.MustCompile(`^[0-9]{4}$`), Policy: p}, st,
		audit.New(st, slog.New(slog.DiscardHandler)), nil, nil)
}

// checkDial is the decision Dial makes in its transaction (planDial,
// decideTx, refused) without a conversation or a PBX: an allowed dial's
// leg is written and its dial-out audited in the decision's transaction,
// as Dial does (dialing, in a conference of its own, so that one
// person's dials never meet the unique index of live legs).
func (en *Engine) checkDial(ctx context.Context, d DialCheck) error {
	_, err := en.checkDialLeg(ctx, d)
	return err
}

// checkDialLeg is checkDial returning the allowed dial's leg.
func (en *Engine) checkDialLeg(ctx context.Context, d DialCheck) (*storage.Leg, error) {
	dp, err := en.planDial(ctx, d)
	if err != nil {
		return nil, err
	}
	var l *storage.Leg
	err = en.store.InTx(ctx, func(tx *storage.Store) error {
		if dp != nil {
			if err := en.decideTx(ctx, tx, dp); err != nil {
				return err
			}
			// A read sends the pipelined decision (PostgreSQL) and fills
			// dp.res, as Dial's conversation lock does.
			if _, err := tx.CountLiveLegsIn(ctx, storage.DialScope{ConversationID: d.ConversationID}); err != nil {
				return err
			}
			if !dp.res.Granted {
				return nil
			}
		}
		now := time.Now().UTC()
		l = &storage.Leg{ID: core.NewID(), ConferenceID: core.NewID(), ConversationID: d.ConversationID, UserID: d.UserID,
			GuestID: d.GuestID, Number: d.Number, State: storage.LegDialing, CreatedAt: now, UpdatedAt: now}
		if err := tx.CreateLeg(ctx, l); err != nil {
			return err
		}
		return en.dialedTx(ctx, tx, d.Actor, d.ConversationID, Target{UserID: d.UserID, GuestID: d.GuestID, Number: d.Number, Source: d.Source}, l)
	})
	if err != nil {
		return nil, err
	}
	if dp != nil && !dp.res.Granted {
		return nil, en.refused(ctx, dp)
	}
	return l, nil
}

// endLeg ends a leg checkDialLeg wrote: its call is over.
func (en *Engine) endLeg(t testing.TB, l *storage.Leg) {
	t.Helper()
	now := time.Now().UTC()
	l.State, l.EndedAt = storage.LegEnded, &now
	if err := en.store.InTx(context.Background(), func(tx *storage.Store) error { return tx.SaveLeg(context.Background(), l) }); err != nil {
		t.Fatal(err)
	}
}

// noLimits switches off every limit p does not set, to look at the number
// rules (or one limit) alone.
func noLimits(p policy.Config) policy.Config {
	for _, l := range []*int{&p.MaxLiveLegsPerUser, &p.MaxLiveLegsPerGuest, &p.MaxLiveLegsPerConversation, &p.MaxLiveLegs,
		&p.DialsPerUser, &p.DialsPerGuest, &p.DialsPerConversation, &p.GuestDialsPerConversation, &p.DialsTotal,
		&p.GuestDialsPerLinkMaker, &p.MaxJoinLinksPerUser, &p.MaxGuestsPerLink, &p.AccountSharePercent} {
		if *l == 0 {
			*l = policy.Unlimited
		}
	}
	return p
}

func userDial(userID, conv, number, source string) DialCheck {
	return DialCheck{Actor: core.Actor{UserID: userID, Name: "U " + userID}, ConversationID: conv, UserID: &userID, Number: number, Source: source}
}

func guestDial(guestID, conv, number string) DialCheck {
	return DialCheck{Actor: core.Actor{Name: "Guest " + guestID}, ConversationID: conv, GuestID: &guestID, Number: number, Source: "guest"}
}

// ruleOf is the refusal code of err ("" when allowed), failing on any
// error that is not a refusal.
func ruleOf(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	e, ok := core.AsError(err)
	if !ok {
		t.Fatalf("checkDial failed with %v, not a refusal", err)
	}
	switch {
	case e.Code == policy.RuleRateLimited && e.Kind != core.KindRateLimited,
		e.Code != policy.RuleRateLimited && e.Kind != core.KindForbidden:
		t.Fatalf("refusal %s has kind %d", e.Code, e.Kind)
	}
	if e.Message == "" {
		t.Fatalf("refusal %s has no words for people", e.Code)
	}
	return e.Code
}

func auditCount(t testing.TB, c *Engine, action string) int {
	t.Helper()
	es, err := c.store.AuditEntries(context.Background(), storage.AuditFilter{Action: action})
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func TestPolicy_NumberRulesForUsersAndGuests(t *testing.T) {
	c := policyController(t, noLimits(policy.Config{
		AllowPrefixes: []string{"+4420", "+449"},
		DenyPrefixes:  []string{"+1202555099", "+44207946", "9"},
	}))
	cases := []struct {
		number, source, want string
	}{
		{"+12025550101", "published", ""},
		{"+12025550101", "new_number", ""},
		{"+12025550101", "redirect", ""},
		{"+12025550101", "guest", ""},
		{"+18005550199", "new_number", ""},                               // toll free: fine for users
		{"+18005550199", "guest", policy.RuleNumberTypeNotAllowed},       // … not for guests
		{"+19005550123", "published", policy.RuleNumberTypeNotAllowed},   // US premium rate
		{"+19002001234", "guest", policy.RuleNumberTypeNotAllowed},       // US premium rate
		{"+15005550123", "new_number", policy.RuleNumberTypeNotAllowed},  // US personal number (5XX)
		{"+18765551234", "new_number", policy.RuleCountryNotAllowed},     // Jamaica shares +1: the region decides
		{"+18095551234", "redirect", policy.RuleCountryNotAllowed},       // Dominican Republic
		{"+14165550123", "new_number", policy.RuleCountryNotAllowed},     // Canada
		{"+33612345678", "new_number", policy.RuleCountryNotAllowed},     // France
		{"+881612345678", "new_number", policy.RuleCountryNotAllowed},    // Iridium satellite
		{"+979123456789", "new_number", policy.RuleCountryNotAllowed},    // international premium rate
		{"+442071234567", "new_number", ""},                              // London, admitted by the allow list
		{"+442071234567", "guest", policy.RuleCountryNotAllowed},         // the allow list is not for guests
		{"+449098790123", "new_number", policy.RuleNumberTypeNotAllowed}, // allowed prefix, but premium rate
		{"+442079460958", "new_number", policy.RuleNumberNotAllowed},     // allowed and denied: deny wins
		{"+12025550999", "published", policy.RuleNumberNotAllowed},       // deny list
		{"+12025550999", "guest", policy.RuleNumberNotAllowed},           // deny list
		{"1001", "new_number", ""},                                       // extension
		{"1001", "guest", policy.RuleExtensionNotAllowed},                // no extensions for guests
		{"9001", "new_number", policy.RuleNumberNotAllowed},              // denied extension range
		{"10011", "new_number", policy.RuleNumberNotAllowed},             // not the extension pattern
		{"10 01", "new_number", policy.RuleNumberNotAllowed},             // checkDial trusts no caller
		{"(1001)", "new_number", policy.RuleNumberNotAllowed},            // …
		{"+1 202 555 0101", "new_number", policy.RuleNumberNotAllowed},   // not normalised
		{"+12025550101&Local/x@evil", "new_number", policy.RuleNumberNotAllowed},
		{"+1202555010１", "new_number", policy.RuleNumberNotAllowed}, // a fullwidth digit
		{"+" + strings.Repeat("1", 16), "new_number", policy.RuleNumberNotAllowed},
		{"", "new_number", policy.RuleNumberNotAllowed},
		{"+18005550199", "carrier-pigeon", policy.RuleNumberTypeNotAllowed}, // unknown source: the guest rules
	}
	refused := 0
	for _, tc := range cases {
		d := userDial("u1", "c1", tc.number, tc.source)
		if tc.source == "guest" {
			d = guestDial("g1", "c1", tc.number)
		}
		if got := ruleOf(t, c.checkDial(context.Background(), d)); got != tc.want {
			t.Errorf("%s %q: refused with %q, want %q", tc.source, tc.number, got, tc.want)
		}
		if tc.want != "" {
			refused++
		}
	}
	es, err := c.store.AuditEntries(context.Background(), storage.AuditFilter{Action: audit.ActionDialRefused, Ascending: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != refused {
		t.Fatalf("%d refusals audited, want %d", len(es), refused)
	}
	for _, e := range es {
		if e.Rule == "" || e.ConversationID != "c1" || e.ActorID == "" || e.Source == "" {
			t.Errorf("refusal audit entry lacks who, what or why: %+v", e)
		}
	}
}

func TestPolicy_ConfiguredCountriesTypesAndGuestRules(t *testing.T) {
	c := policyController(t, noLimits(policy.Config{
		AllowedCountries:      []string{"US", "+44"},
		GuestAllowedCountries: []string{"US"},
		BlockedTypes:          []phonenumbers.PhoneNumberType{phonenumbers.PREMIUM_RATE, phonenumbers.TOLL_FREE},
		GuestAllowedTypes:     []phonenumbers.PhoneNumberType{phonenumbers.FIXED_LINE_OR_MOBILE, phonenumbers.TOLL_FREE},
		GuestExtensions:       true,
	}))
	for _, tc := range []struct{ number, source, want string }{
		{"+442079460958", "new_number", ""},                             // +44 allowed by calling code
		{"+447911123456", "new_number", ""},                             // … Guernsey shares +44
		{"+18005550199", "new_number", policy.RuleNumberTypeNotAllowed}, // toll free blocked by configuration
		{"+15005550123", "new_number", ""},                              // personal numbers no longer blocked
		{"+442079460958", "guest", policy.RuleCountryNotAllowed},        // guests: US only
		{"+18005550199", "guest", ""},                                   // guests: toll free allowed by configuration
		{"+12025550101", "guest", ""},                                   // FIXED_LINE_OR_MOBILE
		{"1001", "guest", ""},                                           // extensions allowed for guests
		{"+19005550123", "guest", policy.RuleNumberTypeNotAllowed},      // not in the guest types
	} {
		d := userDial("u1", "c1", tc.number, tc.source)
		if tc.source == "guest" {
			d = guestDial("g1", "c1", tc.number)
		}
		if got := ruleOf(t, c.checkDial(context.Background(), d)); got != tc.want {
			t.Errorf("%s %q: refused with %q, want %q", tc.source, tc.number, got, tc.want)
		}
	}
}

// A country entry that Check would refuse never widens the list.
func TestPolicy_ABadCountryNeverWidensTheList(t *testing.T) {
	c := policyController(t, noLimits(policy.Config{AllowedCountries: []string{"ZZ"}}))
	if got := ruleOf(t, c.checkDial(context.Background(), userDial("u", "c", "+12025550101", "new_number"))); got != policy.RuleCountryNotAllowed {
		t.Errorf("with only a bad country configured, a US number gives %q", got)
	}
}

// fakeClock is a policy clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time      { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) add(d time.Duration) { f.mu.Lock(); f.t = f.t.Add(d); f.mu.Unlock() }

func TestPolicy_RateLimitsRefuseTheNPlusFirstUntilTheWindowMoves(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	p := noLimits(policy.Config{DialsPerUser: 3, DialsPerConversation: 5, GuestDialsPerConversation: 2, DialsTotal: 8, Window: time.Minute})
	p.Now = clk.now
	c := policyController(t, p)
	ctx := context.Background()
	dial := func(d DialCheck) string {
		t.Helper()
		return ruleOf(t, c.checkDial(ctx, d))
	}
	// Per user: 3 a minute.
	for i := 0; i < 3; i++ {
		if got := dial(userDial("alice", "c1", "+12025550101", "published")); got != "" {
			t.Fatalf("dial %d refused: %s", i+1, got)
		}
	}
	if got := dial(userDial("alice", "c2", "+12025550101", "published")); got != policy.RuleRateLimited {
		t.Fatalf("4th dial of alice in the window: %q, want rate_limited", got)
	}
	// Another user is not held by alice's limit; the conversation's (5) is
	// reached after two more.
	for i := 0; i < 2; i++ {
		if got := dial(userDial("bob", "c1", "+12025550111", "published")); got != "" {
			t.Fatalf("bob's dial %d refused: %s", i+1, got)
		}
	}
	if got := dial(userDial("carol", "c1", "+12025550121", "published")); got != policy.RuleRateLimited {
		t.Fatalf("6th dial of conversation c1: %q, want rate_limited", got)
	}
	// Guests of a conversation together: 2.
	if got := dial(guestDial("g1", "c3", "+12025550131")); got != "" {
		t.Fatal(got)
	}
	if got := dial(guestDial("g2", "c3", "+12025550132")); got != "" {
		t.Fatal(got)
	}
	if got := dial(guestDial("g3", "c3", "+12025550133")); got != policy.RuleRateLimited {
		t.Fatalf("3rd guest dial in c3: %q, want rate_limited", got)
	}
	// The whole service: 8 (7 so far).
	if got := dial(userDial("dave", "c4", "+12025550141", "published")); got != "" {
		t.Fatal(got)
	}
	if got := dial(userDial("erin", "c5", "+12025550151", "published")); got != policy.RuleRateLimited {
		t.Fatalf("9th dial of the service: %q, want rate_limited", got)
	}
	// A minute later everything is free again.
	clk.add(time.Minute + time.Second)
	for _, d := range []DialCheck{userDial("alice", "c2", "+12025550101", "published"), userDial("carol", "c1", "+12025550121", "published"),
		guestDial("g3", "c3", "+12025550133"), userDial("erin", "c5", "+12025550151", "published")} {
		if got := dial(d); got != "" {
			t.Fatalf("after the window, %+v still refused: %s", d, got)
		}
	}
	if n := auditCount(t, c, audit.ActionDialRefused); n != 4 {
		t.Fatalf("%d refusals audited, want 4", n)
	}
}

func TestPolicy_CapsCountLiveLegs(t *testing.T) {
	p := noLimits(policy.Config{MaxLiveLegsPerUser: 2, MaxLiveLegsPerGuest: 1, MaxLiveLegsPerConversation: 3, MaxLiveLegs: 4})
	c := policyController(t, p)
	ctx := context.Background()
	addLeg := func(conv string, user, guest *string, state string) *storage.Leg {
		t.Helper()
		now := time.Now().UTC()
		l := &storage.Leg{ID: core.NewID(), ConferenceID: "conf-" + conv, ConversationID: conv, UserID: user, GuestID: guest,
			Number: "+12025550101", State: state, CreatedAt: now, UpdatedAt: now}
		if err := c.store.CreateLeg(ctx, l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	alice, g1 := "alice", "g1"
	// Alice has one connected leg and one ended one: one counts.
	addLeg("c1", &alice, nil, storage.LegConnected)
	addLeg("c1", &alice, nil, storage.LegEnded)
	// An allowed dial's leg is written with its decision: it counts at
	// once, dialing.
	if got := ruleOf(t, c.checkDial(ctx, userDial("alice", "c2", "+12025550102", "new_number"))); got != "" {
		t.Fatal(got)
	}
	if got := ruleOf(t, c.checkDial(ctx, userDial("alice", "c3", "+12025550103", "new_number"))); got != policy.RuleTooManyCalls {
		t.Fatalf("alice's 3rd call: %q, want too_many_calls", got)
	}
	// A guest: one call at a time.
	addLeg("c1", nil, &g1, storage.LegRinging)
	if got := ruleOf(t, c.checkDial(ctx, guestDial("g1", "c1", "+12025550131"))); got != policy.RuleTooManyCalls {
		t.Fatalf("guest's 2nd call: %q", got)
	}
	// Conversation c1 has 2 live legs (alice, g1): one more fits, then no.
	bobs, err := c.checkDialLeg(ctx, userDial("bob", "c1", "+12025550111", "published"))
	if got := ruleOf(t, err); got != "" {
		t.Fatalf("3rd call in c1: %s", got)
	}
	if got := ruleOf(t, c.checkDial(ctx, userDial("carol", "c1", "+12025550121", "published"))); got != policy.RuleTooManyCalls {
		t.Fatalf("4th call in c1: %q", got)
	}
	// The service: alice ×2, g1, bob = 4 = the cap.
	if got := ruleOf(t, c.checkDial(ctx, userDial("dave", "c9", "+12025550141", "published"))); got != policy.RuleTooManyCalls {
		t.Fatalf("5th call of the service: %q", got)
	}
	// Bob's call ends (or never got through): room again.
	c.endLeg(t, bobs)
	if got := ruleOf(t, c.checkDial(ctx, userDial("dave", "c9", "+12025550141", "published"))); got != "" {
		t.Fatalf("after bob's call ended: %s", got)
	}
	if n := auditCount(t, c, audit.ActionDial); n != 3 {
		t.Fatalf("%d dial-outs audited, want 3 (alice, bob, dave)", n)
	}
	if n := auditCount(t, c, audit.ActionDialRefused); n != 4 {
		t.Fatalf("%d refusals audited, want 4", n)
	}
}

// Caps under concurrent dials: a cap on a scope the decision locks (a
// conversation, a user's account) is exact on every store; the
// service-wide cap is exact on SQLite (one writer) and, on PostgreSQL,
// counted without a lock (no cluster-wide serialisation), so it may be
// exceeded by the decisions running at the same moment — never missed.
func TestPolicy_CapHoldsUnderConcurrentDials(t *testing.T) {
	run := func(t *testing.T, p policy.Config, dial func(i int) DialCheck) (allowed int32) {
		c := policyController(t, noLimits(p))
		var ok, refused atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 24; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := c.checkDial(context.Background(), dial(i))
				if err == nil {
					ok.Add(1)
				} else if e, isErr := core.AsError(err); isErr && e.Code == policy.RuleTooManyCalls {
					refused.Add(1)
				} else {
					t.Errorf("dial %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if ok.Load()+refused.Load() != 24 {
			t.Fatalf("%d allowed, %d refused of 24", ok.Load(), refused.Load())
		}
		return ok.Load()
	}
	t.Run("conversation", func(t *testing.T) {
		n := run(t, policy.Config{MaxLiveLegsPerConversation: 5}, func(i int) DialCheck {
			return userDial(fmt.Sprint("u", i), "c1", "+12025550101", "published")
		})
		if n != 5 {
			t.Fatalf("%d allowed into one conversation; want exactly 5 (its cap)", n)
		}
	})
	t.Run("account", func(t *testing.T) {
		n := run(t, policy.Config{MaxLiveLegsPerUser: 5}, func(i int) DialCheck {
			return userDial("alice", fmt.Sprint("c", i), "+12025550101", "published")
		})
		if n != 5 {
			t.Fatalf("%d calls allowed to one user; want exactly 5 (their cap)", n)
		}
	})
	t.Run("service", func(t *testing.T) {
		n := run(t, policy.Config{MaxLiveLegs: 5}, func(i int) DialCheck {
			return userDial(fmt.Sprint("u", i), fmt.Sprint("c", i), "+12025550101", "published")
		})
		if os.Getenv("CONVOICE_TEST_POSTGRES") == "" && n != 5 {
			t.Fatalf("%d allowed on SQLite; want exactly 5 (the cap)", n)
		}
		if n < 5 {
			t.Fatalf("%d allowed; the cap is 5 and nothing else was up", n)
		}
		t.Logf("%d allowed of a service-wide cap of 5 (24 concurrent decisions)", n)
	})
}

// The fuzz target runs Normalize and then checkDial, as a dial request
// does, and checkDial alone on the raw input (a caller that forgot to
// normalise): neither may panic, and whatever checkDial allows is a plain
// number of an allowed country and type, or a configured extension, that
// makes an ordinary dial string.
func FuzzPolicy_NormalizeThenCheckDialAllowsOnlySafeNumbers(f *testing.F) {
	for _, s := range []string{"+12025550101", "(202) 555-0101", "1001", "+19005550123", "+18765551234", "+1&x", "+１２", "@/",
		"+442079460958", "+881612345678", "10 01", "", "+" + strings.Repeat("9", 20), "9001"} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(3))
	}
	c := policyController(f, noLimits(policy.Config{DenyPrefixes: []string{"9"}}))
	routes, _ := pbx.ParseRoutes(pbx.DefaultRoutes)
	plain := regexp.MustCompile(`^(\+[0-9]{2,15}|[0-9]{4})$`)
	sources := []string{"published", "new_number", "redirect", "guest", "", "something"}
	f.Fuzz(func(t *testing.T, in string, src uint8) {
		source := sources[int(src)%len(sources)]
		d := userDial("u", "c", "", source)
		if source == "guest" {
			d = guestDial("g", "c", "")
		}
		check := func(number string) {
			d.Number = number
			err := c.checkDial(context.Background(), d)
			if err != nil {
				if e, ok := core.AsError(err); !ok || (e.Kind != core.KindForbidden && e.Kind != core.KindRateLimited) {
					t.Fatalf("checkDial(%q): %v, want a refusal", number, err)
				}
				return
			}
			if !plain.MatchString(number) {
				t.Fatalf("checkDial allowed %q: not a plain number", number)
			}
			if ds, err := routes.DialString(number); err != nil || ds != "PJSIP/"+number+"@trunk" {
				t.Fatalf("allowed %q makes dial string %q, %v", number, ds, err)
			}
			if !strings.HasPrefix(number, "+") {
				if policy.IsGuestSource(source) || strings.HasPrefix(number, "9") {
					t.Fatalf("%s allowed extension %q", source, number)
				}
				return
			}
			num, err := phonenumbers.Parse(number, "")
			if err != nil || phonenumbers.GetRegionCodeForNumber(num) != "US" {
				t.Fatalf("allowed %q outside the US", number)
			}
			typ := phonenumbers.GetNumberType(num)
			for _, b := range policy.DefaultBlockedTypes {
				if typ == b {
					t.Fatalf("allowed %q of blocked type %s", number, policy.NumberTypeName(typ))
				}
			}
			if policy.IsGuestSource(source) && typ != phonenumbers.FIXED_LINE && typ != phonenumbers.MOBILE && typ != phonenumbers.FIXED_LINE_OR_MOBILE {
				t.Fatalf("guest allowed %q of type %s", number, policy.NumberTypeName(typ))
			}
		}
		check(in)
		if n, err := c.numbers.Normalize("number", in); err == nil {
			check(n)
		}
	})
}
