package api_test

import (
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
)

// Two PBX nodes in one convoice: conferences are spread over both (least
// loaded first); when one node goes away for longer than NodeLostAfter,
// its calls end with a reason that names it, its conference ends, the
// other node's call stays connected, and the next conference goes to the
// node that is left.
func TestNodes_ConferencesSpreadAndALostNodeEndsItsCalls(t *testing.T) {
	env := apitest.Start(t, apitest.Options{Nodes: 2, NodeLostAfter: time.Second, PingInterval: 100 * time.Millisecond,
		RequestTimeout: 500 * time.Millisecond})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	newConv := func() string {
		return env.Must(201, "POST", "/api/v1/conversations", alice.Token,
			map[string]any{"kind": "im", "participants": []string{bob.ID}}).Map(t)["id"].(string)
	}
	call := func(conv string) string {
		leg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)
		id := leg["id"].(string)
		legState(t, env, conv, alice.Token, id, "connected")
		return id
	}
	onNode := func(i int, legID string) bool {
		for _, ch := range env.Emus[i].Channels() {
			if ch.ID == legID {
				return true
			}
		}
		return false
	}

	conv1, conv2 := newConv(), newConv()
	leg1, leg2 := call(conv1), call(conv2)
	n1, n2 := -1, -1
	for i := range env.Emus {
		if onNode(i, leg1) {
			n1 = i
		}
		if onNode(i, leg2) {
			n2 = i
		}
	}
	if n1 < 0 || n2 < 0 || n1 == n2 {
		t.Fatalf("the two conferences should be on the two nodes: leg1 on %d, leg2 on %d", n1, n2)
	}
	for _, n := range env.Ctl.PBXStatus() {
		if !n.Owner || !n.Status.Ready {
			t.Fatalf("on SQLite the one process owns every node: %+v", n)
		}
	}

	// Node of conference 2 goes away (the process is gone: no answer at all).
	lostAt := time.Now()
	env.Emus[n2].Close()
	lostName := "emulator"
	if n2 == 1 {
		lostName = "emulator2"
	}
	l := legState(t, env, conv2, alice.Token, leg2, "ended")
	if want := "PBX node " + lostName + " unreachable"; l["end_reason"] != want {
		t.Fatalf("leg on the lost node: end_reason %v, want %q", l["end_reason"], want)
	}
	if d := time.Since(lostAt); d < time.Second {
		t.Fatalf("legs ended %s after the node went away, before NodeLostAfter", d)
	}
	waitAudio(t, env, conv2, alice.Token, "conference 2 ended", func(c map[string]any) bool { return c["state"] == "ended" })

	// The other node's call is untouched and still controllable.
	if c := env.Must(200, "GET", "/api/v1/conversations/"+conv1+"/audio?last=true", alice.Token, nil).Map(t); c["state"] != "active" || legOf(c, leg1)["state"] != "connected" {
		t.Fatalf("conference on the healthy node: %v", c)
	}

	// The next conference goes to the node that is left.
	leg3 := call(newConv())
	if !onNode(n1, leg3) {
		t.Fatalf("new conference not placed on the remaining node %d", n1)
	}
}
