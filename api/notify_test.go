package api_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

// drain collects what a stream delivers until it has been quiet for quiet.
func drain(s *apitest.Stream, quiet time.Duration) []apitest.Event {
	var out []apitest.Event
	for {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-time.After(quiet):
			return out
		}
	}
}

// Bob has no conversation open; Alice adds audio: Bob's own stream brings
// the invitation within a second, and after a reconnect with Last-Event-ID
// what he missed, once.
func TestMyEvents_InvitationArrivesWithinASecond_AndReconnectReplaysWhatWasMissedOnce(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	carol := env.AddUser("Carol", num("work", "+12025550121"))

	// The admin token is nobody: it has no stream of its own.
	if r := env.Do("GET", "/api/v1/me/events", apitest.AdminToken, nil); r.Status != 403 || r.ErrorCode() != "user_only" {
		t.Fatalf("admin's own stream: %d %s", r.Status, r.Body)
	}

	bobStream := env.SubscribePath("/api/v1/me/events", bob.Token, apitest.StreamOptions{})
	carolStream := env.SubscribePath("/api/v1/me/events", carol.Token, apitest.StreamOptions{})
	defer carolStream.Close()

	// Being put in a conversation reaches Bob's stream.
	conv := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{
		"kind": "im", "subject": "Planning", "participants": []string{bob.ID}}).Map(t)["id"].(string)
	created := bobStream.Next(t, 2*time.Second, func(e apitest.Event) bool { return e.Type == "conversation.created" })
	if created.Data["id"] != conv {
		t.Fatalf("conversation.created for %v, want %s", created.Data["id"], conv)
	}

	start := time.Now()
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"})
	inv := bobStream.Next(t, 2*time.Second, func(e apitest.Event) bool { return e.Type == "invitation.updated" })
	took := time.Since(start)
	if took > time.Second {
		t.Fatalf("the invitation reached Bob's own stream after %s, want within 1 s", took)
	}
	t.Logf("invitation on Bob's own stream %s after Alice's request", took)
	if inv.Data["user_id"] != bob.ID || inv.Data["state"] != "pending" || inv.Data["conversation_id"] != conv {
		t.Fatalf("invitation event %v", inv.Data)
	}
	var env1 struct {
		ConversationID string `json:"conversation_id"`
	}
	_ = json.Unmarshal(inv.Raw, &env1)
	if env1.ConversationID != conv {
		t.Fatalf("envelope conversation_id %q, want %s", env1.ConversationID, conv)
	}
	invID := inv.Data["id"].(string)
	seen := drain(bobStream, 300*time.Millisecond)
	bobStream.Close()
	last := inv.ID
	for _, e := range seen {
		last = e.ID
		if e.Type == "leg.updated" {
			t.Fatalf("Bob's own stream carries someone else's leg: %v", e.Data)
		}
	}

	// While Bob is away: Alice ends the audio, which cancels his
	// invitation; and she leaves him a message (not his own event).
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", alice.Token, map[string]any{"text": "call me"})
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", alice.Token, nil)
	env.WaitFor("invitation cancelled", 5*time.Second, func() bool {
		return len(env.Must(200, "GET", "/api/v1/invitations", bob.Token, nil).Map(t)["invitations"].([]any)) == 0
	})

	// An id this stream never sent is refused, not waited for.
	if r := env.Do("GET", "/api/v1/me/events?last_event_id=999999", bob.Token, nil); r.Status != 400 {
		t.Fatalf("resuming beyond the newest event: %d %s", r.Status, r.Body)
	}
	again := env.SubscribePath("/api/v1/me/events", bob.Token, apitest.StreamOptions{LastEventID: last})
	replayed := drain(again, 500*time.Millisecond)
	again.Close()
	lastN, _ := strconv.Atoi(last)
	ids := map[string]bool{}
	cancelled := 0
	for _, e := range replayed {
		n, _ := strconv.Atoi(e.ID)
		if n <= lastN {
			t.Fatalf("replay after %s repeats event %s", last, e.ID)
		}
		if ids[e.ID] {
			t.Fatalf("event %s replayed twice", e.ID)
		}
		ids[e.ID] = true
		if n != lastN+len(ids) {
			t.Fatalf("ids not consecutive after %s: %v", last, replayed)
		}
		switch e.Type {
		case "invitation.updated":
			if e.Data["id"] == invID && e.Data["state"] == "cancelled" {
				cancelled++
			}
		case "message.created", "leg.updated":
			t.Fatalf("Bob's own stream carries %s", e.Type)
		}
	}
	if cancelled != 1 {
		t.Fatalf("the missed cancellation came %d times, want once: %v", cancelled, replayed)
	}

	// Carol, in no conversation, heard nothing of it.
	if got := drain(carolStream, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("Carol's stream got %d events: %v", len(got), got[0].Data)
	}
}

