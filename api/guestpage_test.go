package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/emulator/emuphone"
)

// TestGuestPage_JoinByLinkInChromium drives the guest page of a join link in
// Debian's headless chromium: the guest opens the URL, gives a name and a
// number, clicks "Call me", and sees their phone "ringing" then
// "connected"; reads and posts a message; hangs up; leaves. A second guest,
// on a link that needs admission, waits in the lobby until a participant
// admits them, is called, and sees the session end when the link is
// revoked. No script error, no CSP refusal, and no token a script can read.
func TestGuestPage_JoinByLinkInChromium(t *testing.T) {
	chromium := findChromium(t)
	env := apitest.Start(t, apitest.Options{
		// Phones ring long enough for the page (and the test) to show "ringing".
		Timing: emuphone.Timing{Ring: 1500 * time.Millisecond, Hold: 2 * time.Second, SlowRing: 3 * time.Second},
	})
	alice := env.AddUser("Alice Archer", num("work", "+12025550101"))
	bob := env.AddUser("Bob Baker", num("work", "+12025550111"))
	conv := jlConv(t, env, alice, "Vendor review", bob)
	_, token := jlLink(t, env, alice, conv, nil)
	lobbyLink, lobbyToken := jlLink(t, env, alice, conv, map[string]any{"require_admission": true})

	b := gpStartBrowser(t, chromium)

	// --- Guest 1: open the link, give name and number, Call me.
	p := b.open(t, "guest")
	p.do("open the join link", chromedp.Navigate(env.URL+"/join/"+token))
	p.waitText("join-subject", "Vendor review")
	p.waitText("join-from", "Alice Archer")
	p.waitHidden("admission-note")
	p.shot("form")
	p.do("type the name", chromedp.SendKeys(gpTid("name-input"), "Paula Page"))
	p.do("type the number", chromedp.SendKeys(gpTid("number-input"), "+1 202 555 0144"))
	p.do("click Call me", chromedp.Click(gpTid("call-me")))
	p.waitText("session-name", "Paula Page")
	p.waitJS(`the call shows "ringing"`, `(() => { const e = `+gpElem("call-state")+`;
		return !!e && e.dataset.state === "ringing" && document.querySelector('[data-testid="call-text"]').textContent.includes("ringing"); })()`)
	p.shot("ringing")
	p.waitState("call-state", "connected")
	p.waitText("call-text", "Connected")
	p.waitVisible("hangup")
	legs := legsOfGuest(t, env, conv, alice.Token)
	if len(legs) != 1 || legs[0]["state"] != "connected" || legs[0]["number"] != "+12025550144" {
		t.Fatalf("the guest's leg as participants see it: %v", legs)
	}
	if leak := gpEval[bool](p, `document.cookie !== "" || localStorage.length > 0 || sessionStorage.length > 0`); leak {
		t.Fatalf("the page keeps something a script can read (cookie not HttpOnly, or storage)")
	}

	// --- Messages both ways.
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", bob.Token, map[string]any{"text": "Welcome, Paula"})
	p.waitText("messages", "Welcome, Paula")
	p.do("type a message", chromedp.SendKeys(gpTid("message-input"), "Thanks, glad to be here"))
	p.do("send it", chromedp.Click(gpTid("send")))
	p.waitText("messages", "Thanks, glad to be here")
	p.shot("connected-with-messages")
	env.WaitFor("alice to see the guest's message", 10*time.Second, func() bool {
		ms := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/messages", alice.Token, nil).Map(t)["messages"].([]any)
		last := ms[len(ms)-1].(map[string]any)
		return last["text"] == "Thanks, glad to be here" && last["author_name"] == "Paula Page (guest)"
	})

	// --- Hang up: the call ends, "Call me again" is offered; then leave.
	p.do("click Hang up", chromedp.Click(gpTid("hangup")))
	p.waitState("call-state", "ended")
	p.waitVisible("call-again")
	p.do("click Leave", chromedp.Click(gpTid("leave")))
	p.waitText("ended-title", "You have left")
	if s := legsOfGuest(t, env, conv, alice.Token); s[0]["state"] != "ended" {
		t.Fatalf("after hang-up the leg is %v", s[0]["state"])
	}

	// --- Guest 2: the lobby, admission, the call, then the link is revoked.
	q := b.open(t, "lobby guest")
	q.do("open the admission link", chromedp.Navigate(env.URL+"/join/"+lobbyToken))
	q.waitVisible("admission-note")
	q.do("type the name", chromedp.SendKeys(gpTid("name-input"), "Larry Lobby"))
	q.do("type the number", chromedp.SendKeys(gpTid("number-input"), "202-555-0145"))
	q.do("click Call me", chromedp.Click(gpTid("call-me")))
	q.waitText("lobby", "Waiting for the organiser to admit you")
	q.shot("lobby")
	var guestID string
	for _, g := range env.Must(200, "GET", "/api/v1/conversations/"+conv+"/guests", bob.Token, nil).Map(t)["guests"].([]any) {
		if m := g.(map[string]any); m["display_name"] == "Larry Lobby" && m["state"] == "lobby" {
			guestID = m["id"].(string)
		}
	}
	if guestID == "" {
		t.Fatalf("the lobby guest is not listed as waiting")
	}
	for _, o := range jlOriginates(env) {
		if strings.Contains(o, "2025550145") {
			t.Fatalf("the lobby guest was dialed before admission: %s", o)
		}
	}
	env.Must(200, "POST", "/api/v1/conversations/"+conv+"/guests/"+guestID+"/admit", bob.Token, nil)
	q.waitHidden("lobby")
	q.waitState("call-state", "connected")
	env.Must(204, "DELETE", "/api/v1/join-links/"+lobbyLink["id"].(string), alice.Token, nil)
	q.waitText("ended-text", "withdrawn")

	for _, pg := range []*gpPage{p, q} {
		if probs := pg.problems(); len(probs) > 0 {
			t.Fatalf("%s: problems on the page:\n%s", pg.name, strings.Join(probs, "\n"))
		}
	}
}

