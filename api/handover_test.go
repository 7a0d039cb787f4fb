package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// Given two replicas on PostgreSQL and calls up, when the replica holding
// the PBX node loses its own route to the PBX (the PBX and the other
// replica are fine), then after HandoverAfter it hands the node over to
// the replica that reaches it — never both holding it — and the calls
// stay connected, new calls go through, and dials on the cut-off replica
// fail fast. Before, the node stayed with the replica that could not
// reach it: call control was out for everyone, and after the long bound
// (10 min) it ended every call as "PBX node unreachable". When the PBX
// itself then stops answering everyone, the node is not passed around:
// nobody else reaches it either.
func TestReliability_GivenTwoReplicas_WhenTheOwnerLosesItsRouteToThePBX_ThenTheOtherTakesTheNode(t *testing.T) {
	forEachPBX(t, ownerLosesItsRouteToThePBX)
}

func ownerLosesItsRouteToThePBX(t *testing.T, kind string) {
	dsn := apitest.Postgres(t)
	var route *apitest.TCPRoute
	one, _ := reliabEnv(t, kind, func(o *apitest.Options) {
		o.DB = dsn
		o.HandoverAfter = 2 * time.Second
		o.PBXVia = func(addr string) string {
			route = apitest.NewTCPRoute(t, addr, 0)
			return route.Addr
		}
	})
	two, _ := reliabEnv(t, kind, func(o *apitest.Options) {
		o.DB = dsn
		o.Emu, o.ESLEmu = one.Emu, one.ESL
		o.HandoverAfter = 2 * time.Second
	})
	owner, late, conv, legs := callsUpOnTheFirstOfTwo(t, one, two, "+1202555160")

	owners := watchOwners(one, two)
	cut := time.Now()
	route.Cut()
	two.WaitFor("replica 2 holding the node", 15*time.Second, func() bool { return two.Ctl.Owner("emulator") })
	lastOne, firstTwo, both := owners.stop()
	t.Logf("replica 1 last held the node %s after its route was cut, replica 2 first %s after",
		lastOne.Sub(cut).Round(10*time.Millisecond), firstTwo.Sub(cut).Round(10*time.Millisecond))
	if both > 0 {
		t.Fatalf("both replicas held the node at once, in %d samples of 5 ms", both)
	}
	waitAllConnected(t, two, legs, 5*time.Second)
	waitConverged(t, two, 5*time.Second)
	lateLeg := joinNumber(t, two, conv, late, "+12025551609")
	waitLeg(t, two, lateLeg, "connected", 10*time.Second, inState(storage.LegConnected))
	// The cut-off replica cannot place a call: it says so at once.
	began := time.Now()
	r := one.Do("POST", "/api/v1/conversations/"+conv+"/audio", owner.Token, map[string]any{"number": "+12025551610"})
	if r.Status != 503 || r.Map(t)["error"].(map[string]any)["code"] != "pbx_unavailable" {
		t.Fatalf("a dial on the cut-off replica: %d %s", r.Status, r.Body)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Fatalf("a dial on the cut-off replica took %s to fail", took)
	}
	if m := string(one.Must(200, "GET", "/metrics", "", nil).Body); !strings.Contains(m, `convoice_pbx_node_handovers_total{node="emulator"} 1`+"\n") {
		t.Fatalf("replica 1 should count one handover of the node in /metrics")
	}

	route.Heal()
	// Now the PBX stops answering everyone for twice HandoverAfter: the
	// holder cannot reach it, and neither can replica 1, so the node
	// stays where it is.
	time.Sleep(2 * time.Second)
	owners = watchOwners(one, two)
	one.PBXUnresponsive(true)
	time.Sleep(4 * time.Second)
	one.PBXUnresponsive(false)
	lastOne, _, _ = owners.stop()
	if !lastOne.IsZero() || !two.Ctl.Owner("emulator") {
		t.Fatalf("the node moved while the PBX answered nobody: replica 1 last held it at %v, replica 2 holds it: %v",
			lastOne, two.Ctl.Owner("emulator"))
	}
	waitConverged(t, two, 10*time.Second)
}