// legsByUser indexes a conference record's legs by user id.
func legsByUser(t *testing.T, conf map[string]any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, l := range conf["legs"].([]any) {
		m := l.(map[string]any)
		uid, _ := m["user_id"].(string)
		out[uid] = m
	}
	return out
}

func parseTime(t *testing.T, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %v: %v", v, err)
	}
	return tm
}

// A conference with a busy leg, a redirected one and a connected one
// ends: the history shows all three with their states, causes, times and
// durations; each leg answers on its own, and strangers get the unknown
// id's 404.
func TestAudioHistory_BusyRedirectedConnected_LegRecordsAndStrangers(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob Busy", num("work", "+12025550486"))
	carol := env.AddUser("Carol", num("work", "+12025550121"))
	dave := env.AddUser("Dave", num("work", "+12025550131"))
	conv := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{
		"kind": "im", "subject": "History", "participants": []string{bob.ID, carol.ID}}).Map(t)["id"].(string)

	aLeg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token,
		map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, aLeg, "connected")
	bLeg := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, bob, conv)+"/accept", bob.Token,
		map[string]any{}).Map(t)["leg"].(map[string]any)["id"].(string)
	cLeg := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, carol, conv)+"/redirect", carol.Token,
		map[string]any{"number": "+12025550177"}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, bLeg, "busy")
	legState(t, env, conv, alice.Token, cLeg, "connected")
	time.Sleep(1100 * time.Millisecond) // a call of at least a second
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", alice.Token, nil)
	legState(t, env, conv, alice.Token, cLeg, "ended")
	legState(t, env, conv, alice.Token, aLeg, "ended")

	var conf map[string]any
	env.WaitFor("the conference ended in the history", 5*time.Second, func() bool {
		h := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio/history", carol.Token, nil).Map(t)
		confs := h["conferences"].([]any)
		if len(confs) != 1 || h["next_cursor"] != "" {
			t.Fatalf("history %v", h)
		}
		conf = confs[0].(map[string]any)
		return conf["ended_at"] != nil
	})
	if conf["started_at"] == nil || conf["state"] != "ended" {
		t.Fatalf("conference record %v", conf)
	}
	legs := legsByUser(t, conf)
	if len(legs) != 3 {
		t.Fatalf("%d legs in the history, want 3: %v", len(legs), conf["legs"])
	}
	busy, red, own := legs[bob.ID], legs[carol.ID], legs[alice.ID]
	if busy["id"] != bLeg || busy["state"] != "busy" || busy["cause"] != float64(17) || busy["number"] != "+12025550486" ||
		busy["display_name"] != "Bob Busy" || busy["answered_at"] != nil || busy["duration_s"] != float64(0) ||
		busy["ended_by"] != "remote" || busy["ended_at"] == nil {
		t.Fatalf("busy leg %v", busy)
	}
	for name, l := range map[string]map[string]any{"redirected": red, "connected": own} {
		dialed, answered, ended := parseTime(t, l["dialed_at"]), parseTime(t, l["answered_at"]), parseTime(t, l["ended_at"])
		if l["state"] != "ended" || l["ended_by"] != "convoice" || l["end_reason"] == "" ||
			dialed.After(answered) || answered.After(ended) {
			t.Fatalf("%s leg %v", name, l)
		}
		if want := float64(int64(ended.Sub(answered) / time.Second)); l["duration_s"] != want || want < 1 {
			t.Fatalf("%s leg lasted %v s, want %v (answered %s, ended %s)", name, l["duration_s"], want, answered, ended)
		}
	}
	if red["number"] != "+12025550177" || red["id"] != cLeg || own["id"] != aLeg {
		t.Fatalf("redirected %v, own %v", red, own)
	}

	// Each leg on its own, for participants and admins, as in the history.
	for _, id := range []string{aLeg, bLeg, cLeg} {
		for _, tok := range []string{alice.Token, bob.Token, apitest.AdminToken} {
			rec := env.Must(200, "GET", "/api/v1/legs/"+id, tok, nil).Map(t)
			if rec["id"] != id || rec["dialed_at"] == nil || rec["ended_at"] == nil {
				t.Fatalf("leg %s: %v", id, rec)
			}
		}
	}
	// A stranger gets exactly the unknown id's answer.
	unknown := env.Do("GET", "/api/v1/legs/0197a6e0-0000-7000-8000-000000000000", dave.Token, nil)
	if unknown.Status != 404 {
		t.Fatalf("unknown leg: %d %s", unknown.Status, unknown.Body)
	}
	for _, id := range []string{aLeg, bLeg, cLeg} {
		r := env.Do("GET", "/api/v1/legs/"+id, dave.Token, nil)
		if r.Status != unknown.Status || !bytes.Equal(r.Body, unknown.Body) {
			t.Fatalf("stranger on leg %s: %d %s, unknown id: %d %s", id, r.Status, r.Body, unknown.Status, unknown.Body)
		}
	}
	if r := env.Do("GET", "/api/v1/conversations/"+conv+"/audio/history", dave.Token, nil); r.Status != 404 {
		t.Fatalf("stranger's history: %d %s", r.Status, r.Body)
	}

	// A second conference comes first; pages go back in time.
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", carol.Token, map[string]any{"published": "work"})
	p1 := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio/history?limit=1", alice.Token, nil).Map(t)
	first := p1["conferences"].([]any)[0].(map[string]any)
	if first["id"] == conf["id"] || first["state"] != "active" || p1["next_cursor"] == "" {
		t.Fatalf("first page %v", p1)
	}
	p2 := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio/history?limit=1&cursor="+p1["next_cursor"].(string), alice.Token, nil).Map(t)
	if cs := p2["conferences"].([]any); len(cs) != 1 || cs[0].(map[string]any)["id"] != conf["id"] || p2["next_cursor"] != "" {
		t.Fatalf("second page %v", p2)
	}
	if r := env.Do("GET", "/api/v1/conversations/"+conv+"/audio/history?cursor=nonsense", alice.Token, nil); r.Status != 400 {
		t.Fatalf("bad cursor: %d %s", r.Status, r.Body)
	}

	// Past the retention, the ended conference and its legs are gone.
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", alice.Token, nil)
	if n := env.Ctl.PurgeHistory(context.Background(), time.Now().Add(24*time.Hour)); n != 0 {
		t.Fatalf("a purge within the retention removed %d conferences", n)
	}
	env.WaitFor("both conferences and their calls ended", 5*time.Second, func() bool {
		cs := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio/history", alice.Token, nil).Map(t)["conferences"].([]any)
		c := cs[0].(map[string]any)
		for _, l := range c["legs"].([]any) {
			if l.(map[string]any)["ended_at"] == nil {
				return false
			}
		}
		return c["ended_at"] != nil
	})
	if n := env.Ctl.PurgeHistory(context.Background(), time.Now().Add(401*24*time.Hour)); n != 2 {
		t.Fatalf("the purge past the retention removed %d conferences, want 2", n)
	}
	if cs := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio/history", alice.Token, nil).Map(t)["conferences"].([]any); len(cs) != 0 {
		t.Fatalf("history after the purge: %v", cs)
	}
	env.Must(404, "GET", "/api/v1/legs/"+aLeg, alice.Token, nil)
	// So did the entries of the own streams: Carol's replays nothing now.
	after := env.SubscribePath("/api/v1/me/events", carol.Token, apitest.StreamOptions{LastEventID: "0"})
	got := drain(after, 200*time.Millisecond)
	after.Close()
	if len(got) != 0 {
		t.Fatalf("Carol's own stream after the purge: %d events", len(got))
	}
}