// legsOfGuest lists the guest legs of the conversation's newest conference.
func legsOfGuest(t *testing.T, env *apitest.Env, convID, token string) []map[string]any {
	t.Helper()
	conf := env.Must(200, "GET", "/api/v1/conversations/"+convID+"/audio?last=true", token, nil).Map(t)
	var out []map[string]any
	for _, l := range conf["legs"].([]any) {
		if m := l.(map[string]any); m["guest_id"] != nil {
			out = append(out, m)
		}
	}
	return out
}

// ---- a small chromedp harness (gp: guest page) ------------------------------

type gpBrowser struct{ ctx context.Context }

func gpStartBrowser(t *testing.T, chromium string) *gpBrowser {
	t.Helper()
	return &gpBrowser{ctx: launchChromium(t, chromium, 480, 900)}
}

// gpPage is one tab in its own browser context (its own cookies).
type gpPage struct {
	t    *testing.T
	name string
	ctx  context.Context
	pageProblems
}

func (b *gpBrowser) open(t *testing.T, name string) *gpPage {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	p := &gpPage{t: t, name: name, ctx: ctx}
	if err := chromedp.Listen(ctx, p.onEvent); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	return p
}

const gpWait = 20 * time.Second

func gpTid(id string) chromedp.CSS { return chromedp.CSS(`[data-testid="` + id + `"]`) }

func gpElem(id string) string { return `document.querySelector('[data-testid="` + id + `"]')` }

// shot saves a screenshot to $CONVOICE_GUEST_SHOTS (when set), to look at
// the page.
func (p *gpPage) shot(what string) {
	dir := os.Getenv("CONVOICE_GUEST_SHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(p.name+"-"+what, " ", "-")+".png"), png, 0o644)
	}
	if err != nil {
		p.t.Logf("screenshot %s: %v", what, err)
	}
}

func (p *gpPage) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, gpWait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.fail(what, err)
	}
}

func (p *gpPage) fail(what string, err error) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	p.t.Fatalf("%s: %s: %v\n--- page ---\n%s\n--- problems ---\n%s", p.name, what, err, text, strings.Join(p.problems(), "\n"))
}

func (p *gpPage) waitJS(what, predicate string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, gpWait+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate,
		chromedp.WithPollingInterval(30*time.Millisecond), chromedp.WithPollingTimeout(gpWait)))
	if err != nil {
		p.fail("waiting until "+what, err)
	}
}

func (p *gpPage) waitState(id, state string) {
	p.t.Helper()
	b, _ := json.Marshal(state)
	p.waitJS(fmt.Sprintf("%s is %q", id, state),
		fmt.Sprintf(`(() => { const e = %s; return !!e && e.dataset.state === %s && e.getClientRects().length > 0; })()`, gpElem(id), b))
}

func (p *gpPage) waitText(id, sub string) {
	p.t.Helper()
	b, _ := json.Marshal(sub)
	p.waitJS(fmt.Sprintf("%s shows %q", id, sub),
		fmt.Sprintf(`(() => { const e = %s; return !!e && e.textContent.includes(%s) && e.getClientRects().length > 0; })()`, gpElem(id), b))
}

func (p *gpPage) waitVisible(id string) {
	p.t.Helper()
	p.waitJS(id+" is visible", fmt.Sprintf(`(() => { const e = %s; return !!e && e.getClientRects().length > 0; })()`, gpElem(id)))
}

func (p *gpPage) waitHidden(id string) {
	p.t.Helper()
	p.waitJS(id+" is hidden", fmt.Sprintf(`(() => { const e = %s; return !e || e.getClientRects().length === 0; })()`, gpElem(id)))
}

func gpEval[T any](p *gpPage, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, gpWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.fail("evaluate "+expr, err)
	}
	return v
}
