package api_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
)

// Two convoice replicas on one PostgreSQL: a client following a
// conversation on replica 2 receives, in order and without gaps, what
// replica 1 did — carried by NOTIFY, read from the stored log.
func TestReplicas_AStreamOnOneReplicaSeesEverythingDoneOnAnother(t *testing.T) {
	dsn := apitest.Postgres(t)
	r1, _, alice, conv, onR2 := followedOnReplica2(t, apitest.Options{DB: dsn})
	// Replica 1 drives the conversation: messages and a whole call.
	for i := 0; i < 5; i++ {
		r1.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", alice.Token, map[string]any{"text": strconv.Itoa(i)})
	}
	leg := r1.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)
	legState(t, r1, conv, alice.Token, leg["id"].(string), "connected")
	r1.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", alice.Token, nil)
	waitAudio(t, r1, conv, alice.Token, "audio ended", func(c map[string]any) bool { return c["state"] == "ended" })
	r1.WaitFor("the leg ended", 10*time.Second, func() bool {
		return legOf(r1.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio?last=true", alice.Token, nil).Map(t), leg["id"].(string))["state"] == "ended"
	})

	// Everything in the stored log arrives on replica 2, in order, no gap.
	last := r1.Must(200, "GET", "/api/v1/conversations/"+conv, alice.Token, nil).Map(t)["last_event_id"].(string)
	want, _ := strconv.Atoi(last)
	replay := r1.Subscribe(conv, alice.Token, "")
	defer replay.Close()
	for id := 2; id <= want; id++ {
		live := onR2.Next(t, 10*time.Second, nil)
		stored := replay.Next(t, 10*time.Second, nil)
		if stored.ID == "1" {
			stored = replay.Next(t, 10*time.Second, nil)
		}
		if live.ID != strconv.Itoa(id) || live.ID != stored.ID || live.Type != stored.Type {
			t.Fatalf("replica 2 got %s %s, the log has %s %s (want id %d)", live.ID, live.Type, stored.ID, stored.Type, id)
		}
	}
}

// followedOnReplica2 starts two replicas on the PostgreSQL of r1 (r1 as
// given, replica 2 without a PBX), has Alice start a conversation with Bob
// through replica 1, and has Bob follow it on replica 2 from its first
// event (read already).
func followedOnReplica2(t *testing.T, r1 apitest.Options) (*apitest.Env, *apitest.Env, apitest.User, string, *apitest.Stream) {
	t.Helper()
	e1 := apitest.Start(t, r1)
	e2 := apitest.Start(t, apitest.Options{DB: r1.DB, NoPBX: true})
	alice := e1.AddUser("Alice", num("work", "+12025550101"))
	bob := e1.AddUser("Bob", num("work", "+12025550111"))
	conv := e1.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im", "participants": []string{bob.ID}}).Map(t)["id"].(string)
	onR2 := e2.Subscribe(conv, bob.Token, "")
	t.Cleanup(onR2.Close)
	if ev := onR2.Next(t, 5*time.Second, nil); ev.ID != "1" || ev.Type != "conversation.created" {
		t.Fatalf("replay on replica 2: %+v", ev)
	}
	return e1, e2, alice, conv, onR2
}
