package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/emuphone"
)

// TestOIDCSignIn_GivenSCIMPerson_WhenSignedInThroughTheProvider_ThenCalledAndEndedByDeactivation
// is the acceptance: a person provisioned by SCIM with a work and a
// mobile number signs in through OpenID Connect in real Chromium against a
// real OpenID Provider (zitadel's op) on 127.0.0.1 — no token is ever typed
// — sees Phone → Join Conference Now Using → Work / Mobile, and is called
// (the emulated PBX gets the originate). Deactivating them by SCIM ends the
// call, closes their event stream (the page loses it) and their session
// (its cookie gets 401) within seconds.
func TestOIDCSignIn_GivenSCIMPerson_WhenSignedInThroughTheProvider_ThenCalledAndEndedByDeactivation(t *testing.T) {
	chromium := findChromium(t)
	idp := apitest.StartTestOP(t, "convoice-test", "client-secret-0123456789")
	env := scimEnv(t, apitest.Options{
		Timing: emuphone.Timing{Ring: 300 * time.Millisecond, Hold: 2 * time.Second, SlowRing: 3 * time.Second},
		Identity: api.IdentityConfig{OIDC: api.OIDCConfig{Issuer: idp.Issuer, ClientID: idp.ClientID,
			ClientSecret: idp.ClientSecret, Name: "Test IdP"}},
		PrincipalRecheck: time.Second,
	})
	idp.AllowRedirect(env.URL + "/auth/oidc/callback")

	owner := env.AddUser("Olga Owner", controller.NumberInput{Label: "work", Number: "+1 202 555 0151"})
	pat := scim(t, env, 201, "POST", "/Users", entraUser("pat.sso@example.com", "Pat", "Single-Sign-On", "+1 202 555 0176", "+1 202 555 0177"))
	patID := pat["id"].(string)
	idp.AddUser(apitest.TestOPUser{Subject: "pat-oid", Email: "pat.sso@example.com", Name: "Pat at the IdP"})
	idp.AddUser(apitest.TestOPUser{Subject: "stranger", Email: "stranger@example.com", Name: "Stranger"})
	var conv struct {
		ID string `json:"id"`
	}
	env.Must(201, "POST", "/api/v1/conversations", owner.Token,
		map[string]any{"kind": "im", "subject": "Vendor review", "participants": []string{patID}}).JSON(t, &conv)

	ui := startBrowser(t, chromium, t.TempDir())

	// Someone the provider knows but convoice does not gets a clear page.
	ps := ui.open(t, "stranger", env.URL, 1100, 800)
	ps.do("open convoice", chromedp.Navigate(env.URL+"/"))
	ps.waitText("oidc-signin", "Sign in with Test IdP")
	ps.click("oidc-signin")
	waitAcross(ps, "the provider's page", textShown("op-user-stranger", "Sign in as Stranger"))
	ps.click("op-user-stranger")
	waitAcross(ps, "the refusal page", textShown("signin-failed-reason", "stranger@example.com has no convoice account"))

	p := ui.open(t, "Pat", env.URL, 1280, 860)
	p.do("open convoice", chromedp.Navigate(env.URL+"/"))
	p.waitVisible("token-input") // the token form stays, for demos and machines
	p.waitText("oidc-signin", "Sign in with Test IdP")
	p.click("oidc-signin")
	waitAcross(p, "the provider's page", textShown("op-user-pat-oid", "Sign in as Pat"))
	if u := eval[string](p, `location.href`); !strings.HasPrefix(u, idp.Issuer+"/login") {
		t.Fatalf("the button led to %s, not the provider's login", u)
	}
	p.click("op-user-pat-oid")
	waitAcross(p, "signed in", textShown("whoami", "Pat Single-Sign-On"))
	if leak := eval[bool](p, `document.cookie.includes("cvs1_")`); leak {
		t.Fatal("the session id is readable by page scripts")
	}

	// Phone → Join Conference Now Using → Work / Mobile; Work rings.
	p.waitVisible("conv-" + conv.ID)
	p.click("conv-" + conv.ID)
	p.waitState("stream-status", "live")
	p.click("phone-button")
	p.click("join-using")
	p.waitText("join-using-work", "+1 202 555 0176")
	p.waitText("join-using-mobile", "+1 202 555 0177")
	p.click("join-using-work")
	p.waitInCall("audio-status-" + patID)
	var calls []string
	env.WaitFor("the PBX dials Pat's work number", 10*time.Second, func() bool {
		calls = nil
		for _, l := range lastLegs(t, env, conv.ID, owner.Token) {
			if l.UserID == patID && l.State == "connected" {
				calls = append(calls, l.Number)
			}
		}
		return len(calls) == 1 && env.PBXCalls() == 1
	})
	if calls[0] != "+12025550176" {
		t.Fatalf("Pat was called on %s, want the work number +12025550176", calls[0])
	}
	var cookie string
	p.do("read the session cookie", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{env.URL}})
		for _, c := range res.Cookies {
			if c.Name == "convoice_session" {
				cookie = c.Value
				if !c.HTTPOnly {
					t.Errorf("the session cookie is not HttpOnly")
				}
			}
		}
		return err
	}))
	if !strings.HasPrefix(cookie, controller.SessionPrefix) {
		t.Fatalf("session cookie %q is not a web session", cookie)
	}
	env.Must(200, "GET", "/api/v1/me", "", nil, "Cookie", "convoice_session="+cookie)

	// Entra ID deactivates Pat.
	start := time.Now()
	scim(t, env, 200, "PATCH", "/Users/"+patID, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "Replace", "path": "active", "value": "False"}},
	})
	env.WaitFor("Pat's call ended", 5*time.Second, func() bool {
		for _, l := range lastLegs(t, env, conv.ID, owner.Token) {
			if l.UserID == patID && l.State != "ended" {
				return false
			}
		}
		return env.PBXCalls() == 0
	})
	p.waitJS("the page loses its event stream", `document.querySelector('[data-testid="stream-status"]') === null || document.querySelector('[data-testid="stream-status"]').dataset.state !== "live" || !document.getElementById('signin-view').hidden`)
	if r := env.Do("GET", "/api/v1/me", "", nil, "Cookie", "convoice_session="+cookie); r.Status != 401 {
		t.Fatalf("the session after deactivation: status %d, want 401", r.Status)
	}
	p.waitVisible("token-input") // the page noticed and shows sign-in again
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("deactivation took %v to reach the page", d)
	}
	t.Logf("deactivation: call, stream and session ended within %v", time.Since(start))

	// Signing in again is refused with a clear page.
	p.do("open convoice", chromedp.Navigate(env.URL+"/"))
	waitAcross(p, "the sign-in page", textShown("oidc-signin", "Sign in with Test IdP"))
	p.click("oidc-signin")
	waitAcross(p, "the provider's page", textShown("op-user-pat-oid", "Sign in as Pat"))
	p.click("op-user-pat-oid")
	waitAcross(p, "the refusal page", textShown("signin-failed-reason", "deactivated"))
	if problems := p.problems(); len(problems) > 0 {
		t.Logf("page problems (informational): %v", problems)
	}
}

// lastLegs lists the legs of the conversation's latest conference, also
// after it ended.
func lastLegs(t *testing.T, env *apitest.Env, convID, token string) []legRow {
	t.Helper()
	var a struct {
		Legs []legRow `json:"legs"`
	}
	env.Must(200, "GET", "/api/v1/conversations/"+convID+"/audio?last=true", token, nil).JSON(t, &a)
	return a.Legs
}

// waitAcross is waitJS across page loads (a sign-in goes through the
// provider and back): a poll cut short by a navigation starts again.
func waitAcross(p *page, what, predicate string) {
	p.t.Helper()
	deadline := time.Now().Add(uiWait)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate,
			chromedp.WithPollingInterval(40*time.Millisecond), chromedp.WithPollingTimeout(4*time.Second)))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.fail("waiting until "+what, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func textShown(id, sub string) string {
	return fmt.Sprintf(`(() => { const e = %s; return !!e && e.textContent.includes(%s) && e.getClientRects().length > 0; })()`, elem(id), jsStr(sub))
}
