package api_test

import (
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// Two replicas on one PostgreSQL and one PBX node. Given a conference
// with a connected leg and a leg still ringing, both placed through the
// replica that owns the node, when the audio is ended through the other
// replica (its driver never placed either call, and the ringing one is in
// no room yet), then the ringing call is hung up on the PBX at once (not
// left to ring until the ring timeout and answer into a conference that
// no longer exists), it ends cancelled, and nothing is left on the PBX.
func TestReplicas_EndAudioThroughTheReplicaWithoutTheNode_HangsUpARingingLegPlacedByTheOwner(t *testing.T) {
	dsn := apitest.Postgres(t)
	opts := apitest.Options{DB: dsn, PingInterval: 100 * time.Millisecond, RequestTimeout: time.Second}
	r1 := apitest.Start(t, opts)
	opts.Emu = r1.Emu
	r2 := apitest.Start(t, opts)
	if !r1.Ctl.Owner("emulator") || r2.Ctl.Owner("emulator") {
		t.Fatalf("owners: r1 %v, r2 %v; want r1 only", r1.Ctl.Owner("emulator"), r2.Ctl.Owner("emulator"))
	}
	alice := r1.AddUser("Alice", num("work", "+12025550101"))
	bob := r1.AddUser("Bob", num("work", "+12025550480")) // rings, never answers
	conv := r1.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im", "participants": []string{bob.ID}}).Map(t)["id"].(string)
	legA := r1.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, r1, conv, alice.Token, legA, "connected")
	legB := r1.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", bob.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, r1, conv, bob.Token, legB, "ringing")

	ended := time.Now()
	r2.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", alice.Token, nil)
	r1.WaitFor("the ringing call hung up on the PBX", 3*time.Second, func() bool {
		_, ringing := r1.PBXLegs()[legB]
		return !ringing
	})
	t.Logf("ringing call gone %s after the end", time.Since(ended).Round(time.Millisecond))
	if l := legState(t, r2, conv, bob.Token, legB, storage.LegCancelled); l["end_reason"] == nil {
		t.Fatalf("the ringing leg ended without a reason: %v", l)
	}
	legState(t, r1, conv, alice.Token, legA, storage.LegEnded)
	r1.WaitFor("nothing left on the PBX", 5*time.Second, func() bool { return r1.PBXCalls() == 0 && len(r1.PBXRoomIDs()) == 0 })
}
