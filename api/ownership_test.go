package api_test

import (
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
)

// Two replicas on one PostgreSQL and one PBX node: exactly one holds the
// node's lease (and its event connection); the other places calls and runs
// commands without it. When the holder loses its lease (another session
// won the lock while the holder's was down), the other takes it within the
// bound once it is free (LeaseRetry + a connect; 5 s asserted), the call
// stays connected, and it can still be muted and hung up through either
// replica.
func TestOwnership_OneEventConnectionPerNodeAndTakeover(t *testing.T) {
	dsn := apitest.Postgres(t)
	opts := apitest.Options{DB: dsn, PingInterval: 100 * time.Millisecond, RequestTimeout: time.Second}
	r1 := apitest.Start(t, opts)
	opts.Emu = r1.Emu
	r2 := apitest.Start(t, opts)
	owners := func() (bool, bool) { return r1.Ctl.Owner("emulator"), r2.Ctl.Owner("emulator") }
	if o1, o2 := owners(); !o1 || o2 {
		t.Fatalf("owners: r1 %v, r2 %v; want r1 only", o1, o2)
	}
	ready := r2.Must(200, "GET", "/readyz", "", nil).Map(t)
	if n := ready["pbx"].([]any)[0].(map[string]any); n["owner"] != false || n["status"].(map[string]any)["ready"] != true {
		t.Fatalf("readyz of the replica without the lease: %v", n)
	}

	alice := r1.AddUser("Alice", num("work", "+12025550101"))
	bob := r1.AddUser("Bob", num("work", "+12025550111"))
	conv := r2.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im", "participants": []string{bob.ID}}).Map(t)["id"].(string)
	// Dialed through the replica without the event connection; its
	// progress is heard by the owner and stored for both.
	leg := r2.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, r2, conv, alice.Token, leg, "connected")

	// The holder's database session dies.
	admin := apitest.AdminConn(t, dsn)
	// The new holder's event connection will take half a second to come up:
	// a dial in that gap waits for it instead of answering 503.
	r1.Emu.SetWebsocketDelay(500 * time.Millisecond) // under the handshake timeout (RequestTimeout)
	// (A session that merely ends is taken again by its holder: the
	// administrator wins the lock in the same statement, as another
	// replica can while the holder's session is down.)
	letGo := apitest.SeizeLeases(t, admin)
	r1.WaitFor("replica 1 knows it lost the lease", 5*time.Second, func() bool { o1, _ := owners(); return !o1 })
	freed := time.Now()
	letGo()
	r1.WaitFor("replica 2 holds the lease", 5*time.Second, func() bool { _, o2 := owners(); return o2 })
	t.Logf("lease taken over %s after it was freed", time.Since(freed).Round(time.Millisecond))
	if r2.Ctl.PBXStatus()[0].Status.Ready {
		t.Fatal("replica 2's event connection was up at once: the switch gap was not exercised")
	}
	bobLeg := r2.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", bob.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	r1.Emu.SetWebsocketDelay(0)
	legState(t, r1, conv, bob.Token, bobLeg, "connected")
	r1.WaitFor("both replicas ready again", 5*time.Second, func() bool {
		return r1.Ctl.PBXStatus()[0].Status.Ready && r2.Ctl.PBXStatus()[0].Status.Ready
	})
	r2.Must(204, "DELETE", "/api/v1/legs/"+bobLeg, bob.Token, nil)
	legState(t, r1, conv, bob.Token, bobLeg, "ended")

	// The call never dropped, and is controllable through the replica that
	// lost the lease: the new owner hears the results.
	if ch := r1.PBXCalls(); ch != 1 {
		t.Fatalf("calls on the PBX after the takeover: %d", ch)
	}
	if l := legState(t, r1, conv, alice.Token, leg, "connected"); l == nil {
		t.Fatal("leg gone")
	}
	if m := r1.Must(200, "POST", "/api/v1/legs/"+leg+"/mute", alice.Token, nil).Map(t); m["muted"] != true {
		t.Fatalf("mute: %v", m)
	}
	r1.WaitFor("muted on the PBX", 5*time.Second, func() bool { return r1.PBXMuted(leg) })
	r1.Must(204, "DELETE", "/api/v1/legs/"+leg, alice.Token, nil)
	legState(t, r2, conv, alice.Token, leg, "ended")
	waitAudio(t, r1, conv, alice.Token, "conference ended", func(c map[string]any) bool { return c["state"] == "ended" })
	r1.WaitFor("no call left on the PBX", 5*time.Second, func() bool { return r1.PBXCalls() == 0 })
}
