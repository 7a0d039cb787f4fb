package api_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/storage"
)

// These tests prove issue 7's acceptance list through the HTTP API, against
// both PBX emulators: link drops, half-open links, PBX restarts, our own
// restarts, concurrent dial requests, stalled PBX requests, the ring-timeout
// watchdog and draining. After every fault they check that the store and the
// PBX agree exactly (storeVsPBX).

// reliabRoutes sends numbers ending in 9 to the slow-ringing carrier
// (emuphone's "@trunk-slow": it rings Timing.SlowRing before answering) and
// everything else to the ordinary one.
func reliabRoutes(kind string) string {
	if kind == "freeswitch" {
		return `9$=sofia/gateway/pbx/{e164}@trunk-slow;.*=sofia/gateway/pbx/{e164}`
	}
	return `9$=PJSIP/{e164}@trunk-slow;.*=PJSIP/{e164}@trunk`
}

// reliabEnv starts convoice on kind with fast link supervision (not ready
// after 2×300 ms without answers) and a short PBX request timeout, and
// collects its logs.
func reliabEnv(t *testing.T, kind string, mod func(*apitest.Options)) (*apitest.Env, *apitest.LogBuffer) {
	t.Helper()
	logs := &apitest.LogBuffer{}
	opts := apitest.Options{PBX: kind, Routes: reliabRoutes(kind), Logs: logs,
		Timing:       emuphone.Timing{Ring: 50 * time.Millisecond, Hold: 500 * time.Millisecond, SlowRing: 1500 * time.Millisecond},
		PingInterval: 300 * time.Millisecond, RequestTimeout: time.Second}
	if mod != nil {
		mod(&opts)
	}
	env := apitest.Start(t, opts)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("convoice logs:\n%s", tail(logs.String(), 150))
		}
	})
	return env, logs
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// newConversation makes a conversation of owner with others in it.
func newConversation(t *testing.T, env *apitest.Env, owner apitest.User, others ...apitest.User) string {
	t.Helper()
	ids := []string{}
	for _, u := range others {
		ids = append(ids, u.ID)
	}
	return env.Must(201, "POST", "/api/v1/conversations", owner.Token,
		map[string]any{"kind": "im", "participants": ids}).Map(t)["id"].(string)
}

// joinNumber has u join conv's audio on number; it returns the leg id.
func joinNumber(t *testing.T, env *apitest.Env, conv string, u apitest.User, number string) string {
	t.Helper()
	r := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", u.Token, map[string]any{"number": number})
	return r.Map(t)["leg"].(map[string]any)["id"].(string)
}

// storeLeg reads one leg from the store.
func storeLeg(t *testing.T, env *apitest.Env, id string) *storage.Leg {
	t.Helper()
	l, err := env.Store.GetLeg(context.Background(), id)
	if err != nil {
		t.Fatalf("leg %s: %v", id, err)
	}
	return l
}

// waitLeg waits until leg id satisfies cond in the store.
func waitLeg(t *testing.T, env *apitest.Env, id, what string, d time.Duration, cond func(*storage.Leg) bool) *storage.Leg {
	t.Helper()
	var l *storage.Leg
	env.WaitFor("leg "+id+" "+what, d, func() bool {
		l = storeLeg(t, env, id)
		return cond(l)
	})
	return l
}

func inState(states ...string) func(*storage.Leg) bool {
	return func(l *storage.Leg) bool { return slices.Contains(states, l.State) }
}

// storeVsPBX lists every difference between what the store holds live and
// what the emulated PBX holds: a live leg whose call is missing or in
// another state (connected = answered and in its conference's room;
// confirming = answered and in no room; dialing/ringing = not answered), a call on the PBX that is no live leg,
// a room that is no active conference. Empty means they agree exactly.
func storeVsPBX(t *testing.T, env *apitest.Env) []string {
	t.Helper()
	ctx := context.Background()
	live, err := env.Store.AllLiveLegs(ctx, "emulator")
	if err != nil {
		t.Fatalf("live legs: %v", err)
	}
	active, err := env.Store.ActiveConferences(ctx)
	if err != nil {
		t.Fatalf("active conferences: %v", err)
	}
	calls := env.PBXLegs()
	var diffs []string
	for _, l := range live {
		c, ok := calls[l.ID]
		delete(calls, l.ID)
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("leg %s is %s in the store but not on the PBX", l.ID, l.State))
		case l.State == storage.LegConnected && (!c.Answered || c.Room != l.ConferenceID):
			diffs = append(diffs, fmt.Sprintf("leg %s is connected in the store but on the PBX answered=%v room=%q (want %q)",
				l.ID, c.Answered, c.Room, l.ConferenceID))
		case l.State == storage.LegConfirming && (!c.Answered || c.Room != ""):
			diffs = append(diffs, fmt.Sprintf("leg %s is confirming in the store but on the PBX answered=%v room=%q (want answered, in no room)",
				l.ID, c.Answered, c.Room))
		case l.State != storage.LegConnected && l.State != storage.LegConfirming && (c.Answered || c.Room != ""):
			diffs = append(diffs, fmt.Sprintf("leg %s is %s in the store but on the PBX answered=%v room=%q", l.ID, l.State, c.Answered, c.Room))
		}
	}
	for id, c := range calls {
		diffs = append(diffs, fmt.Sprintf("call %s on the PBX (answered=%v room=%q) is no live leg", id, c.Answered, c.Room))
	}
	isActive := map[string]bool{}
	for _, c := range active {
		isActive[c.ID] = true
	}
	for _, room := range env.PBXRoomIDs() {
		if !isActive[room] {
			diffs = append(diffs, fmt.Sprintf("room %s on the PBX is no active conference", room))
		}
	}
	return diffs
}

