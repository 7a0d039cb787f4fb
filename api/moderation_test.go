package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
)

// The admin token belongs to no user and is in no conversation, yet admins
// moderate: they can end any conversation's audio.
func TestAdminTokenEndsAnyAudio(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	a := env.AddUser("Alice", num("work", "+12025550101"))
	conv := env.Must(201, "POST", "/api/v1/conversations", a.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
	leg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", a.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)
	legState(t, env, conv, a.Token, leg["id"].(string), "connected")
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", apitest.AdminToken, nil)
	legState(t, env, conv, a.Token, leg["id"].(string), "ended")
	env.WaitFor("nothing left on the PBX", 5*time.Second, func() bool { return env.PBXCalls() == 0 && len(env.PBXRooms()) == 0 })
	// An unknown conversation is still unknown to the admin.
	if r := env.Do("DELETE", "/api/v1/conversations/00000000-0000-4000-8000-000000000000/audio", apitest.AdminToken, nil); r.Status != 404 {
		t.Fatalf("admin ending unknown audio: %d %s", r.Status, r.Body)
	}
}

// Behind a TLS-terminating proxy the cookie is Secure when convoice is
// published at an https:// URL.
func TestSessionCookieIsSecureWhenPublishedOverHTTPS(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true, PublicURL: "https://convoice.example.com"})
	a := env.AddUser("Alice")
	r := env.Must(201, "POST", "/api/v1/session", "", map[string]any{"token": a.Token})
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == "convoice_session" && !c.Secure {
			t.Fatalf("cookie not Secure with an https public URL: %+v", c)
		}
	}
}