// A guest reads their own leg with their guest token, and no one else's.
func TestGetLeg_GuestSeesOwnLegOnly(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	conv := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im", "subject": "Meet"}).Map(t)["id"].(string)
	aLeg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token,
		map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	_, tok := jlLink(t, env, alice, conv, nil)
	j := jlJoin(t, env, tok, "Gina Guest", "+12025550161")
	gTok, gLeg := j["guest_token"].(string), j["leg"].(map[string]any)["id"].(string)
	rec := env.Must(200, "GET", "/api/v1/legs/"+gLeg, gTok, nil).Map(t)
	if rec["guest_id"] == nil || rec["display_name"] != "Gina Guest" {
		t.Fatalf("guest's leg %v", rec)
	}
	if r := env.Do("GET", "/api/v1/legs/"+aLeg, gTok, nil); r.Status != 404 {
		t.Fatalf("guest on Alice's leg: %d %s", r.Status, r.Body)
	}
}

// webhookReceiver is a real HTTP endpoint that checks signatures and
// de-duplicates by event id; it answers 500 while failing is set.
type webhookReceiver struct {
	t                        *testing.T
	secret                   string
	mu                       sync.Mutex
	failing, refusedN, posts int
	fail                     bool
	got                      map[string]map[string]any // event id → body
	badSig                   int
}

