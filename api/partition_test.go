package api_test

import (
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// The bounds of this test keep the ratio of the real ones: the old
// NodeLostAfter default (30 s) is oldBound here, the long bound (10 min)
// twenty times it.
const (
	oldBound   = 1500 * time.Millisecond
	longBound  = 20 * oldBound
	partitionT = 2 * oldBound
)

// Given a conference with calls up, when the control link to the PBX is
// partitioned (the PBX answers nothing, its calls go on) for longer than
// the old NodeLostAfter, then during the partition the legs keep their
// last known state, the conference says call control is unavailable (with
// the node and why) and new calls answer 503 pbx_unavailable; once the
// link is back every call still up on the PBX is still connected in
// convoice and the one that hung up meanwhile has ended; control is
// available again. When the PBX then really goes (a crash), the legs end
// with "pbx restarted".
func TestPartition_GivenCallsUp_WhenTheControlLinkIsCutAndHealed_ThenNoHealthyCallEnds(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) { partitionThenHeal(t, kind) })
}

func partitionThenHeal(t *testing.T, kind string) {
	env, logs := reliabEnv(t, kind, func(o *apitest.Options) {
		o.NodeLostAfter = longBound
		o.PingInterval, o.RequestTimeout = 100*time.Millisecond, 500*time.Millisecond
	})
	a, b, c := env.AddUser("Ann"), env.AddUser("Bob"), env.AddUser("Cid")
	conv := newConversation(t, env, a, b, c)
	legA := joinNumber(t, env, conv, a, "+12025551401")
	legB := joinNumber(t, env, conv, b, "+12025551402")
	legC := joinNumber(t, env, conv, c, "+12025551403")
	for _, id := range []string{legA, legB, legC} {
		waitLeg(t, env, id, "connected", 10*time.Second, inState(storage.LegConnected))
	}
	if au := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", a.Token, nil).Map(t); au["control"] != "available" || au["node"] != "emulator" {
		t.Fatalf("before the partition: control %v, node %v", au["control"], au["node"])
	}

	env.PBXUnresponsive(true)
	healed := false
	defer func() {
		if !healed {
			env.PBXUnresponsive(false)
		}
	}()
	cut := time.Now()
	env.WaitFor("the node not ready", 5*time.Second, func() bool { return !env.Ctl.Ready() })
	// Cid hangs up while convoice cannot hear it.
	if err := env.PBXFarEndHangup(legC); err != nil {
		t.Fatal(err)
	}
	au := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", a.Token, nil).Map(t)
	if au["control"] != "unavailable" || au["control_reason"] == nil || au["node"] != "emulator" {
		t.Fatalf("during the partition: control %v (%v), node %v; want unavailable with a reason", au["control"], au["control_reason"], au["node"])
	}
	d := env.Do("POST", "/api/v1/conversations/"+newConversation(t, env, a)+"/audio", a.Token, map[string]any{"number": "+12025551404"})
	if d.Status != 503 || d.Map(t)["error"].(map[string]any)["code"] != "pbx_unavailable" {
		t.Fatalf("a dial during the partition: %d %s; want 503 pbx_unavailable", d.Status, d.Body)
	}
	time.Sleep(time.Until(cut.Add(partitionT)))
	for _, id := range []string{legA, legB, legC} {
		if l := storeLeg(t, env, id); l.State != storage.LegConnected {
			t.Fatalf("leg %s went %s (%q) during the partition; want its last known state, connected", id, l.State, l.EndReason)
		}
	}

	env.PBXUnresponsive(false)
	healed = true
	env.WaitFor("ready again", 10*time.Second, func() bool { return env.Ctl.Ready() })
	l := waitLeg(t, env, legC, "ended after the heal", 10*time.Second, func(l *storage.Leg) bool { return !storage.LegLive(l.State) })
	if l.State != storage.LegEnded {
		t.Fatalf("the call that hung up during the partition ended %s (%q)", l.State, l.EndReason)
	}
	waitConverged(t, env, 10*time.Second)
	onPBX := env.PBXLegs()
	for _, id := range []string{legA, legB} {
		if l := storeLeg(t, env, id); l.State != storage.LegConnected {
			t.Fatalf("after the heal leg %s is %s (%q); want connected", id, l.State, l.EndReason)
		}
		if p, ok := onPBX[id]; !ok || p.Room == "" {
			t.Fatalf("after the heal leg %s is not in the PBX's conference: %+v", id, p)
		}
	}
	env.WaitFor("control available again", 5*time.Second, func() bool {
		return env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", a.Token, nil).Map(t)["control"] == "available"
	})

	// The PBX really goes: restart detected, its calls end at once.
	env.PBXRestart(false)
	for _, id := range []string{legA, legB} {
		l := waitLeg(t, env, id, "ended by the crash", 10*time.Second, func(l *storage.Leg) bool { return !storage.LegLive(l.State) })
		if l.EndReason != "pbx restarted" {
			t.Fatalf("leg %s ended %s with reason %q, want \"pbx restarted\"", id, l.State, l.EndReason)
		}
	}
	noLockErrors(t, logs)
}
