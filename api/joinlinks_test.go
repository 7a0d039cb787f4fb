package api_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

// ---- helpers (prefixed jl: this package has many test files) -------------

// jlConv starts a conversation of alice with the others and returns its id.
func jlConv(t *testing.T, env *apitest.Env, owner apitest.User, subject string, others ...apitest.User) string {
	t.Helper()
	ids := []string{}
	for _, o := range others {
		ids = append(ids, o.ID)
	}
	return env.Must(201, "POST", "/api/v1/conversations", owner.Token, map[string]any{
		"kind": "im", "subject": subject, "participants": ids}).Map(t)["id"].(string)
}

// jlLink makes a join link; it returns the answer and the token (the last
// segment of its URL).
func jlLink(t *testing.T, env *apitest.Env, u apitest.User, convID string, body map[string]any) (map[string]any, string) {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	l := env.Must(201, "POST", "/api/v1/conversations/"+convID+"/join-links", u.Token, body).Map(t)
	raw := l["url"].(string)
	i := strings.LastIndex(raw, "/join/")
	if i < 0 {
		t.Fatalf("url %q has no /join/", raw)
	}
	return l, raw[i+len("/join/"):]
}

// jlJoin joins as a guest and returns the answer.
func jlJoin(t *testing.T, env *apitest.Env, token, name, number string, headers ...string) map[string]any {
	t.Helper()
	return env.Must(201, "POST", "/api/v1/join/"+token, "", map[string]any{"display_name": name, "number": number}, headers...).Map(t)
}

// jlGuestLegState waits until the guest's own view shows its leg in state.
func jlGuestLegState(t *testing.T, env *apitest.Env, guestToken, want string) map[string]any {
	t.Helper()
	var leg map[string]any
	env.WaitFor("guest leg "+want, 10*time.Second, func() bool {
		s := env.Must(200, "GET", "/api/v1/guest", guestToken, nil).Map(t)
		l, _ := s["leg"].(map[string]any)
		leg = l
		return l != nil && l["state"] == want
	})
	return leg
}

func jlChannelGone(t *testing.T, env *apitest.Env, legID string) {
	t.Helper()
	env.WaitFor("channel "+legID+" gone from the PBX", 10*time.Second, func() bool {
		for _, ch := range env.Emu.Channels() {
			if ch.ID == legID {
				return false
			}
		}
		return true
	})
}

func jlHasChannel(env *apitest.Env, legID string) bool {
	for _, ch := range env.Emu.Channels() {
		if ch.ID == legID {
			return true
		}
	}
	return false
}

var jlOriginateRe = regexp.MustCompile(`^/ari/channels(/[^/]+)?$`)

// jlOriginates lists the originate requests the emulator received.
func jlOriginates(env *apitest.Env) []string {
	var out []string
	for _, r := range env.Emu.Requests() {
		if r.Method == http.MethodPost && jlOriginateRe.MatchString(r.Path) {
			q, _ := url.QueryUnescape(r.Query)
			out = append(out, r.Path+"?"+q+" "+r.Body)
		}
	}
	return out
}