// waitConverged waits until the store and the PBX agree exactly.
func waitConverged(t *testing.T, env *apitest.Env, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		diffs := storeVsPBX(t, env)
		if len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store and PBX still differ after %s:\n  %s", d, strings.Join(diffs, "\n  "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// noLockErrors fails when the logs show SQLite lock contention.
func noLockErrors(t *testing.T, logs *apitest.LogBuffer) {
	t.Helper()
	for _, bad := range []string{"database is locked", "SQLITE_BUSY", "database table is locked"} {
		if strings.Contains(logs.String(), bad) {
			t.Fatalf("the logs say %q", bad)
		}
	}
}

// readyz answers GET /readyz: status, whether a PBX node is ready, first
// node's detail. The replica itself stays ready (200) whatever the PBX does.
func readyz(t *testing.T, env *apitest.Env) (int, bool, string) {
	t.Helper()
	r := env.Do("GET", "/readyz", "", nil)
	var body struct {
		Ready    bool `json:"ready"`
		PBXReady bool `json:"pbx_ready"`
		PBX      []struct {
			Status struct {
				Ready  bool   `json:"ready"`
				Detail string `json:"detail"`
			} `json:"status"`
		} `json:"pbx"`
	}
	r.JSON(t, &body)
	detail := ""
	if len(body.PBX) > 0 {
		detail = body.PBX[0].Status.Detail
		if body.PBX[0].Status.Ready != body.PBXReady {
			t.Fatalf("readyz: pbx_ready=%v but the node says %v", body.PBXReady, body.PBX[0].Status.Ready)
		}
	}
	if r.Status != 200 || !body.Ready {
		t.Fatalf("readyz: the replica itself should stay ready whatever the PBX does: %d %s", r.Status, r.Body)
	}
	return r.Status, body.PBXReady, detail
}

// Given legs connected and ringing, when the event link is cut cleanly
// (ARI websocket closed without a close frame as in recording m; ESL socket
// closed) and a far end hangs up in the gap, then after the reconnect the
// store matches the PBX exactly: the leg that hung up in the gap is ended,
// the leg that answered after the cut is connected and in the room, the one
// still ringing rings in both.
func TestReliability_GivenLinkDropWhileLegsRing_WhenReconnected_ThenStoreMatchesPBX(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, logs := reliabEnv(t, kind, nil)
		a := env.AddUser("Ann")
		b, c, d := env.AddUser("Bob"), env.AddUser("Cid"), env.AddUser("Dee")
		conv := newConversation(t, env, a, b, c, d)
		legA := joinNumber(t, env, conv, a, "+12025551001")
		legB := joinNumber(t, env, conv, b, "+12025551002")
		waitLeg(t, env, legA, "connected", 10*time.Second, inState(storage.LegConnected))
		waitLeg(t, env, legB, "connected", 10*time.Second, inState(storage.LegConnected))
		legC := joinNumber(t, env, conv, c, "+12025551009") // rings 1.5 s, then answers
		legD := joinNumber(t, env, conv, d, "+12025550480") // rings until the ring timeout
		waitLeg(t, env, legC, "ringing", 10*time.Second, inState(storage.LegRinging))
		waitLeg(t, env, legD, "ringing", 10*time.Second, inState(storage.LegRinging))
		reconnects := env.Driver.Status().Reconnects

		env.PBXDropLink()
		if err := env.PBXFarEndHangup(legA); err != nil {
			t.Fatal(err)
		}

		env.WaitFor("a reconnect", 10*time.Second, func() bool {
			st := env.Driver.Status()
			return st.Ready && st.Reconnects > reconnects
		})
		if l := waitLeg(t, env, legC, "connected", 10*time.Second, inState(storage.LegConnected)); l.Cause != 0 {
			t.Fatalf("leg C %+v", l)
		}
		waitLeg(t, env, legA, "ended", 10*time.Second, inState(storage.LegEnded))
		waitConverged(t, env, 10*time.Second)
		if l := storeLeg(t, env, legB); l.State != storage.LegConnected {
			t.Fatalf("leg B did not stay connected across the drop: %+v", l)
		}
		if l := storeLeg(t, env, legD); l.State != storage.LegRinging {
			t.Fatalf("leg D (still ringing on the PBX) is %s", l.State)
		}
		if got := env.PBXLegs()[legC]; got.Room == "" {
			t.Fatalf("leg C is not in the room on the PBX: %+v", got)
		}
		noLockErrors(t, logs)
	})
}

