package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

// Two replicas on one PostgreSQL: Bob follows his own stream on replica
// 2 while Alice starts audio on replica 1 (NOTIFY carries it), and both
// replicas' webhook dispatchers share one outbox without ever posting the
// same delivery twice.
func TestReplicas_OwnStreamAcrossReplicas_WebhooksPostedOnce(t *testing.T) {
	var mu sync.Mutex
	posts := map[string]int{}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct{ ID string }
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &b)
		mu.Lock()
		posts[b.ID]++
		mu.Unlock()
		w.WriteHeader(200)
	}))
	defer recv.Close()
	notify := controller.NotifyConfig{WebhookAllowPrivate: true, WebhookPoll: 20 * time.Millisecond,
		WebhookRetryBase: 50 * time.Millisecond, WebhookTimeout: time.Second}
	dsn := apitest.Postgres(t)
	r1 := apitest.Start(t, apitest.Options{DB: dsn, Notify: notify})
	r2 := apitest.Start(t, apitest.Options{DB: dsn, NoPBX: true, Notify: notify})
	alice := r1.AddUser("Alice", num("work", "+12025550101"))
	bob := r1.AddUser("Bob", num("work", "+12025550111"))
	r1.Must(201, "POST", "/api/v1/webhooks", apitest.AdminToken, map[string]any{"url": recv.URL,
		"secret": "a-long-shared-secret-0123456789", "events": []string{"leg.updated", "invitation.updated", "message.created"}})

	bobOnR2 := r2.SubscribePath("/api/v1/me/events", bob.Token, apitest.StreamOptions{})
	defer bobOnR2.Close()
	conv := r1.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{
		"kind": "im", "participants": []string{bob.ID}}).Map(t)["id"].(string)
	bobOnR2.Next(t, 5*time.Second, func(e apitest.Event) bool { return e.Type == "conversation.created" })
	start := time.Now()
	leg := r1.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	inv := bobOnR2.Next(t, 2*time.Second, func(e apitest.Event) bool { return e.Type == "invitation.updated" })
	if took := time.Since(start); took > time.Second || inv.Data["state"] != "pending" {
		t.Fatalf("invitation on replica 2 after %s: %v", took, inv.Data)
	}
	// Many events at once, so both dispatchers find work.
	for i := 0; i < 40; i++ {
		r2.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", bob.Token, map[string]any{"text": "hi"})
	}
	legState(t, r1, conv, alice.Token, leg, "connected")
	r1.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", alice.Token, nil)
	legState(t, r1, conv, alice.Token, leg, "ended")

	want := 0
	log := r1.Subscribe(conv, alice.Token, "")
	for _, e := range drain(log, 500*time.Millisecond) {
		if e.Type == "leg.updated" || e.Type == "invitation.updated" || e.Type == "message.created" {
			want++
		}
	}
	log.Close()
	r1.WaitFor("every event posted", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(posts) >= want
	})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != want {
		t.Fatalf("%d distinct events posted, want %d", len(posts), want)
	}
	for id, n := range posts {
		if n != 1 {
			t.Fatalf("event %s posted %d times by the two replicas", id, n)
		}
	}
}
