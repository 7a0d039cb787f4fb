package api_test

import (
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

// A representative run of the API — sign-in, dials, moderation, join
// links and guests, bad input, and every kind of failed authentication —
// with every log line captured at debug level: no token, password or
// join-link token may appear in any of them, nor in the audit log.
func TestSecret_NoTokenOrPasswordInAnyLogLineOrAuditEntry(t *testing.T) {
	logs := &apitest.LogBuffer{}
	env := apitest.Start(t, apitest.Options{Logs: logs})
	secrets := map[string]string{"admin token": apitest.AdminToken, "ARI password": "emu-secret"}
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	secrets["alice's token"], secrets["bob's token"] = alice.Token, bob.Token

	// The web UI's sign-in, cookie and CSRF token.
	sess := env.Must(201, "POST", "/api/v1/session", "", map[string]any{"token": alice.Token})
	var s struct {
		CSRFToken string `json:"csrf_token"`
	}
	sess.JSON(t, &s)
	secrets["csrf token"] = s.CSRFToken
	cookie := "convoice_session=" + alice.Token
	env.Must(200, "GET", "/api/v1/me", "", nil, "Cookie", cookie)
	env.Must(403, "POST", "/api/v1/conversations", "", map[string]any{"kind": "im"}, "Cookie", cookie) // no CSRF header
	conv := env.Must(201, "POST", "/api/v1/conversations", "", map[string]any{"kind": "im", "participants": []string{bob.ID}},
		"Cookie", cookie, "X-CSRF-Token", s.CSRFToken).Map(t)["id"].(string)

	// Dials, refusals, moderation.
	aLeg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"},
		"Idempotency-Key", "k1").Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, aLeg, "connected")
	env.Must(403, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, bob, conv)+"/redirect", bob.Token, map[string]any{"number": "+1 900 555 0123"})
	env.Must(400, "POST", "/api/v1/conversations/"+conv+"/audio", bob.Token, map[string]any{"number": "+12025550111&Local/x@evil"})
	bLeg := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, bob, conv)+"/accept", bob.Token, map[string]any{}).
		Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, bLeg, "connected")
	env.Must(200, "POST", "/api/v1/legs/"+bLeg+"/mute", alice.Token, nil)
	env.Must(400, "POST", "/api/v1/conversations/"+conv+"/messages", alice.Token, `{"text":`)

	// A join link, a guest who is called, the link revoked.
	link := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/join-links", alice.Token, map[string]any{}).Map(t)
	joinToken := path.Base(link["url"].(string))
	secrets["join-link token"] = joinToken
	if r := env.Do("GET", "/join/"+joinToken, "", nil); r.Status != 200 {
		t.Fatalf("guest page: %d", r.Status)
	}
	env.Must(200, "GET", "/api/v1/join/"+joinToken, "", nil)
	joined := env.Must(201, "POST", "/api/v1/join/"+joinToken, "", map[string]any{"display_name": "Gus", "number": "+12025550161"}).Map(t)
	guestToken := joined["guest_token"].(string)
	secrets["guest token"] = guestToken
	env.Must(200, "GET", "/api/v1/guest", guestToken, nil)
	env.Must(204, "DELETE", "/api/v1/join-links/"+link["id"].(string), alice.Token, nil)
	if r := env.Do("POST", "/api/v1/join/"+joinToken, "", map[string]any{"display_name": "Eve", "number": "+12025550162"}); r.Status < 400 {
		t.Fatalf("a revoked link let a guest in: %d", r.Status)
	}
	if r := env.Do("GET", "/api/v1/join/"+joinToken[:len(joinToken)-2]+"xx", "", nil); r.Status < 400 {
		t.Fatalf("a wrong join token: %d", r.Status)
	}

	// Failed authentication of every kind.
	wrong := controller.NewSecret()
	secrets["wrong token"] = wrong
	env.Must(401, "GET", "/api/v1/me", wrong, nil)
	env.Must(401, "GET", "/api/v1/me", apitest.AdminToken+"x", nil)
	secrets["almost the admin token"] = apitest.AdminToken + "x"
	env.Must(401, "GET", "/api/v1/me", "", nil, "Cookie", "convoice_session="+wrong+"c")
	secrets["wrong cookie"] = wrong + "c"
	env.Must(401, "POST", "/api/v1/session", "", map[string]any{"token": wrong + "s"})
	secrets["wrong sign-in token"] = wrong + "s"
	env.Must(401, "GET", "/api/v1/guest", wrong+"g", nil)
	secrets["wrong guest token"] = wrong + "g"
	tok := env.Must(201, "POST", "/api/v1/users/"+alice.ID+"/tokens", alice.Token, map[string]any{"name": "laptop"}).Map(t)
	secrets["revoked token"] = tok["token"].(string)
	env.Must(204, "DELETE", "/api/v1/users/"+alice.ID+"/tokens/"+tok["id"].(string), alice.Token, nil)
	env.Must(401, "GET", "/api/v1/me", tok["token"].(string), nil)
	env.Must(401, "GET", "/api/v1/no-such-route", wrong, nil)
	req, _ := http.NewRequest("GET", env.URL+"/api/v1/me", nil)
	req.SetBasicAuth("alice", wrong+"b") // not our scheme, but it must not be logged either
	secrets["basic password"] = wrong + "b"
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	// The admin reads the audit log; it must not hold a secret either.
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", alice.Token, nil)
	audit := string(env.Must(200, "GET", "/api/v1/audit/export", apitest.AdminToken, nil).Body)

	text := logs.String()
	// The logs are there and say what happened, without the secrets.
	for _, want := range []string{"authentication failed", "sign-in failed", "component=api", "component=controller"} {
		if !strings.Contains(text, want) {
			t.Errorf("the logs lack %q: the capture is not working", want)
		}
	}
	for _, want := range []string{`"action":"auth.failed"`, `"action":"dial"`, `"action":"dial.refused"`, `"action":"leg.mute"`,
		`"action":"token.revoke"`, `"action":"audio.end"`, `"actor_kind":"guest"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("the audit log lacks %s", want)
		}
	}
	for name, secret := range secrets {
		if secret == "" {
			t.Fatalf("%s is empty", name)
		}
		for what, hay := range map[string]string{"a log line": text, "the audit log": audit} {
			if i := strings.Index(hay, secret); i >= 0 {
				start, end := max(0, strings.LastIndex(hay[:i], "\n")+1), i+len(secret)
				if j := strings.Index(hay[end:], "\n"); j >= 0 {
					end += j
				}
				t.Errorf("the %s is in %s: %s", name, what, hay[start:end])
			}
		}
	}
}