// Given legs connected and ringing, when the PBX stops answering without
// closing anything (half-open) for several seconds, while a connected far
// end hangs up and a ringing leg answers, then:
//   - convoice notices within the stated bound (2×PingInterval; asserted
//     generously): /readyz says pbx_ready=false (and stays 200: the
//     replica still serves chat);
//   - a dial request answers 503 pbx_unavailable in under a second and
//     writes nothing (no conference, no leg, no originate);
//   - once the PBX answers again the store matches the PBX exactly, and the
//     leg that answered while we were blind is connected and in its room.
func TestReliability_GivenHalfOpenLink_ThenDetectedDialsRefusedAndAnsweredWhileBlindJoined(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, logs := reliabEnv(t, kind, nil)
		e, f, g, h := env.AddUser("Eve"), env.AddUser("Fay"), env.AddUser("Gus"), env.AddUser("Hal")
		conv := newConversation(t, env, e, f, g, h)
		lone := env.AddUser("Ivy")
		quiet := newConversation(t, env, lone)
		legE := joinNumber(t, env, conv, e, "+12025551101")
		legF := joinNumber(t, env, conv, f, "+12025551102")
		waitLeg(t, env, legE, "connected", 10*time.Second, inState(storage.LegConnected))
		waitLeg(t, env, legF, "connected", 10*time.Second, inState(storage.LegConnected))
		legH := joinNumber(t, env, conv, h, "+12025550480")
		legG := joinNumber(t, env, conv, g, "+12025551109") // answers 1.5 s from now: while blind
		waitLeg(t, env, legG, "ringing", 5*time.Second, inState(storage.LegRinging))
		if st, ready, _ := readyz(t, env); st != 200 || !ready {
			t.Fatalf("readyz before the fault: %d ready=%v", st, ready)
		}

		start := time.Now()
		env.PBXUnresponsive(true)
		unresponsive := true
		defer func() {
			if unresponsive {
				env.PBXUnresponsive(false)
			}
		}()
		if err := env.PBXFarEndHangup(legE); err != nil {
			t.Fatal(err)
		}

		// Detected within the bound.
		var detail string
		env.WaitFor("readyz to say the PBX is not ready", 10*time.Second, func() bool {
			_, ready, d := readyz(t, env)
			detail = d
			return !ready
		})
		t.Logf("%s: not ready %v after the PBX stopped answering (%s)", kind, time.Since(start).Round(time.Millisecond), detail)

		// Dial requests fail fast and write nothing.
		env.PBXResetRequests()
		t0 := time.Now()
		r := env.Do("POST", "/api/v1/conversations/"+quiet+"/audio", lone.Token, map[string]any{"number": "+12025551201"})
		if took := time.Since(t0); took > time.Second {
			t.Errorf("dial while the PBX is half-open took %v", took)
		}
		if r.Status != 503 || r.ErrorCode() != "pbx_unavailable" {
			t.Fatalf("dial while half-open: %d %s", r.Status, r.Body)
		}
		if r := env.Do("GET", "/api/v1/conversations/"+quiet+"/audio?last=true", lone.Token, nil); r.Status != 404 || r.ErrorCode() != "no_audio" {
			t.Fatalf("a refused dial left audio behind: %d %s", r.Status, r.Body)
		}
		// A join into the running conference is refused too, without a leg.
		before := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", e.Token, nil).Map(t)["legs"].([]any)
		if r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", e.Token, map[string]any{"number": "+12025551103"}); r.Status != 503 {
			t.Fatalf("join while half-open: %d %s", r.Status, r.Body)
		}
		after := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", e.Token, nil).Map(t)["legs"].([]any)
		if len(after) != len(before) {
			t.Fatalf("a refused join wrote a leg: %d legs, were %d", len(after), len(before))
		}
		if n := env.PBXWrites(); n != 0 {
			t.Fatalf("refused dials reached the PBX: %d requests", n)
		}

		// The ringing leg answers while we are blind; the fault lasts
		// several seconds.
		env.WaitFor("leg G answered on the PBX", 10*time.Second, func() bool { return env.PBXLegs()[legG].Answered })
		if l := storeLeg(t, env, legG); l.State == storage.LegConnected {
			t.Fatalf("leg G reported connected while the link was half-open")
		}
		if hold := 3500*time.Millisecond - time.Since(start); hold > 0 {
			time.Sleep(hold) // the fault's duration, not an assertion
		}
		env.PBXUnresponsive(false)
		unresponsive = false

		waitLeg(t, env, legG, "connected after recovery", 15*time.Second, inState(storage.LegConnected))
		waitLeg(t, env, legE, "ended after recovery", 15*time.Second, inState(storage.LegEnded))
		env.WaitFor("ready again", 15*time.Second, func() bool { st, ready, _ := readyz(t, env); return st == 200 && ready })
		waitConverged(t, env, 10*time.Second)
		if got := env.PBXLegs()[legG]; !got.Answered || got.Room == "" {
			t.Fatalf("leg G on the PBX: %+v", got)
		}
		if l := storeLeg(t, env, legF); l.State != storage.LegConnected {
			t.Fatalf("leg F did not stay connected: %+v", l)
		}
		if l := storeLeg(t, env, legH); l.State != storage.LegRinging {
			t.Fatalf("leg H (still ringing) is %s", l.State)
		}
		// Dialing works again.
		legI := joinNumber(t, env, quiet, lone, "+12025551201")
		waitLeg(t, env, legI, "connected", 10*time.Second, inState(storage.LegConnected))
		noLockErrors(t, logs)
	})
}