func (rc *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.posts++
	sig := r.Header.Get("Convoice-Signature")
	ts, mac, ok := strings.Cut(sig, ",v1=")
	ts = strings.TrimPrefix(ts, "t=")
	m := hmac.New(sha256.New, []byte(rc.secret))
	m.Write([]byte(ts + "." + string(body)))
	secs, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || !hmac.Equal([]byte(mac), []byte(hex.EncodeToString(m.Sum(nil)))) ||
		time.Since(time.Unix(secs, 0)) > time.Minute {
		rc.badSig++
		w.WriteHeader(400)
		return
	}
	if rc.fail {
		rc.refusedN++
		w.WriteHeader(500)
		return
	}
	var b map[string]any
	if err := json.Unmarshal(body, &b); err != nil {
		rc.badSig++
		w.WriteHeader(400)
		return
	}
	rc.got[b["id"].(string)] = b
	w.WriteHeader(204)
}

func (rc *webhookReceiver) setFail(v bool) {
	rc.mu.Lock()
	rc.fail = v
	rc.mu.Unlock()
}

// The receiver gets every leg and invitation event exactly once after
// de-duplication, signed, while it answers 500 for a while and convoice is
// stopped and started again in between.
func TestWebhooks_EveryLegAndInvitationEventOnceDespiteFailuresAndRestart(t *testing.T) {
	rc := &webhookReceiver{t: t, secret: "a-long-shared-secret-0123456789", got: map[string]map[string]any{}, fail: true}
	recv := httptest.NewServer(rc)
	defer recv.Close()
	env := apitest.Start(t, apitest.Options{Notify: controller.NotifyConfig{WebhookAllowPrivate: true,
		WebhookRetryBase: 50 * time.Millisecond, WebhookRetryMax: 300 * time.Millisecond, WebhookPoll: 50 * time.Millisecond,
		WebhookTimeout: time.Second}})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	carol := env.AddUser("Carol", num("work", "+12025550486"))

	if r := env.Do("POST", "/api/v1/webhooks", alice.Token, map[string]any{"url": recv.URL, "secret": rc.secret,
		"events": []string{"leg.updated"}}); r.Status != 403 {
		t.Fatalf("a user registering a webhook: %d %s", r.Status, r.Body)
	}
	wh := env.Must(201, "POST", "/api/v1/webhooks", apitest.AdminToken, map[string]any{"url": recv.URL + "/hook",
		"secret": rc.secret, "events": []string{"leg.updated", "invitation.updated"}}).Map(t)
	if wh["id"] == "" || wh["url"] != recv.URL+"/hook" || len(wh["events"].([]any)) != 2 || wh["secret"] != nil {
		t.Fatalf("webhook answer %v", wh)
	}
	whID := wh["id"].(string)

	conv := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{
		"kind": "im", "subject": "Hooks", "participants": []string{bob.ID, carol.ID}}).Map(t)["id"].(string)
	aLeg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token,
		map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, aLeg, "connected")
	bLeg := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, bob, conv)+"/accept", bob.Token,
		map[string]any{}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, bLeg, "connected")
	env.WaitFor("failed attempts", 5*time.Second, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.refusedN >= 3
	})
	env.WaitFor("failures counted", 5*time.Second, func() bool {
		return strings.Contains(string(env.Must(200, "GET", "/metrics", "", nil).Body), `convoice_webhook_deliveries_total{result="failed"}`)
	})
	failing := env.Must(200, "GET", "/api/v1/webhooks/"+whID, apitest.AdminToken, nil).Map(t)
	if failing["last_status"] != float64(500) || failing["failing_since"] == nil || failing["enabled"] != true {
		t.Fatalf("a failing endpoint shows %v", failing)
	}

	// convoice goes away with deliveries owed; the receiver recovers
	// meanwhile; events happen before and after.
	env.Stop()
	rc.setFail(false)
	time.Sleep(200 * time.Millisecond)
	env.Resume()
	env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, carol, conv)+"/accept", carol.Token, map[string]any{})
	env.Must(204, "DELETE", "/api/v1/legs/"+bLeg, bob.Token, nil)
	legState(t, env, conv, alice.Token, bLeg, "ended")
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", alice.Token, nil)
	legState(t, env, conv, alice.Token, aLeg, "ended")

	// What the receiver must have: every leg and invitation event of the
	// conversation's log.
	want := map[string]string{}
	log := env.Subscribe(conv, alice.Token, "")
	for _, e := range drain(log, 500*time.Millisecond) {
		if e.Type == "leg.updated" || e.Type == "invitation.updated" {
			want[conv+":"+e.ID] = e.Type
		}
	}
	log.Close()
	if len(want) < 10 {
		t.Fatalf("only %d leg and invitation events in the log", len(want))
	}
	env.WaitFor("every event delivered", 10*time.Second, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return len(rc.got) >= len(want)
	})
	time.Sleep(300 * time.Millisecond)
	rc.mu.Lock()
	if rc.badSig != 0 {
		t.Fatalf("%d deliveries with a bad signature or body", rc.badSig)
	}
	for id, typ := range want {
		b := rc.got[id]
		if b == nil {
			t.Fatalf("event %s (%s) never delivered", id, typ)
		}
		if b["type"] != typ || b["conversation_id"] != conv || b["at"] == nil || b["data"] == nil {
			t.Fatalf("delivery %s: %v", id, b)
		}
	}
	for id := range rc.got {
		if want[id] == "" {
			t.Fatalf("delivered %s, which is not a subscribed event", id)
		}
	}
	t.Logf("%d events, %d posts (%d answered 500)", len(want), rc.posts, rc.refusedN)
	rc.mu.Unlock() // a re-delivery in flight must reach the receiver

	// At least once: a delivery whose answer the stopped convoice never
	// recorded is sent again after the restart and may still be in flight
	// although the receiver has its event; wait for the log to settle.
	var ok map[string]any
	env.WaitFor("every delivery recorded", 10*time.Second, func() bool {
		ok = env.Must(200, "GET", "/api/v1/webhooks/"+whID, apitest.AdminToken, nil).Map(t)
		for _, d := range ok["deliveries"].([]any) {
			if d.(map[string]any)["delivered_at"] == nil {
				return false
			}
		}
		return true
	})
	rc.mu.Lock()
	if rc.badSig != 0 || len(rc.got) != len(want) {
		t.Fatalf("after the log settled: %d bad signatures, %d distinct events for %d", rc.badSig, len(rc.got), len(want))
	}
	rc.mu.Unlock()
	if ok["last_status"] != float64(204) || ok["failing_since"] != nil || ok["last_success_at"] == nil {
		t.Fatalf("a recovered endpoint shows %v", ok)
	}
	retried := 0
	for _, d := range ok["deliveries"].([]any) {
		dm := d.(map[string]any)
		if dm["delivered_at"] == nil {
			t.Fatalf("undelivered in the log: %v", dm)
		}
		if dm["attempts"].(float64) > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Fatalf("no delivery needed a retry: %v", ok["deliveries"])
	}
	list := env.Must(200, "GET", "/api/v1/webhooks", apitest.AdminToken, nil).Map(t)["webhooks"].([]any)
	if len(list) != 1 {
		t.Fatalf("webhooks %v", list)
	}
	metrics := string(env.Must(200, "GET", "/metrics", "", nil).Body)
	for _, m := range []string{`convoice_webhook_deliveries_total{result="delivered"}`, "convoice_webhook_queue_depth", "convoice_webhook_oldest_undelivered_seconds"} {
		if !strings.Contains(metrics, m) {
			t.Fatalf("metrics lack %s", m)
		}
	}
	env.Must(204, "DELETE", "/api/v1/webhooks/"+whID, apitest.AdminToken, nil)
	env.Must(404, "GET", "/api/v1/webhooks/"+whID, apitest.AdminToken, nil)
}