// jlFilesContain reports whether any file of the SQLite database (the main
// file, its WAL and shared memory) contains b.
func jlFilesContain(t *testing.T, dbPath string, b []byte) bool {
	t.Helper()
	matches, _ := filepath.Glob(dbPath + "*")
	if len(matches) == 0 {
		t.Fatalf("no database files at %s", dbPath)
	}
	for _, f := range matches {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}

// ---- the tests --------------------------------------------------------------

// A participant makes a link; a guest joins with it, is dialed into the
// conference (which they start), connects, sees only what happened since
// they joined, posts a message, and leaves. Neither token is in any log
// line, and the database holds their hashes only.
func TestJoinLink_GuestJoinsIsDialedConnectsPostsAndLeaves(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "convoice.db")
	logs := &apitest.LogBuffer{}
	env := apitest.Start(t, apitest.Options{DB: dbPath, Logs: logs})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	carol := env.AddUser("Carol", num("work", "+12025550121"))
	conv := jlConv(t, env, alice, "Quarterly plan & budget", bob)
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", alice.Token, map[string]any{"text": "before the guest came"})

	// --- Make the link: URL, expiry, e-mail, mailto.
	before := time.Now()
	link, token := jlLink(t, env, alice, conv, nil)
	if len(token) < 22 { // ≥ 128 bits in base64url
		t.Fatalf("token %d characters: too short for 128 bits", len(token))
	}
	if link["url"] != env.URL+"/join/"+token {
		t.Fatalf("url %v, want %s/join/<token>", link["url"], env.URL)
	}
	exp, _ := time.Parse(time.RFC3339, link["expires_at"].(string))
	if d := exp.Sub(before); d < 23*time.Hour+59*time.Minute || d > 24*time.Hour+time.Minute {
		t.Fatalf("default expiry %s, want 24 h", d)
	}
	if link["state"] != "active" || link["uses"] != float64(0) || link["max_uses"] != nil || link["require_admission"] != false {
		t.Fatalf("link %v", link)
	}
	subject, body, mailto := link["subject"].(string), link["body"].(string), link["mailto"].(string)
	if !strings.Contains(subject, "Quarterly plan & budget") || !strings.Contains(body, link["url"].(string)) || !strings.Contains(body, "Alice") {
		t.Fatalf("e-mail %q / %q", subject, body)
	}
	if !strings.HasPrefix(mailto, "mailto:?subject=") || strings.ContainsAny(mailto[len("mailto:?"):], " \n+") ||
		strings.Count(mailto, "&") != 1 || !strings.Contains(mailto, "%26") {
		t.Fatalf("mailto not percent-encoded: %q", mailto)
	}
	mu, err := url.Parse(mailto)
	if err != nil {
		t.Fatalf("mailto: %v", err)
	}
	if q := mu.Query(); q.Get("subject") != subject || q.Get("body") != strings.ReplaceAll(body, "\n", "\r\n") {
		t.Fatalf("mailto decodes to %q / %q", q.Get("subject"), q.Get("body"))
	}
	// A stranger cannot make, list or revoke links: the unknown-conversation answer.
	for _, r := range []apitest.Response{
		env.Do("POST", "/api/v1/conversations/"+conv+"/join-links", carol.Token, map[string]any{}),
		env.Do("GET", "/api/v1/conversations/"+conv+"/join-links", carol.Token, nil),
		env.Do("POST", "/api/v1/conversations/no-such-id/join-links", carol.Token, map[string]any{}),
	} {
		if r.Status != 404 || r.ErrorCode() != "not_found" {
			t.Fatalf("stranger: %d %s", r.Status, r.Body)
		}
	}
	if r := env.Do("DELETE", "/api/v1/join-links/"+link["id"].(string), carol.Token, nil); r.Status != 404 || r.ErrorCode() != "not_found" {
		t.Fatalf("stranger revoke: %d %s", r.Status, r.Body)
	}
	ls := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/join-links", bob.Token, nil).Map(t)["join_links"].([]any)
	if len(ls) != 1 || ls[0].(map[string]any)["id"] != link["id"] {
		t.Fatalf("list %v", ls)
	}
	if _, has := ls[0].(map[string]any)["url"]; has {
		t.Fatalf("the list shows the URL (the token is not kept): %v", ls[0])
	}

	// --- The guest page's look-up, then the join (twice, with one key).
	info := env.Must(200, "GET", "/api/v1/join/"+token, "", nil).Map(t)
	if info["subject"] != "Quarterly plan & budget" || info["invited_by"] != "Alice" || info["conversation_id"] != conv {
		t.Fatalf("info %v", info)
	}
	env.Emu.ResetRequests()
	r := env.Must(201, "POST", "/api/v1/join/"+token, "", map[string]any{"display_name": " Gina Guest ", "number": "(202) 555-0177"},
		"Idempotency-Key", "join-1")
	joined := r.Map(t)
	again := env.Must(201, "POST", "/api/v1/join/"+token, "", map[string]any{"display_name": " Gina Guest ", "number": "(202) 555-0177"},
		"Idempotency-Key", "join-1").Map(t)
	gtok := joined["guest_token"].(string)
	guest := joined["guest"].(map[string]any)
	leg := joined["leg"].(map[string]any)
	gid := guest["id"].(string)
	if again["guest_token"] != gtok || again["leg"].(map[string]any)["id"] != leg["id"] {
		t.Fatalf("a repeat with the same Idempotency-Key gave another answer:\n%v\n%v", joined, again)
	}
	if joined["conversation_id"] != conv || guest["state"] != "admitted" || guest["display_name"] != "Gina Guest" ||
		guest["number"] != "+12025550177" || leg["guest_id"] != gid || leg["number"] != "+12025550177" || joined["csrf_token"] == "" {
		t.Fatalf("join answer %s", r.Body)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == "convoice_guest" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.Path != "/api/v1/guest" || cookie.Value != gtok || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("guest cookie %+v", cookie)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("join answer Cache-Control %q", r.Header.Get("Cache-Control"))
	}

	// --- Dialed (the guest started the conference: everyone is invited), connected.
	legID := leg["id"].(string)
	connected := legState(t, env, conv, alice.Token, legID, "connected")
	if connected["guest_id"] != gid || connected["user_id"] != nil {
		t.Fatalf("leg %v", connected)
	}
	if o := jlOriginates(env); len(o) != 1 || !strings.Contains(o[0], "+12025550177") {
		t.Fatalf("originates %v: want exactly one, to the guest", o)
	}
	if !jlHasChannel(env, legID) {
		t.Fatalf("no emulator channel for the guest's leg")
	}
	conf := waitAudio(t, env, conv, alice.Token, "invitations", func(c map[string]any) bool { return len(c["invitations"].([]any)) == 2 })
	for _, u := range []apitest.User{alice, bob} {
		if inv := invitationOf(conf, u.ID); inv == nil || inv["state"] != "pending" {
			t.Fatalf("%s not invited: %v", u.Name, conf["invitations"])
		}
	}
	sess := env.Must(200, "GET", "/api/v1/guest", gtok, nil).Map(t)
	if sess["conversation"].(map[string]any)["subject"] != "Quarterly plan & budget" || sess["leg"].(map[string]any)["state"] != "connected" {
		t.Fatalf("guest session %v", sess)
	}
	// The guest is a participant (role guest).
	cv := env.Must(200, "GET", "/api/v1/conversations/"+conv, bob.Token, nil).Map(t)
	found := false
	for _, p := range cv["participants"].([]any) {
		if m := p.(map[string]any); m["guest_id"] == gid {
			found = m["role"] == "guest" && m["display_name"] == "Gina Guest" && m["user_id"] == nil
		}
	}
	if !found {
		t.Fatalf("the guest is not a participant: %v", cv["participants"])
	}

	// --- Their stream: their own events from the start, the rest from their joining on.
	gs := env.SubscribePath("/api/v1/guest/events", gtok, apitest.StreamOptions{})
	defer gs.Close()
	gs.Next(t, 10*time.Second, func(e apitest.Event) bool { return e.Type == "guest.updated" && e.Data["id"] == gid })
	gs.Next(t, 10*time.Second, func(e apitest.Event) bool {
		return e.Type == "leg.updated" && e.Data["id"] == legID && e.Data["state"] == "connected"
	})
	// Alice joins too: the guest sees her call, without her number.
	aj := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"}).Map(t)
	aleg := aj["leg"].(map[string]any)["id"].(string)
	ev := gs.Next(t, 10*time.Second, func(e apitest.Event) bool { return e.Type == "leg.updated" && e.Data["id"] == aleg })
	if ev.Data["number"] != "" || bytes.Contains(ev.Raw, []byte("2025550101")) {
		t.Fatalf("the guest sees another participant's number: %s", ev.Raw)
	}

	// --- Messages: from their joining on; they post.
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", bob.Token, map[string]any{"text": "welcome Gina"})
	gs.Next(t, 10*time.Second, func(e apitest.Event) bool { return e.Type == "message.created" && e.Data["text"] == "welcome Gina" })
	msgs := env.Must(200, "GET", "/api/v1/guest/messages", gtok, nil).Map(t)["messages"].([]any)
	if len(msgs) != 1 || msgs[0].(map[string]any)["text"] != "welcome Gina" {
		t.Fatalf("guest messages %v: want only those since joining", msgs)
	}
	// Newest first stops at the same floor.
	if newest := env.Must(200, "GET", "/api/v1/guest/messages?order=newest", gtok, nil).Map(t)["messages"].([]any); len(newest) != 1 {
		t.Fatalf("guest messages newest first %v: want only those since joining", newest)
	}
	m := env.Must(201, "POST", "/api/v1/guest/messages", gtok, map[string]any{"text": "hello from outside"}).Map(t)
	if m["guest_id"] != gid || m["author_name"] != "Gina Guest (guest)" || m["user_id"] != nil {
		t.Fatalf("guest message %v", m)
	}
	all := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/messages", alice.Token, nil).Map(t)["messages"].([]any)
	if last := all[len(all)-1].(map[string]any); last["text"] != "hello from outside" || last["guest_id"] != gid {
		t.Fatalf("alice does not see the guest's message: %v", all)
	}

	// --- The guest token opens the guest API only; a user token does not open it.
	for _, p := range []string{"/api/v1/me", "/api/v1/conversations/" + conv, "/api/v1/conversations/" + conv + "/messages", "/api/v1/invitations"} {
		if r := env.Do("GET", p, gtok, nil); r.Status != 401 {
			t.Fatalf("guest token on %s: %d %s", p, r.Status, r.Body)
		}
	}
	if r := env.Do("GET", "/api/v1/guest", alice.Token, nil); r.Status != 401 {
		t.Fatalf("user token on the guest API: %d", r.Status)
	}
	// With the cookie instead of the bearer token, writes need the CSRF header.
	req, _ := http.NewRequest("POST", env.URL+"/api/v1/guest/messages", strings.NewReader(`{"text":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(&http.Cookie{Name: "convoice_guest", Value: gtok})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("cookie write without CSRF header: %d", resp.StatusCode)
	}

	// --- The guest hangs up, is called again, then leaves.
	env.Must(204, "DELETE", "/api/v1/guest/leg", gtok, nil)
	legState(t, env, conv, alice.Token, legID, "ended")
	jlChannelGone(t, env, legID)
	redial := env.Must(201, "POST", "/api/v1/guest/leg", gtok, map[string]any{}).Map(t)
	leg2 := redial["leg"].(map[string]any)["id"].(string)
	jlGuestLegState(t, env, gtok, "connected")
	env.Must(204, "DELETE", "/api/v1/guest", gtok, nil)
	legState(t, env, conv, alice.Token, leg2, "ended")
	jlChannelGone(t, env, leg2)
	tail := gs.Rest(t, 10*time.Second)
	if len(tail) == 0 || tail[len(tail)-1].Type != "guest.updated" || tail[len(tail)-1].Data["state"] != "left" {
		t.Fatalf("the guest's stream did not end with their leaving: %v", tail)
	}
	if r := env.Do("GET", "/api/v1/guest", gtok, nil); r.Status != 401 {
		t.Fatalf("token after leaving: %d", r.Status)
	}
	if r := env.Do("POST", "/api/v1/guest/messages", gtok, map[string]any{"text": "still here?"}); r.Status != 401 {
		t.Fatalf("post after leaving: %d", r.Status)
	}
	gl := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/guests", alice.Token, nil).Map(t)["guests"].([]any)
	if len(gl) != 1 || gl[0].(map[string]any)["state"] != "left" {
		t.Fatalf("guests %v", gl)
	}
	if l := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/join-links", alice.Token, nil).Map(t)["join_links"].([]any)[0].(map[string]any); l["uses"] != float64(1) {
		t.Fatalf("uses %v, want 1 (the repeat did not count)", l["uses"])
	}

	// --- Neither token in any log line; the database holds hashes only.
	out := logs.String()
	if !strings.Contains(out, "/api/v1/join/:token") || !strings.Contains(out, "guest joined") {
		t.Fatalf("the logs were not captured (no join line):\n%s", out)
	}
	for name, secret := range map[string]string{"join-link token": token, "guest token": gtok} {
		if strings.Contains(out, secret) {
			t.Fatalf("the %s is in the logs", name)
		}
	}
	env.Stop() // checkpoint and close, so every byte is on disk
	for name, secret := range map[string]string{"join-link token": token, "guest token": gtok} {
		if jlFilesContain(t, dbPath, []byte(secret)) {
			t.Fatalf("the %s is in the database files", name)
		}
		if !jlFilesContain(t, dbPath, []byte(controller.HashSecret(secret))) {
			t.Fatalf("the %s's hash is not in the database (is the scan looking at the right files?)", name)
		}
	}
}

// With "organiser must admit", the guest waits in the lobby and nothing is
// dialed until a participant admits them; a refused guest is never dialed.
func TestGuestAdmission_NothingDialedBeforeAdmitAndRefusedNeverDialed(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	carol := env.AddUser("Carol", num("work", "+12025550121"))
	conv := jlConv(t, env, alice, "Lobby", bob)
	_, token := jlLink(t, env, alice, conv, map[string]any{"require_admission": true})
	bobStream := env.Subscribe(conv, bob.Token, "")
	defer bobStream.Close()
	env.Emu.ResetRequests()

	j1 := jlJoin(t, env, token, "Wanda Waiting", "+1 202 555 0161")
	j2 := jlJoin(t, env, token, "Rex Refused", "+1 202 555 0162")
	g1, g2 := j1["guest"].(map[string]any), j2["guest"].(map[string]any)
	t1, t2 := j1["guest_token"].(string), j2["guest_token"].(string)
	if j1["leg"] != nil || g1["state"] != "lobby" || g2["state"] != "lobby" {
		t.Fatalf("lobby joins %v / %v", j1, j2)
	}
	w := bobStream.Next(t, 5*time.Second, func(e apitest.Event) bool { return e.Type == "guest.waiting" })
	if w.Data["id"] != g1["id"] || w.Data["display_name"] != "Wanda Waiting" {
		t.Fatalf("guest.waiting %v", w.Data)
	}
	s := env.Must(200, "GET", "/api/v1/guest", t1, nil).Map(t)
	if s["guest"].(map[string]any)["state"] != "lobby" || s["leg"] != nil {
		t.Fatalf("lobby session %v", s)
	}
	if r := env.Do("GET", "/api/v1/guest/messages", t1, nil); r.Status != 403 || r.ErrorCode() != "not_admitted" {
		t.Fatalf("lobby guest reads messages: %d %s", r.Status, r.Body)
	}
	if r := env.Do("POST", "/api/v1/guest/leg", t1, map[string]any{}); r.Status != 403 || r.ErrorCode() != "not_admitted" {
		t.Fatalf("lobby guest asks to be called: %d %s", r.Status, r.Body)
	}
	// A lobby guest's stream carries their own events only.
	ls := env.SubscribePath("/api/v1/guest/events", t1, apitest.StreamOptions{})
	defer ls.Close()
	ls.Next(t, 10*time.Second, func(e apitest.Event) bool { return e.Type == "guest.waiting" && e.Data["id"] == g1["id"] })
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", alice.Token, map[string]any{"text": "said in the lobby time"})
	if o := jlOriginates(env); len(o) != 0 || len(env.Emu.Channels()) != 0 {
		t.Fatalf("something was dialed before admission: %v", o)
	}
	gl := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/guests", bob.Token, nil).Map(t)["guests"].([]any)
	if len(gl) != 2 {
		t.Fatalf("guests %v", gl)
	}

	// Strangers cannot admit; an unknown guest is not found.
	for _, r := range []apitest.Response{
		env.Do("POST", "/api/v1/conversations/"+conv+"/guests/"+g1["id"].(string)+"/admit", carol.Token, nil),
		env.Do("POST", "/api/v1/conversations/"+conv+"/guests/"+g1["id"].(string)+"/refuse", carol.Token, nil),
	} {
		if r.Status != 404 || r.ErrorCode() != "not_found" {
			t.Fatalf("stranger: %d %s", r.Status, r.Body)
		}
	}
	if r := env.Do("POST", "/api/v1/conversations/"+conv+"/guests/nope/admit", bob.Token, nil); r.Status != 404 {
		t.Fatalf("unknown guest: %d", r.Status)
	}

	// Bob refuses Rex: his session ends, nothing rings, ever.
	ref := env.Must(200, "POST", "/api/v1/conversations/"+conv+"/guests/"+g2["id"].(string)+"/refuse", bob.Token, nil).Map(t)
	if ref["guest"].(map[string]any)["state"] != "refused" || ref["leg"] != nil {
		t.Fatalf("refuse %v", ref)
	}
	if r := env.Do("GET", "/api/v1/guest", t2, nil); r.Status != 401 {
		t.Fatalf("refused guest's token: %d", r.Status)
	}
	for _, action := range []string{"admit", "refuse"} {
		if r := env.Do("POST", "/api/v1/conversations/"+conv+"/guests/"+g2["id"].(string)+"/"+action, alice.Token, nil); r.Status != 409 || r.ErrorCode() != "guest_not_waiting" {
			t.Fatalf("%s after refusal: %d %s", action, r.Status, r.Body)
		}
	}

	// Alice admits Wanda: now (and only now) her number is dialed.
	adm := env.Must(200, "POST", "/api/v1/conversations/"+conv+"/guests/"+g1["id"].(string)+"/admit", alice.Token, nil,
		"Idempotency-Key", "admit-wanda").Map(t)
	leg := adm["leg"].(map[string]any)
	if adm["guest"].(map[string]any)["state"] != "admitted" || leg["number"] != "+12025550161" || leg["guest_id"] != g1["id"] {
		t.Fatalf("admit %v", adm)
	}
	ls.Next(t, 10*time.Second, func(e apitest.Event) bool {
		return e.Type == "guest.updated" && e.Data["id"] == g1["id"] && e.Data["state"] == "admitted"
	})
	ls.Next(t, 10*time.Second, func(e apitest.Event) bool { return e.Type == "leg.updated" && e.Data["guest_id"] == g1["id"] })
	legState(t, env, conv, alice.Token, leg["id"].(string), "connected")
	// What was said while she waited is not hers to read.
	if msgs := env.Must(200, "GET", "/api/v1/guest/messages", t1, nil).Map(t)["messages"].([]any); len(msgs) != 0 {
		t.Fatalf("the admitted guest sees messages from before: %v", msgs)
	}
	o := jlOriginates(env)
	if len(o) != 1 || !strings.Contains(o[0], "2025550161") {
		t.Fatalf("originates %v: want exactly Wanda's", o)
	}
	for _, r := range env.Emu.Requests() {
		if strings.Contains(r.Path+r.Query+r.Body, "2025550162") {
			t.Fatalf("the refused guest's number reached the PBX: %+v", r)
		}
	}
	// The lobby stream never carried anything from before her admission.
	ls.Close()
	for _, e := range ls.Rest(t, 5*time.Second) {
		if e.Type == "message.created" {
			t.Fatalf("the lobby guest's stream carried a message from before: %v", e.Data)
		}
	}
}

// Revoking a link ends the session of every guest who came with it and
// hangs up their call.
func TestJoinLinkRevoke_EndsTheGuestSessionAndHangsUpTheirLeg(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	conv := jlConv(t, env, alice, "Revocable", bob)
	link, token := jlLink(t, env, alice, conv, nil)
	j := jlJoin(t, env, token, "Ted Temporary", "+12025550171")
	gtok := j["guest_token"].(string)
	legID := j["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, legID, "connected")
	if !jlHasChannel(env, legID) {
		t.Fatalf("no emulator channel for the guest")
	}
	gs := env.SubscribePath("/api/v1/guest/events", gtok, apitest.StreamOptions{})
	defer gs.Close()
	gs.Next(t, 10*time.Second, func(e apitest.Event) bool { return e.Type == "leg.updated" && e.Data["state"] == "connected" })

	env.Must(204, "DELETE", "/api/v1/join-links/"+link["id"].(string), bob.Token, nil)
	jlChannelGone(t, env, legID)
	l := legState(t, env, conv, alice.Token, legID, "ended")
	if l["end_reason"] != "the join link was withdrawn" {
		t.Fatalf("leg %v", l)
	}
	if r := env.Do("GET", "/api/v1/guest", gtok, nil); r.Status != 401 {
		t.Fatalf("guest token after revoke: %d %s", r.Status, r.Body)
	}
	tail := gs.Rest(t, 10*time.Second)
	if len(tail) == 0 || tail[len(tail)-1].Type != "guest.updated" || tail[len(tail)-1].Data["state"] != "ended" {
		t.Fatalf("the guest's stream did not end with the revocation: %v", tail)
	}
	if r := env.Do("POST", "/api/v1/join/"+token, "", map[string]any{"display_name": "Ted", "number": "+12025550171"}); r.Status != 404 || r.ErrorCode() != "join_link_invalid" {
		t.Fatalf("join with a revoked link: %d %s", r.Status, r.Body)
	}
	ll := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/join-links", alice.Token, nil).Map(t)["join_links"].([]any)[0].(map[string]any)
	if ll["state"] != "revoked" || ll["revoked_at"] == nil {
		t.Fatalf("link after revoke %v", ll)
	}
	env.Must(204, "DELETE", "/api/v1/join-links/"+link["id"].(string), alice.Token, nil) // again: no change
	// Both ends of the link's life are in the audit log, by whom, never with the token.
	for action, who := range map[string]string{"join_link.create": alice.ID, "join_link.revoke": bob.ID} {
		r := env.Must(200, "GET", "/api/v1/audit?conversation_id="+conv+"&action="+action, apitest.AdminToken, nil)
		es := r.Map(t)["entries"].([]any)
		if len(es) != 1 || es[0].(map[string]any)["target_id"] != link["id"] || es[0].(map[string]any)["actor_id"] != who {
			t.Fatalf("audit %s: %s", action, r.Body)
		}
		if strings.Contains(string(r.Body), token) {
			t.Fatalf("the token is in the audit log")
		}
	}
	cv := env.Must(200, "GET", "/api/v1/conversations/"+conv, alice.Token, nil).Map(t)
	for _, p := range cv["participants"].([]any) {
		if m := p.(map[string]any); m["role"] == "guest" && m["left_at"] == nil {
			t.Fatalf("the revoked guest is still a present participant: %v", m)
		}
	}
}

// Expired, revoked, used-up and unknown tokens give the very same answer;
// expiry and max_uses are enforced.
func TestJoinLinkInvalidTokens_ExpiredRevokedUsedUpUnknownAnswerAlike(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	conv := jlConv(t, env, alice, "Tokens")
	expiring, expTok := jlLink(t, env, alice, conv, map[string]any{"expires_in_s": 1})
	_, onceTok := jlLink(t, env, alice, conv, map[string]any{"max_uses": 1, "require_admission": true})
	revoked, revTok := jlLink(t, env, alice, conv, nil)
	env.Must(204, "DELETE", "/api/v1/join-links/"+revoked["id"].(string), alice.Token, nil)
	unknown := controller.NewSecret()

	// Input is checked before the token: a bad body says so whatever the token.
	if r := env.Do("POST", "/api/v1/join/"+unknown, "", map[string]any{"display_name": "", "number": "+12025550199"}); r.Status != 400 || r.ErrorCode() != "invalid_display_name" {
		t.Fatalf("bad name: %d %s", r.Status, r.Body)
	}
	jlJoin(t, env, onceTok, "Una Once", "+12025550181") // the one use
	env.WaitFor("the short link to expire", 10*time.Second, func() bool {
		for _, l := range env.Must(200, "GET", "/api/v1/conversations/"+conv+"/join-links", alice.Token, nil).Map(t)["join_links"].([]any) {
			if m := l.(map[string]any); m["id"] == expiring["id"] {
				return m["state"] == "expired"
			}
		}
		return false
	})
	var first, firstGet apitest.Response
	for name, tok := range map[string]string{"expired": expTok, "used up": onceTok, "revoked": revTok, "unknown": unknown} {
		r := env.Do("POST", "/api/v1/join/"+tok, "", map[string]any{"display_name": "Late Larry", "number": "+12025550191"})
		if r.Status != 404 || r.ErrorCode() != "join_link_invalid" {
			t.Fatalf("%s token: %d %s", name, r.Status, r.Body)
		}
		if first.Body == nil {
			first = r
		} else if !bytes.Equal(r.Body, first.Body) || r.Header.Get("Content-Type") != first.Header.Get("Content-Type") {
			t.Fatalf("%s token answers differently:\n%s\n%s", name, r.Body, first.Body)
		}
		g := env.Do("GET", "/api/v1/join/"+tok, "", nil)
		if firstGet.Body == nil {
			firstGet = g
		}
		if g.Status != 404 || g.ErrorCode() != "join_link_invalid" || !bytes.Equal(g.Body, firstGet.Body) {
			t.Fatalf("%s token look-up answers differently: %d %s", name, g.Status, g.Body)
		}
	}
	if len(env.Emu.Channels()) != 0 || len(jlOriginates(env)) != 0 {
		t.Fatalf("an invalid token dialed something")
	}
	// Only the one use was counted.
	for _, l := range env.Must(200, "GET", "/api/v1/conversations/"+conv+"/join-links", alice.Token, nil).Map(t)["join_links"].([]any) {
		m := l.(map[string]any)
		if m["max_uses"] == float64(1) && (m["uses"] != float64(1) || m["state"] != "used_up") {
			t.Fatalf("max_uses link %v", m)
		}
	}
}

// Join attempts are limited per client address, in the database (a second
// convoice on the same database refuses the same address), and a forged
// X-Forwarded-For does not get around it.
func TestJoinRateLimit_PerClientAddressAcrossReplicas(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "convoice.db")
	env := apitest.Start(t, apitest.Options{DB: dbPath})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	conv := jlConv(t, env, alice, "Limits")
	_, token := jlLink(t, env, alice, conv, map[string]any{"require_admission": true})
	for i := 0; i < controller.JoinRateLimit; i++ {
		if r := env.Do("POST", "/api/v1/join/"+controller.NewSecret(), "", map[string]any{"display_name": "Guesser", "number": "+12025550199"}); r.Status != 404 {
			t.Fatalf("attempt %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	check := func(e *apitest.Env, what string, headers ...string) {
		t.Helper()
		r := e.Do("POST", "/api/v1/join/"+token, "", map[string]any{"display_name": "Real Guest", "number": "+12025550198"}, headers...)
		if r.Status != 429 || r.ErrorCode() != "rate_limited" {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
		ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
		// The sliding window counts in 5 s buckets: free again at most a
		// window and a bucket after the oldest attempt.
		if err != nil || ra < 1 || ra > int(controller.JoinRateWindow/time.Second)+5 {
			t.Fatalf("%s: Retry-After %q", what, r.Header.Get("Retry-After"))
		}
	}
	check(env, "the 11th attempt, with a valid token")
	check(env, "a forged X-Forwarded-For", "X-Forwarded-For", "203.0.113.9", "X-Real-IP", "203.0.113.9")
	if r := env.Do("GET", "/api/v1/join/"+token, "", nil); r.Status != 429 {
		t.Fatalf("look-up past the limit: %d", r.Status)
	}
	// Another replica on the same database sees the same count.
	other := apitest.Start(t, apitest.Options{DB: dbPath})
	check(other, "the same address at another replica")
	gl := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/guests", alice.Token, nil).Map(t)["guests"].([]any)
	if len(gl) != 0 {
		t.Fatalf("a rate-limited join made a guest: %v", gl)
	}
}

// A guest session ends when its conversation ends.
func TestGuestSession_EndsWithTheConversation(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	conv := jlConv(t, env, alice, "Short-lived")
	_, token := jlLink(t, env, alice, conv, map[string]any{"require_admission": true})
	j := jlJoin(t, env, token, "Erin Ending", "+12025550151")
	gtok := j["guest_token"].(string)
	env.Must(200, "GET", "/api/v1/guest", gtok, nil)
	// No API ends a conversation yet; the store does what that will do.
	if err := env.Store.EndConversation(context.Background(), conv, time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if r := env.Do("GET", "/api/v1/guest", gtok, nil); r.Status != 401 {
		t.Fatalf("guest token after the conversation ended: %d", r.Status)
	}
	gl := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/guests", alice.Token, nil).Map(t)["guests"].([]any)
	if len(gl) != 1 || gl[0].(map[string]any)["state"] != "ended" {
		t.Fatalf("guest after the conversation ended: %v", gl)
	}
	if r := env.Do("POST", "/api/v1/join/"+token, "", map[string]any{"display_name": "Late", "number": "+12025550152"}); r.Status != 404 || r.ErrorCode() != "join_link_invalid" {
		t.Fatalf("join into an ended conversation: %d %s", r.Status, r.Body)
	}
}

// The guest page is served for any token, with a strict CSP, no caching,
// and no referrer; the access log names the route, never the token.
func TestGuestPage_ServedWithStrictHeadersAndTokenNotLogged(t *testing.T) {
	logs := &apitest.LogBuffer{}
	env := apitest.Start(t, apitest.Options{NoPBX: true, Logs: logs})
	tok := controller.NewSecret()
	r := env.Must(200, "GET", "/join/"+tok, "", nil)
	h := r.Header
	if !strings.Contains(string(r.Body), `src="/static/join.js"`) || strings.Contains(string(r.Body), "<script>") || strings.Contains(string(r.Body), "style=") {
		t.Fatalf("page: %s", r.Body)
	}
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") || h.Get("Cache-Control") != "no-store" ||
		h.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("headers %v", h)
	}
	for _, f := range []string{"/static/join.js", "/static/join.css"} {
		env.Must(200, "GET", f, "", nil)
	}
	out := logs.String()
	if !strings.Contains(out, "route=/join/:token") {
		t.Fatalf("no access-log line for the page:\n%s", out)
	}
	if strings.Contains(out, tok) {
		t.Fatalf("the token is in the logs")
	}
}