// Given a conference with legs connected and ringing, when the PBX restarts
// (gracefully: every call hung up with its events, then the connection
// ends; or crashes: the connection just ends) and comes back empty, then
// every leg ends with the reason "pbx restarted", the conference ends, the
// application is registered again (a new join rings and connects) and the
// store matches the (empty) PBX.
func TestReliability_GivenLiveConference_WhenPBXRestartsOrCrashes_ThenLegsEndPBXRestartedAndJoinWorksAgain(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, logs := reliabEnv(t, kind, nil)
		a, b, c := env.AddUser("Ann"), env.AddUser("Bob"), env.AddUser("Cid")
		conv := newConversation(t, env, a, b, c)
		for i, graceful := range []bool{true, false} {
			what := map[bool]string{true: "restart", false: "crash"}[graceful]
			base := 1300 + 10*i
			legA := joinNumber(t, env, conv, a, fmt.Sprintf("+1202555%04d", base+1))
			legB := joinNumber(t, env, conv, b, fmt.Sprintf("+1202555%04d", base+2))
			legC := joinNumber(t, env, conv, c, "+12025550480") // still ringing at the restart
			waitLeg(t, env, legA, "connected", 10*time.Second, inState(storage.LegConnected))
			waitLeg(t, env, legB, "connected", 10*time.Second, inState(storage.LegConnected))
			waitLeg(t, env, legC, "ringing", 10*time.Second, inState(storage.LegRinging))
			confID := storeLeg(t, env, legA).ConferenceID

			env.PBXRestart(graceful)

			for _, id := range []string{legA, legB, legC} {
				l := waitLeg(t, env, id, "ended by the "+what, 15*time.Second, func(l *storage.Leg) bool { return !storage.LegLive(l.State) })
				if l.EndReason != "pbx restarted" {
					t.Errorf("%s: leg %s ended %s cause %d %q with reason %q, want \"pbx restarted\"", what, id, l.State, l.Cause, l.CauseText, l.EndReason)
				}
			}
			if t.Failed() {
				t.FailNow()
			}
			if st := storeLeg(t, env, legA).State; st != storage.LegEnded {
				t.Fatalf("%s: a connected leg ended %s, want ended", what, st)
			}
			conf := waitAudio(t, env, conv, a.Token, "conference ended", func(c map[string]any) bool {
				return c["id"] == confID && c["state"] == "ended"
			})
			if conf["end_reason"] == "" {
				t.Errorf("%s: conference ended without a reason", what)
			}
			env.WaitFor("ready after the "+what, 15*time.Second, func() bool { return env.Ctl.Ready() })
			waitConverged(t, env, 10*time.Second)

			// The application is registered again: a new join rings and
			// connects (on Asterisk StasisStart reaches us only if it is).
			legN := joinNumber(t, env, conv, a, fmt.Sprintf("+1202555%04d", base+3))
			waitLeg(t, env, legN, "connected after the "+what, 10*time.Second, inState(storage.LegConnected))
			waitConverged(t, env, 10*time.Second)
			env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", a.Token, nil)
			waitConverged(t, env, 10*time.Second)
			if n := len(env.PBXLegs()); n != 0 {
				t.Fatalf("%d calls left on the PBX", n)
			}
		}
		noLockErrors(t, logs)
	})
}