// deliveredTexts gives the texts of the message.created deliveries the
// receiver has accepted.
func (rc *webhookReceiver) deliveredTexts() map[string]bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string]bool{}
	for _, b := range rc.got {
		if d, ok := b["data"].(map[string]any); ok && b["type"] == "message.created" {
			out[d["text"].(string)] = true
		}
	}
	return out
}

// An endpoint convoice disabled after its deliveries kept failing is
// enabled again by an admin with PATCH, keeping its delivery log: what it
// was owed is retried at once (its attempts counted afresh) and arrives;
// what happened while it was disabled was never queued for it. Only admins
// may, the body must say enabled true or false, an unknown id is 404, and
// PATCH false pauses it by hand with a reason naming who.
func TestWebhooks_DisabledEndpointEnabledAgainByPatchGetsWhatItWasOwed(t *testing.T) {
	rc := &webhookReceiver{t: t, secret: "a-long-shared-secret-0123456789", got: map[string]map[string]any{}, fail: true}
	recv := httptest.NewServer(rc)
	defer recv.Close()
	env := apitest.Start(t, apitest.Options{NoPBX: true, Notify: controller.NotifyConfig{WebhookAllowPrivate: true,
		WebhookRetryBase: 50 * time.Millisecond, WebhookRetryMax: 100 * time.Millisecond, WebhookPoll: 50 * time.Millisecond,
		WebhookDisableAfter: 400 * time.Millisecond, WebhookTimeout: time.Second}})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	wh := env.Must(201, "POST", "/api/v1/webhooks", apitest.AdminToken, map[string]any{"url": recv.URL + "/hook",
		"secret": rc.secret, "events": []string{"message.created"}}).Map(t)
	whID := wh["id"].(string)
	path := "/api/v1/webhooks/" + whID
	conv := jlConv(t, env, alice, "Hooks", bob)
	say := func(text string) {
		env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", alice.Token, map[string]any{"text": text})
	}

	// The receiver fails until convoice gives up on it.
	say("owed")
	var off map[string]any
	env.WaitFor("the endpoint disabled", 10*time.Second, func() bool {
		off = env.Must(200, "GET", path, apitest.AdminToken, nil).Map(t)
		return off["enabled"] == false
	})
	if off["disabled_at"] == nil || !strings.Contains(off["disabled_reason"].(string), "every delivery failed since") {
		t.Fatalf("a disabled endpoint shows %v", off)
	}
	owed := off["deliveries"].([]any)
	if len(owed) != 1 || owed[0].(map[string]any)["delivered_at"] != nil || owed[0].(map[string]any)["attempts"].(float64) < 2 {
		t.Fatalf("the delivery log of the disabled endpoint: %v", owed)
	}
	// Held: nothing is tried while it is disabled, nothing queued for it.
	rc.setFail(false)
	say("while disabled")
	time.Sleep(400 * time.Millisecond)
	if got := rc.deliveredTexts(); len(got) != 0 {
		t.Fatalf("a disabled endpoint got %v", got)
	}

	// Refused changes.
	for _, c := range []struct {
		token  string
		path   string
		body   any
		status int
		code   string
	}{
		{alice.Token, path, map[string]any{"enabled": true}, 403, "admin_only"},
		{apitest.AdminToken, "/api/v1/webhooks/" + controller.NewID(), map[string]any{"enabled": true}, 404, "not_found"},
		{apitest.AdminToken, path, map[string]any{}, 400, "invalid_enabled"},
		{apitest.AdminToken, path, map[string]any{"enabled": nil}, 400, "invalid_enabled"},
		{apitest.AdminToken, path, map[string]any{"enabled": "yes"}, 400, "invalid_enabled"},
		{apitest.AdminToken, path, map[string]any{"enabled": true, "url": "http://example.com/"}, 400, "invalid_url"},
	} {
		r := env.Do("PATCH", c.path, c.token, c.body)
		if r.Status != c.status || r.ErrorCode() != c.code {
			t.Errorf("PATCH %v: %d %s, want %d %s", c.body, r.Status, r.Body, c.status, c.code)
		}
		if c.status == 400 {
			if f := r.Map(t)["error"].(map[string]any)["field"]; f != strings.TrimPrefix(c.code, "invalid_") {
				t.Errorf("PATCH %v: the error names the field %v", c.body, f)
			}
		}
	}
	if g := env.Must(200, "GET", path, apitest.AdminToken, nil).Map(t); g["enabled"] != false {
		t.Fatalf("refused changes changed the endpoint: %v", g)
	}

	// Enabled again: the owed delivery is retried at once and arrives;
	// the message of the disabled time never does; new ones do.
	on := env.Must(200, "PATCH", path, apitest.AdminToken, map[string]any{"enabled": true}).Map(t)
	if on["enabled"] != true || on["disabled_at"] != nil || on["disabled_reason"] != nil || on["failing_since"] != nil ||
		on["id"] != whID || len(on["deliveries"].([]any)) != 1 {
		t.Fatalf("the enabled endpoint shows %v", on)
	}
	env.WaitFor("the owed delivery arrives", 5*time.Second, func() bool { return rc.deliveredTexts()["owed"] })
	say("after")
	env.WaitFor("a new message arrives", 5*time.Second, func() bool { return rc.deliveredTexts()["after"] })
	var log map[string]any
	env.WaitFor("both deliveries recorded", 5*time.Second, func() bool {
		log = env.Must(200, "GET", path, apitest.AdminToken, nil).Map(t)
		ds := log["deliveries"].([]any)
		return len(ds) == 2 && ds[0].(map[string]any)["delivered_at"] != nil && ds[1].(map[string]any)["delivered_at"] != nil
	})
	if rc.deliveredTexts()["while disabled"] {
		t.Fatalf("the message of the disabled time was delivered")
	}
	// Newest first: "after", then "owed", which was tried once more after
	// its attempts were counted afresh.
	if a := log["deliveries"].([]any)[1].(map[string]any)["attempts"]; a != float64(1) {
		t.Fatalf("the owed delivery after re-enabling: %d attempts, want 1: %v", a, log["deliveries"])
	}
	if log["enabled"] != true || log["last_status"] != float64(204) || log["last_success_at"] == nil || log["failing_since"] != nil {
		t.Fatalf("the recovered endpoint shows %v", log)
	}
	// Asking again for what is so changes nothing.
	if again := env.Must(200, "PATCH", path, apitest.AdminToken, map[string]any{"enabled": true}).Map(t); again["enabled"] != true {
		t.Fatalf("enabling an enabled endpoint: %v", again)
	}

	// Paused by hand: held again, with who did it; a second pause keeps
	// the first one's time.
	paused := env.Must(200, "PATCH", path, apitest.AdminToken, map[string]any{"enabled": false}).Map(t)
	if paused["enabled"] != false || paused["disabled_at"] == nil || !strings.HasPrefix(paused["disabled_reason"].(string), "disabled by ") {
		t.Fatalf("a paused endpoint shows %v", paused)
	}
	if again := env.Must(200, "PATCH", path, apitest.AdminToken, map[string]any{"enabled": false}).Map(t); again["disabled_at"] != paused["disabled_at"] {
		t.Fatalf("pausing twice moved disabled_at from %v to %v", paused["disabled_at"], again["disabled_at"])
	}
	say("while paused")
	time.Sleep(300 * time.Millisecond)
	if rc.deliveredTexts()["while paused"] {
		t.Fatalf("a paused endpoint got a delivery")
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.badSig != 0 {
		t.Fatalf("%d deliveries with a bad signature or body", rc.badSig)
	}
}

// Webhooks refuse what is not http(s) and, by default, loopback and
// private addresses.
func TestWebhooks_RefuseBadAndPrivateURLs(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	for _, c := range []struct {
		url, code string
		status    int
	}{
		{"ftp://example.com/x", "invalid_url", 400},
		{"/relative", "invalid_url", 400},
		{"http://127.0.0.1:9/hook", "webhook_address_not_allowed", 403},
		{"http://10.1.2.3/hook", "webhook_address_not_allowed", 403},
		{"http://169.254.169.254/latest", "webhook_address_not_allowed", 403},
		{"http://[::1]/hook", "webhook_address_not_allowed", 403},
		{"http://localhost:8080/hook", "webhook_address_not_allowed", 403},
	} {
		r := env.Do("POST", "/api/v1/webhooks", apitest.AdminToken, map[string]any{"url": c.url,
			"secret": "a-long-shared-secret-0123456789", "events": []string{"leg.updated"}})
		if r.Status != c.status || r.ErrorCode() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.url, r.Status, r.Body, c.status, c.code)
		}
	}
	r := env.Do("POST", "/api/v1/webhooks", apitest.AdminToken, map[string]any{"url": "https://203.0.113.5/h",
		"secret": "a-long-shared-secret-0123456789", "events": []string{"no.such"}})
	if r.Status != 400 || r.ErrorCode() != "invalid_events" {
		t.Fatalf("unknown type: %d %s", r.Status, r.Body)
	}
}