// Given a live conference, when convoice stops abruptly and the PBX goes on
// alone (a far end hangs up, a ringing phone answers), then after convoice
// starts again on the same database: the legs still up on the PBX are still
// connected and were never re-dialed (same originate count; an
// Idempotency-Key repeat returns the first answer without ringing), the leg
// that hung up meanwhile is ended, and the store matches the PBX exactly (no
// orphan call or room).
func TestReliability_GivenLiveConference_WhenConvoiceRestarts_ThenLegsStayConnectedNoRedialNoOrphan(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, logs := reliabEnv(t, kind, nil)
		a, b, c, d := env.AddUser("Ann"), env.AddUser("Bob"), env.AddUser("Cid"), env.AddUser("Dee")
		conv := newConversation(t, env, a, b, c, d)
		env.PBXResetRequests()
		joinA := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", a.Token,
			map[string]any{"number": "+12025551401"}, "Idempotency-Key", "ann-join")
		legA := joinA.Map(t)["leg"].(map[string]any)["id"].(string)
		legB := joinNumber(t, env, conv, b, "+12025551402")
		waitLeg(t, env, legA, "connected", 10*time.Second, inState(storage.LegConnected))
		waitLeg(t, env, legB, "connected", 10*time.Second, inState(storage.LegConnected))
		legD := joinNumber(t, env, conv, d, "+12025550480") // rings through it all
		legC := joinNumber(t, env, conv, c, "+12025551409") // answers 1.5 s from now, while convoice is down
		waitLeg(t, env, legC, "ringing", 10*time.Second, inState(storage.LegRinging))
		waitLeg(t, env, legD, "ringing", 10*time.Second, inState(storage.LegRinging))
		originates := env.PBXOriginates()
		if originates != 4 {
			t.Fatalf("%d originates for 4 joins", originates)
		}

		env.Stop()
		if err := env.PBXFarEndHangup(legB); err != nil {
			t.Fatal(err)
		}
		// Let leg C's phone answer while nobody listens. Asterisk hangs an
		// answered call up when its Stasis app has no websocket (recording
		// m); FreeSWITCH puts it in the room.
		env.WaitFor("leg C answered or gone on the PBX", 10*time.Second, func() bool {
			got, ok := env.PBXLegs()[legC]
			return !ok || got.Answered
		})
		env.Resume()

		waitLeg(t, env, legB, "ended", 10*time.Second, inState(storage.LegEnded))
		waitConverged(t, env, 10*time.Second)
		if l := storeLeg(t, env, legA); l.State != storage.LegConnected || l.EndedAt != nil {
			t.Fatalf("leg A did not stay connected across the restart: %+v", l)
		}
		if l := storeLeg(t, env, legD); l.State != storage.LegRinging {
			t.Fatalf("leg D is %s, still ringing on the PBX", l.State)
		}
		wantC := storage.LegConnected
		if kind == "asterisk" {
			wantC = storage.LegFailed // answered with no app listening: hung up by Asterisk
		}
		if l := storeLeg(t, env, legC); l.State != wantC {
			t.Fatalf("leg C is %s (%q), want %s", l.State, l.EndReason, wantC)
		}
		// The same join again, with its key: the first answer, no call.
		again := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", a.Token,
			map[string]any{"number": "+12025551401"}, "Idempotency-Key", "ann-join")
		if string(again.Body) != string(joinA.Body) {
			t.Fatalf("idempotent repeat after the restart differs:\n%s\n%s", joinA.Body, again.Body)
		}
		// Without the key: refused, the call is live.
		if r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", a.Token, map[string]any{"number": "+12025551401"}); r.Status != 409 {
			t.Fatalf("second join of a live participant: %d %s", r.Status, r.Body)
		}
		if n := env.PBXOriginates(); n != originates {
			t.Fatalf("%d originates after the restart, want %d (no redial)", n, originates)
		}
		noLockErrors(t, logs)
	})
}

// Given 100 participants of one conversation, when each sends two join
// requests at once with the same Idempotency-Key (200 concurrent requests),
// then each pair gets one and the same answer, the PBX is asked for exactly
// one call per key, a third request with another key is a 409 while the
// call is live, nothing logs "database is locked", and a live event stream
// carries exactly what a replay from Last-Event-ID 0 does: same ids, types,
// data and order, no gap.
func TestReliability_Given200ConcurrentJoins_ThenOneCallPerKeyNoLockErrorsAndLiveStreamEqualsReplay(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		// The driver's own supervision and timeouts (2 s pings, 5 s
		// requests): this is load, not a fault.
		env, logs := reliabEnv(t, kind, func(o *apitest.Options) { o.PingInterval, o.RequestTimeout = 0, 0 })
		const users = 100
		us := make([]apitest.User, users)
		for i := range us {
			us[i] = env.AddUser(fmt.Sprintf("User %d", i))
		}
		conv := newConversation(t, env, us[0], us[1:]...)
		live := env.Subscribe(conv, us[0].Token, "")
		defer live.Close()
		env.PBXResetRequests()

		type answer struct {
			status int
			body   string
		}
		// Two requests per user with the same key; every tenth user also
		// sends one with another key at the same moment (a second tab).
		answers := make([][3]answer, users)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		send := func(i, j int, key string) {
			defer wg.Done()
			<-gate
			r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", us[i].Token,
				map[string]any{"number": fmt.Sprintf("+1202555%04d", 2000+i)}, "Idempotency-Key", key)
			answers[i][j] = answer{r.Status, string(r.Body)}
		}
		requests := 0
		for i := range us {
			for j := 0; j < 2; j++ {
				wg.Add(1)
				requests++
				go send(i, j, fmt.Sprintf("join-%d", i))
			}
			if i%10 == 0 {
				wg.Add(1)
				requests++
				go send(i, 2, fmt.Sprintf("tab-%d", i))
			}
		}
		close(gate)
		wg.Wait()
		t.Logf("%d concurrent join requests", requests)
		legs := map[string]bool{}
		for i, a := range answers {
			if a[0] != a[1] {
				t.Fatalf("user %d: one key, two answers:\n%d %s\n%d %s", i, a[0].status, a[0].body, a[1].status, a[1].body)
			}
			ok := []answer{}
			for j, x := range a {
				switch {
				case j == 2 && i%10 != 0:
				case x.status == 201:
					ok = append(ok, x)
				case x.status == 409 && strings.Contains(x.body, "already_in_audio"):
				default:
					t.Fatalf("user %d request %d: %d %s", i, j, x.status, x.body)
				}
			}
			calls := map[string]bool{}
			for _, x := range ok {
				calls[x.body] = true
			}
			if len(calls) != 1 {
				t.Fatalf("user %d: %d calls placed: %v", i, len(calls), a)
			}
			legs[ok[0].body] = true
		}
		if len(legs) != users {
			t.Fatalf("%d distinct calls for %d users", len(legs), users)
		}
		if n := env.PBXOriginates(); n != users {
			t.Fatalf("%d originates for %d users", n, users)
		}
		env.WaitFor("every leg connected", 30*time.Second, func() bool {
			ls, err := env.Store.AllLiveLegs(context.Background(), "emulator")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, l := range ls {
				if l.State == storage.LegConnected {
					n++
				}
			}
			return n == users
		})
		// Another key while the call is live: a conflict, not a call.
		for _, i := range []int{0, 42, 99} {
			r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", us[i].Token,
				map[string]any{"number": fmt.Sprintf("+1202555%04d", 2000+i)}, "Idempotency-Key", fmt.Sprintf("other-%d", i))
			if r.Status != 409 || r.ErrorCode() != "already_in_audio" {
				t.Fatalf("user %d, second key: %d %s", i, r.Status, r.Body)
			}
		}
		if n := env.PBXOriginates(); n != users {
			t.Fatalf("%d originates after the conflicting keys, want %d", n, users)
		}
		waitConverged(t, env, 10*time.Second)
		noLockErrors(t, logs)

		// The stream: a marker closes the comparison.
		env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", us[0].Token, map[string]any{"text": "end of burst"})
		isMarker := func(ev apitest.Event) bool {
			return ev.Type == "message.created" && ev.Data["text"] == "end of burst"
		}
		got := readUntil(t, live, isMarker)
		replay := env.Subscribe(conv, us[0].Token, "0")
		defer replay.Close()
		want := readUntil(t, replay, isMarker)
		for i, ev := range want {
			if ev.ID != fmt.Sprint(i+1) {
				t.Fatalf("replay event %d has id %s: a gap", i+1, ev.ID)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("live stream carried %d events, replay %d", len(got), len(want))
		}
		for i := range want {
			if got[i].ID != want[i].ID || got[i].Type != want[i].Type || !reflect.DeepEqual(got[i].Data, want[i].Data) {
				t.Fatalf("event %d differs:\nlive   %s %s %v\nreplay %s %s %v", i, got[i].ID, got[i].Type, got[i].Data,
					want[i].ID, want[i].Type, want[i].Data)
			}
		}
		counts := map[string]int{}
		for _, ev := range want {
			counts[ev.Type]++
		}
		// Per leg: dialing, ringing, connected (the invitations and the
		// conference come on top).
		if counts["leg.updated"] < 3*users {
			t.Fatalf("only %d leg.updated events for %d legs: %v", counts["leg.updated"], users, counts)
		}
	})
}

// readUntil reads a stream up to and including the first event matching end.
func readUntil(t *testing.T, s *apitest.Stream, end func(apitest.Event) bool) []apitest.Event {
	t.Helper()
	var out []apitest.Event
	for {
		ev := s.Next(t, 20*time.Second, nil)
		out = append(out, ev)
		if end(ev) {
			return out
		}
	}
}