// The CDR export: CSV with a header row, RFC 4180 quoting and UTC times,
// opening in any spreadsheet; JSON and JSON lines with the same records.
func TestCDRExport_CSVQuotingUTCAndFormats(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	odd := `Smith, "Al"`
	u := env.Must(201, "POST", "/api/v1/users", apitest.AdminToken, map[string]any{"display_name": odd,
		"email": "al.smith@example.com", "numbers": []any{num("work", "+12025550101")}}).Map(t)
	tok := env.Must(201, "POST", "/api/v1/users/"+u["id"].(string)+"/tokens", apitest.AdminToken, nil).Map(t)["token"].(string)
	al := apitest.User{ID: u["id"].(string), Token: tok, Name: odd}
	bob := env.AddUser("Bob", num("work", "+12025550486"))
	conv := env.Must(201, "POST", "/api/v1/conversations", al.Token, map[string]any{
		"kind": "im", "subject": "CDR", "participants": []string{bob.ID}}).Map(t)["id"].(string)
	aLeg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", al.Token,
		map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, al.Token, aLeg, "connected")
	bLeg := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, bob, conv)+"/accept", bob.Token,
		map[string]any{}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, al.Token, bLeg, "busy")
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", al.Token, nil)
	legState(t, env, conv, al.Token, aLeg, "ended")

	if r := env.Do("GET", "/api/v1/cdr", al.Token, nil); r.Status != 403 {
		t.Fatalf("a user's CDR export: %d %s", r.Status, r.Body)
	}
	r := env.Must(200, "GET", "/api/v1/cdr?format=csv", apitest.AdminToken, nil)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Fatalf("content type %q", ct)
	}
	if !bytes.Contains(r.Body, []byte(`"Smith, ""Al"""`)) || !bytes.Contains(r.Body, []byte("\r\n")) {
		t.Fatalf("not RFC 4180: %s", r.Body)
	}
	rows, err := csv.NewReader(bytes.NewReader(r.Body)).ReadAll()
	if err != nil {
		t.Fatalf("the CSV does not parse: %v\n%s", err, r.Body)
	}
	head := strings.Join(rows[0], ",")
	if head != "leg_id,conference_id,conversation_id,user_id,guest_id,display_name,number,state,cause,cause_text,end_reason,ended_by,dialed_at,ringing_at,answered_at,ended_at,duration_s" {
		t.Fatalf("header %q", head)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	byLeg := map[string][]string{}
	for _, row := range rows[1:] {
		if len(row) != len(rows[0]) {
			t.Fatalf("row of %d cells: %v", len(row), row)
		}
		byLeg[row[col["leg_id"]]] = row
	}
	a, b := byLeg[aLeg], byLeg[bLeg]
	if a == nil || b == nil || len(rows) != 3 {
		t.Fatalf("rows %v", rows)
	}
	if a[col["display_name"]] != odd || a[col["state"]] != "ended" || b[col["state"]] != "busy" || b[col["cause"]] != "17" ||
		b[col["answered_at"]] != "" || b[col["number"]] != "+12025550486" {
		t.Fatalf("records %v / %v", a, b)
	}
	for _, c := range []string{"dialed_at", "answered_at", "ended_at"} {
		v := a[col[c]]
		if _, err := time.Parse(time.RFC3339, v); err != nil || !strings.HasSuffix(v, "Z") {
			t.Fatalf("%s %q is not a UTC RFC 3339 time", c, v)
		}
	}

	js := env.Must(200, "GET", "/api/v1/cdr?format=json", apitest.AdminToken, nil).Map(t)["records"].([]any)
	if len(js) != 2 {
		t.Fatalf("json records %v", js)
	}
	lines := strings.Split(strings.TrimSpace(string(env.Must(200, "GET", "/api/v1/cdr?format=jsonl", apitest.AdminToken, nil).Body)), "\n")
	if len(lines) != 2 {
		t.Fatalf("jsonl %q", lines)
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["id"] == nil {
			t.Fatalf("jsonl line %q: %v", l, err)
		}
	}
	// A range before the calls has none; bad parameters are 400.
	past := time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339)
	if js := env.Must(200, "GET", "/api/v1/cdr?to="+past, apitest.AdminToken, nil).Map(t)["records"].([]any); len(js) != 0 {
		t.Fatalf("records before the calls: %v", js)
	}
	for _, q := range []string{"format=xml", "from=yesterday", "from=" + time.Now().UTC().Format(time.RFC3339) + "&to=" + past} {
		if r := env.Do("GET", "/api/v1/cdr?"+q, apitest.AdminToken, nil); r.Status != 400 {
			t.Fatalf("%s: %d %s", q, r.Status, r.Body)
		}
	}
}