// Given a live conference, when the PBX stops answering (every request
// hangs), then every API call that needs the PBX returns within the PBX
// request timeout (1 s here) plus a small margin instead of hanging: mute
// and a new join answer 503 pbx_unavailable, ending the audio answers 204
// (the PBX side is left to the resync). Once the PBX answers again, the
// resync finishes what could not be done: the ended conference's calls and
// room are gone and the store matches the PBX exactly.
func TestReliability_GivenStalledPBX_ThenEveryPBXCallTimesOutAndResyncFinishesTheWork(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, logs := reliabEnv(t, kind, func(o *apitest.Options) { o.PingInterval = 2 * time.Second })
		a, b, c := env.AddUser("Ann"), env.AddUser("Bob"), env.AddUser("Cid")
		conv := newConversation(t, env, a, b)
		other := newConversation(t, env, c)
		legA := joinNumber(t, env, conv, a, "+12025551601")
		legB := joinNumber(t, env, conv, b, "+12025551602")
		waitLeg(t, env, legA, "connected", 10*time.Second, inState(storage.LegConnected))
		waitLeg(t, env, legB, "connected", 10*time.Second, inState(storage.LegConnected))

		env.PBXUnresponsive(true)
		unresponsive := true
		defer func() {
			if unresponsive {
				env.PBXUnresponsive(false)
			}
		}()
		// RequestTimeout is 1 s; a failed join makes two PBX requests in a
		// row (create the room, then remove it again), hence 2 s plus a
		// margin for a loaded machine.
		const bound = 3 * time.Second
		type call struct {
			name         string
			method, path string
			token        string
			body         any
			status       int
			code         string
			got          apitest.Response
			took         time.Duration
		}
		calls := []*call{
			{name: "mute", method: "POST", path: "/api/v1/legs/" + legB + "/mute", token: a.Token, status: 503, code: "pbx_unavailable"},
			{name: "join (new conference)", method: "POST", path: "/api/v1/conversations/" + other + "/audio", token: c.Token,
				body: map[string]any{"number": "+12025551603"}, status: 503, code: "pbx_unavailable"},
			{name: "end audio", method: "DELETE", path: "/api/v1/conversations/" + conv + "/audio", token: a.Token, status: 204},
		}
		var wg sync.WaitGroup
		for _, cl := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				cl.got = env.Do(cl.method, cl.path, cl.token, cl.body)
				cl.took = time.Since(t0)
			}()
		}
		wg.Wait()
		for _, cl := range calls {
			t.Logf("%s: %d in %v", cl.name, cl.got.Status, cl.took.Round(time.Millisecond))
			if cl.took > bound {
				t.Errorf("%s took %v with the PBX stalled (bound %v)", cl.name, cl.took, bound)
			}
			if cl.got.Status != cl.status || cl.got.ErrorCode() != cl.code {
				t.Errorf("%s: %d %s, want %d %s", cl.name, cl.got.Status, cl.got.Body, cl.status, cl.code)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		env.PBXUnresponsive(false)
		unresponsive = false

		for _, id := range []string{legA, legB} {
			waitLeg(t, env, id, "ended after the PBX is back", 15*time.Second, inState(storage.LegEnded))
		}
		waitConverged(t, env, 15*time.Second)
		if n := len(env.PBXLegs()); n != 0 {
			t.Fatalf("%d calls left on the PBX", n)
		}
		// A dial that failed for the timeout is not ringing anywhere.
		if r := env.Do("GET", "/api/v1/conversations/"+other+"/audio?last=true", c.Token, nil); r.Status == 200 {
			for _, l := range r.Map(t)["legs"].([]any) {
				if st := l.(map[string]any)["state"]; st != "failed" {
					t.Fatalf("the timed-out join left a %s leg", st)
				}
			}
		}
		noLockErrors(t, logs)
	})
}

// Given a leg ringing, when the PBX stops answering (a partition of the
// control link) for longer than RingTimeout+RingGrace, then the leg keeps
// its last known state (ringing: convoice cannot know whether it was
// answered meanwhile, and a call answered behind the partition must not be
// ended) and the ring watchdog leaves it alone; once the link is back the
// leg converges to what the PBX did: it rang out, no_answer with cause 19.
func TestReliability_GivenRingingLegAndUnreachablePBX_ThenItKeepsItsStateUntilTheLinkIsBackAndEndsNoAnswer(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, logs := reliabEnv(t, kind, func(o *apitest.Options) {
			o.RingTimeout, o.RingGrace = 2*time.Second, time.Second
		})
		u := env.AddUser("Ann")
		conv := newConversation(t, env, u)
		leg := joinNumber(t, env, conv, u, "+12025550480") // never answers
		waitLeg(t, env, leg, "ringing", 5*time.Second, inState(storage.LegRinging))
		created := storeLeg(t, env, leg).CreatedAt

		env.PBXUnresponsive(true)
		unresponsive := true
		defer func() {
			if unresponsive {
				env.PBXUnresponsive(false)
			}
		}()
		time.Sleep(time.Until(created.Add(4500 * time.Millisecond))) // RingTimeout+RingGrace, and more
		if l := storeLeg(t, env, leg); l.State != storage.LegRinging {
			t.Fatalf("during the partition the leg went %s (%q); want its last known state, ringing", l.State, l.EndReason)
		}
		if strings.Contains(string(env.Must(200, "GET", "/metrics", "", nil).Body), "convoice_watchdog_leg_ends_total 1") {
			t.Fatalf("the watchdog ended a leg of an unreachable node")
		}
		env.PBXUnresponsive(false)
		unresponsive = false
		l := waitLeg(t, env, leg, "ended once the link is back", 15*time.Second, func(l *storage.Leg) bool { return !storage.LegLive(l.State) })
		if l.State != storage.LegNoAnswer || l.Cause != 19 {
			t.Fatalf("leg ended %s cause %d reason %q; want no_answer 19, as the PBX ended it", l.State, l.Cause, l.EndReason)
		}
		waitAudio(t, env, conv, u.Token, "conference ended", func(c map[string]any) bool { return c["state"] == "ended" })
		waitConverged(t, env, 15*time.Second)
		noLockErrors(t, logs)
	})
}

// Given a live call and a dial request in flight (the PBX is slow to take
// it), when convoice drains (what SIGTERM does before it stops), then new
// dial requests are refused at once with 503, reads still work, the drain
// waits for the request in flight to finish, and the live call stays up on
// the PBX and connected in the store. (cmd/convoice's SIGTERM test covers
// the process: clean exit, calls kept across the restart.)
func TestReliability_GivenDialInFlight_WhenDraining_ThenNewDialsRefusedInFlightFinishesCallsStayUp(t *testing.T) {
	env, logs := reliabEnv(t, "asterisk", func(o *apitest.Options) {
		o.RequestTimeout, o.PingInterval = 3*time.Second, 2*time.Second
	})
	a, c, d := env.AddUser("Ann"), env.AddUser("Cid"), env.AddUser("Dee")
	conv := newConversation(t, env, a)
	convC, convD := newConversation(t, env, c), newConversation(t, env, d)
	legA := joinNumber(t, env, conv, a, "+12025551701")
	waitLeg(t, env, legA, "connected", 10*time.Second, inState(storage.LegConnected))

	env.PBXUnresponsive(true)
	unresponsive := true
	defer func() {
		if unresponsive {
			env.PBXUnresponsive(false)
		}
	}()
	env.PBXResetRequests()
	inflight := make(chan apitest.Response, 1)
	go func() {
		inflight <- env.Do("POST", "/api/v1/conversations/"+convC+"/audio", c.Token, map[string]any{"number": "+12025551702"})
	}()
	env.WaitFor("the dial to reach the PBX", 5*time.Second, func() bool {
		for _, r := range env.Emu.Requests() {
			if r.Method == "POST" && strings.HasPrefix(r.Path, "/ari/bridges") {
				return true
			}
		}
		return false
	})

	drained := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		env.Ctl.Drain(ctx)
		close(drained)
	}()
	var refused apitest.Response
	env.WaitFor("new dials refused", 5*time.Second, func() bool {
		refused = env.Do("POST", "/api/v1/conversations/"+convD+"/audio", d.Token, map[string]any{"number": "+12025551703"})
		return refused.Status == 503
	})
	if refused.ErrorCode() != "pbx_unavailable" || !strings.Contains(string(refused.Body), "shutting down") {
		t.Fatalf("dial while draining: %d %s", refused.Status, refused.Body)
	}
	select {
	case <-drained:
		t.Fatalf("the drain ended while a dial request was in flight")
	case r := <-inflight:
		t.Fatalf("the dial in flight answered before the PBX did: %d %s", r.Status, r.Body)
	default:
	}
	env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", a.Token, nil)

	env.PBXUnresponsive(false)
	unresponsive = false
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatalf("the drain did not end after the dial in flight finished")
	}
	select {
	case r := <-inflight:
		if r.Status != 201 && r.Status != 503 {
			t.Fatalf("the dial in flight: %d %s", r.Status, r.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the dial in flight never answered")
	}
	if got := env.PBXLegs()[legA]; !got.Answered || got.Room == "" {
		t.Fatalf("the live call did not stay up through the drain: %+v", got)
	}
	if l := storeLeg(t, env, legA); l.State != storage.LegConnected {
		t.Fatalf("the live call is %s after the drain", l.State)
	}
	noLockErrors(t, logs)
}
