package api_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/emuphone"
)

// The web UI as people use it (issue 18): one test per point.

// pageStubs replaces, before the app runs, what a test cannot hear or
// see — the Web Audio API, browser notifications, and whether the tab is
// hidden — with recorders: window.__calls counts oscillators started,
// notifications shown and permission requests; window.__hidden hides the tab.
const pageStubs = `(() => {
  const calls = { contexts: 0, oscillators: 0, started: 0, notifications: [], permissionAsked: 0 };
  window.__calls = calls;
  window.__hidden = false;
  Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get() { return window.__hidden; } });
  Object.defineProperty(Document.prototype, 'visibilityState', { configurable: true, get() { return window.__hidden ? 'hidden' : 'visible'; } });
  class Param { setValueAtTime() {} exponentialRampToValueAtTime() {} linearRampToValueAtTime() {} }
  class AudioNode { connect(n) { return n; } disconnect() {} }
  window.AudioContext = class {
    constructor() { calls.contexts++; this.state = 'running'; this.currentTime = 0; this.destination = new AudioNode(); }
    createOscillator() {
      calls.oscillators++;
      const o = new AudioNode();
      o.frequency = new Param();
      o.start = () => { calls.started++; };
      o.stop = () => {};
      return o;
    }
    createGain() { const g = new AudioNode(); g.gain = new Param(); return g; }
    resume() { return Promise.resolve(); }
  };
  window.webkitAudioContext = window.AudioContext;
  window.Notification = class {
    constructor(title, opts) { calls.notifications.push({ title, body: (opts && opts.body) || '' }); }
    close() {}
    static requestPermission(cb) {
      calls.permissionAsked++;
      window.Notification.permission = 'granted';
      if (cb) cb('granted');
      return Promise.resolve('granted');
    }
  };
  window.Notification.permission = 'default';
})();`

// stub installs pageStubs in the page for every document it loads.
func (p *page) stub() {
	p.t.Helper()
	p.do("install the page stubs", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: pageStubs})
		return err
	}))
}

// signIn opens the page signed in as u, on path ("/" or a conversation).
func (p *page) signIn(u apitest.User, path string) {
	p.t.Helper()
	p.do("sign in", chromedp.Navigate(p.base+path+"#token="+u.Token))
	p.waitText("whoami", u.Name)
	if path != "/" {
		p.waitState("stream-status", "live")
	}
}

// inViewport checks that an element's box is wholly inside the viewport.
func inViewport(p *page, id string) {
	p.t.Helper()
	p.waitJS(id+" is within the viewport", fmt.Sprintf(`(() => {
		const e = %s; if (!e) return false;
		const r = e.getBoundingClientRect();
		return r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth;
	})()`, elem(id)))
}

func peopleEnv(t *testing.T) *apitest.Env {
	return apitest.Start(t, apitest.Options{
		Timing: emuphone.Timing{Ring: 300 * time.Millisecond, Hold: 2 * time.Second, SlowRing: 3 * time.Second},
	})
}

func convOf(t *testing.T, env *apitest.Env, owner apitest.User, subject string, others ...apitest.User) string {
	t.Helper()
	return jlConv(t, env, owner, subject, others...)
}

func checkClean(t *testing.T, pages ...*page) {
	t.Helper()
	for _, p := range pages {
		if errs := p.problems(); len(errs) > 0 {
			t.Errorf("%s: the page reported problems:\n  %s", p.name, strings.Join(errs, "\n  "))
		}
	}
}

// Point 1: an invitation rings (Web Audio), notifies while the tab is
// hidden (permission asked only when the person asks), counts in the
// title, and shows a toast with Accept / Decline / Redirect at desktop
// and phone width with another conversation open; the sound's switch is
// remembered.
func TestWebUI_InvitationReachesYouWherever(t *testing.T) {
	chromium := findChromium(t)
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer", num("work", "+1 202 555 0101"))
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	budget := convOf(t, env, A, "Budget", B)
	other := convOf(t, env, A, "Lunch", B)
	ui := startBrowser(t, chromium, t.TempDir())

	pb := ui.open(t, "B", env.URL, 1280, 800)
	pb.stub()
	pb.signIn(B, "/ui/c/"+other)
	pb.waitVisible("sound-toggle")
	pb.waitVisible("notify-me")
	if n := eval[int](pb, `window.__calls.permissionAsked`); n != 0 {
		t.Fatalf("notification permission asked %d times on load", n)
	}
	pb.click("notify-me")
	pb.waitHidden("notify-me")
	if n := eval[int](pb, `window.__calls.permissionAsked`); n != 1 {
		t.Fatalf("Notify me asked for permission %d times, want 1", n)
	}
	pq := ui.open(t, "B-phone", env.URL, 390, 844)
	pq.stub()
	pq.signIn(B, "/ui/c/"+other)

	// The tab is hidden; Alice starts the audio of "Budget".
	eval[bool](pb, `window.__hidden = true`)
	env.Must(201, "POST", "/api/v1/conversations/"+budget+"/audio", A.Token, map[string]any{"published": "work"})
	for _, p := range []*page{pb, pq} {
		p.waitVisible("invite-toast")
		p.waitText("toast-headline", "Alice Archer invited you to the audio conference.")
		p.waitText("invite-toast", "Budget")
		p.waitVisible("toast-accept")
		p.waitVisible("toast-decline")
		p.waitVisible("toast-redirect")
		inViewport(p, "invite-toast")
		p.waitJS("the title counts the invitation", `document.title.startsWith("(1) ")`)
		p.waitText("conv-title", "Lunch") // another conversation stays open
	}
	pb.waitJS("the chime played", `window.__calls.oscillators > 0 && window.__calls.started === window.__calls.oscillators`)
	pb.waitJS("a notification was shown", `window.__calls.notifications.length === 1 && window.__calls.notifications[0].body.includes("Alice Archer")`)
	pq.waitJS("the phone page chimed", `window.__calls.started > 0`)
	if n := eval[int](pq, `window.__calls.notifications.length`); n != 0 {
		t.Fatalf("a visible tab got %d notifications", n)
	}
	pb.waitText("invite-live", "Alice Archer invited you")
	updateDocShot(t, pb.shot("invitation-toast"), "screenshot-invitation-toast.png")
	pq.shot("invitation-toast-phone")

	// The list page shows it too (the toast follows the person).
	pb.do("open the conversation list", chromedp.Navigate(pb.base+"/"))
	pb.waitVisible("conversation-list")
	pb.waitVisible("invite-toast")
	inViewport(pb, "invite-toast")

	// Sound off is remembered across a reload.
	eval[bool](pb, `window.__hidden = false`)
	pb.click("sound-toggle")
	pb.waitJS("sound off", elem("sound-toggle")+`.getAttribute("aria-pressed") === "false"`)
	pb.do("reload", chromedp.Reload())
	pb.waitJS("sound still off after a reload", `(() => { const e = `+elem("sound-toggle")+`; return !!e && !e.hidden && e.getAttribute("aria-pressed") === "false"; })()`)
	pb.waitVisible("invite-toast")

	// Accept from the toast on the phone: the conversation opens and Bob's phone rings.
	pq.click("toast-accept")
	pq.waitText("conv-title", "Budget")
	pq.waitInCall("audio-status-" + B.ID)
	for _, p := range []*page{pb, pq} {
		p.waitHidden("invite-toast")
		p.waitJS("the title has no count", `!document.title.startsWith("(")`)
	}

	// A new invitation with the sound off: toast and title, no chime.
	env.Must(204, "DELETE", "/api/v1/conversations/"+budget+"/audio", A.Token, nil)
	before := eval[int](pb, `window.__calls.started`)
	env.Must(201, "POST", "/api/v1/conversations/"+budget+"/audio", A.Token, map[string]any{"published": "work"})
	pb.waitVisible("invite-toast")
	pb.waitJS("the title counts it", `document.title.startsWith("(1) ")`)
	if after := eval[int](pb, `window.__calls.started`); after != before {
		t.Fatalf("the chime played with the sound off (%d → %d oscillators)", before, after)
	}
	pb.click("toast-decline")
	pb.waitHidden("invite-toast")
	checkClean(t, pb, pq)
}

// updateDocShot copies a screenshot to docs/name (shown in the README) when
// that file is missing or CONVOICE_UPDATE_SCREENSHOT=1.
func updateDocShot(t *testing.T, src, name string) {
	t.Helper()
	dst := filepath.Join("..", "docs", name)
	if src == "" {
		return
	}
	if _, err := os.Stat(dst); err == nil && os.Getenv("CONVOICE_UPDATE_SCREENSHOT") != "1" {
		return
	}
	b, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(dst, b, 0o644)
	}
	if err != nil {
		t.Logf("could not update %s: %v", dst, err)
		return
	}
	t.Logf("updated %s", dst)
}

// Point 2: audio started by a guest names the guest to every member (the
// organiser too) and tells the lone guest that nobody else is in the audio
// yet; once a member is connected, the guest reads that they are in.
func TestWebUI_GuestStartedAudioIsNamed(t *testing.T) {
	chromium := findChromium(t)
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer", controller.NumberInput{Label: "work", Number: "+1 202 555 0101", Default: true})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	conv := convOf(t, env, A, "Vendor call", B)
	_, token := jlLink(t, env, A, conv, nil)
	ui := startBrowser(t, chromium, t.TempDir())
	pa := ui.open(t, "A", env.URL, 1280, 800)
	pa.signIn(A, "/ui/c/"+conv)
	pb := ui.open(t, "B", env.URL, 1280, 800)
	pb.signIn(B, "/")

	pg := ui.open(t, "G", env.URL, 390, 844)
	pg.do("open the join link", chromedp.Navigate(env.URL+"/join/"+token))
	pg.typeInto("name-input", "Gina")
	pg.typeInto("number-input", "+1 202 555 0155")
	pg.click("call-me")
	pg.waitState("call-state", "connected")
	pg.waitText("call-text", "Connected – nobody else is in the audio yet")

	pa.waitText("invitation-headline", "Gina (guest) started the audio")
	pa.waitText("activity", "Gina (guest) started the audio.")
	pb.waitText("toast-headline", "Gina (guest) started the audio")
	for _, p := range []*page{pa, pb} {
		if strings.Contains(eval[string](p, `document.body.innerText`), "Someone") {
			t.Fatalf("%s: the page still says Someone for the guest:\n%s", p.name, eval[string](p, `document.body.innerText`))
		}
	}
	pa.click("invite-accept")
	pa.waitInCall("audio-status-" + A.ID)
	pa.waitJS("Alice is not alone", `!`+elem("my-call-text")+`.textContent.includes("Nobody else")`)
	pg.waitText("call-text", "Connected – you are in the conference")
	checkClean(t, pa, pb)
}

// Point 3: the PBX's outcomes in plain words, the server's words for a
// refused number under the field, and the guest page's example number is
// one the default policy takes.
func TestWebUI_CallOutcomesInPlainWords(t *testing.T) {
	chromium := findChromium(t)
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer", controller.NumberInput{Label: "work", Number: "+1 202 555 0101", Default: true})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	conv := convOf(t, env, A, "Words", B)
	ui := startBrowser(t, chromium, t.TempDir())
	pa := ui.open(t, "A", env.URL, 1280, 800)
	pa.signIn(A, "/ui/c/"+conv)
	pb := ui.open(t, "B", env.URL, 1280, 800)
	pb.signIn(B, "/ui/c/"+conv)

	call := func(number string) {
		t.Helper()
		pa.click("phone-button")
		pa.click("join-using")
		pa.click("join-new-number")
		eval[bool](pa, elem("new-number")+`.value = "", true`)
		pa.typeInto("new-number", number+kb.Enter)
	}
	for _, c := range []struct{ number, state, words string }{
		{"+1 202 555 0404", "failed", "That number doesn’t exist — check it"},
		{"+1 202 555 0503", "failed", "The phone network is busy — try again in a minute"},
		{"+1 202 555 0603", "rejected", "They declined the call"},
		{"+1 202 555 0486", "busy", "Line busy"},
	} {
		call(c.number)
		pa.waitState("my-call", c.state)
		pa.waitText("my-call-text", c.words)
		pb.waitState("audio-status-"+A.ID, c.state)
		if c.state == "failed" {
			pb.waitText("participant-"+A.ID, c.words)
		}
		for _, p := range []*page{pa, pb} {
			text := eval[string](p, elem("participants")+`.innerText + " " + `+elem("my-call")+`.innerText + " " + `+elem("activity")+`.innerText`)
			for _, jargon := range []string{"Unallocated", "congestion", "Call Rejected", "Call rejected", "User busy"} {
				if strings.Contains(text, jargon) {
					t.Fatalf("%s: %s shows the exchange's %q: %s", p.name, c.number, jargon, text)
				}
			}
		}
	}

	// A number in a country the policy does not allow: the server's words
	// (with the country's name) under the field.
	want := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", A.Token, map[string]string{"number": "+44 20 7946 0000"})
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	want.JSON(t, &e)
	if want.Status != 403 || e.Error.Code != "country_not_allowed" || !strings.Contains(e.Error.Message, "United Kingdom") {
		t.Fatalf("POST audio with a UK number: %d %s", want.Status, want.Body)
	}
	call("+44 20 7946 0000")
	pa.waitText("new-number-error", e.Error.Message)
	pa.waitJS("the field is marked invalid", elem("new-number")+`.getAttribute("aria-invalid") === "true"`)
	pa.waitJS("nothing under Phone", elem("phone-error")+`.textContent === ""`)

	// The guest page's example number is one a guest may give.
	_, token := jlLink(t, env, A, conv, nil)
	pg := ui.open(t, "G", env.URL, 390, 844)
	pg.do("open the join link", chromedp.Navigate(env.URL+"/join/"+token))
	pg.waitVisible("number-input")
	example := attr(pg, "number-input", "placeholder")
	env.Must(201, "POST", "/api/v1/join/"+token, "", map[string]string{"display_name": "Example", "number": example})
	checkClean(t, pa, pb, pg)
}

// Point 7: with five people in the audio the composer stays in sight, on
// a 1280×800 screen and on a phone.
func TestWebUI_ComposerVisibleWithFivePeople(t *testing.T) {
	chromium := findChromium(t)
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer", controller.NumberInput{Label: "work", Number: "+1 202 555 0101", Default: true})
	var others []apitest.User
	for i, n := range []string{"Bob Baker", "Carol Chen", "Dave Diaz", "Erin Evans"} {
		others = append(others, env.AddUser(n, controller.NumberInput{Label: "work", Number: fmt.Sprintf("+1 202 555 01%d1", i+1), Default: true}))
	}
	conv := convOf(t, env, A, "Five on the line", others...)
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", A.Token, map[string]any{})
	for _, u := range others {
		var invs struct {
			Invitations []struct{ ID string } `json:"invitations"`
		}
		env.WaitFor(u.Name+"'s invitation", 10*time.Second, func() bool {
			env.Must(200, "GET", "/api/v1/invitations", u.Token, nil).JSON(t, &invs)
			return len(invs.Invitations) == 1
		})
		env.Must(200, "POST", "/api/v1/invitations/"+invs.Invitations[0].ID+"/accept", u.Token, map[string]any{})
	}
	env.WaitFor("five connected calls", 10*time.Second, func() bool {
		n := 0
		for _, l := range legsOf(t, env, conv, A.Token) {
			if l.State == "connected" {
				n++
			}
		}
		return n == 5
	})
	for i := 0; i < 12; i++ {
		env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", others[i%4].Token, map[string]any{"text": fmt.Sprintf("message %d", i)})
	}
	ui := startBrowser(t, chromium, t.TempDir())
	for _, size := range []struct {
		name string
		w, h int64
	}{{"desktop", 1280, 800}, {"phone", 390, 844}} {
		p := ui.open(t, size.name, env.URL, size.w, size.h)
		p.signIn(A, "/ui/c/"+conv)
		for _, u := range others {
			p.waitInCall("audio-status-" + u.ID)
		}
		p.waitText("messages", "message 11")
		inViewport(p, "composer")
		inViewport(p, "message-input")
		if w := eval[int](p, `document.documentElement.scrollWidth`); w > int(size.w) {
			t.Fatalf("%s: the page is %d px wide on a %d px screen", size.name, w, size.w)
		}
		// Typing and sending still work where it sits.
		p.typeInto("message-input", "still here"+kb.Enter)
		p.waitText("messages", "still here")
		shot := p.shot("five-people")
		if size.name == "phone" {
			updateDocShot(t, shot, "screenshot-phone.png")
		}
		checkClean(t, p)
	}
}

// Point 9: an empty number is refused in the UI as in the API, and the
// guest page says a refused number under its field.
func TestWebUI_EmptyAndRefusedNumbersUnderTheField(t *testing.T) {
	chromium := findChromium(t)
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer", controller.NumberInput{Label: "work", Number: "+1 202 555 0101", Default: true})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	conv := convOf(t, env, A, "Numbers", B)
	r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", A.Token, map[string]string{"number": ""})
	if r.Status != 400 || !strings.Contains(string(r.Body), "invalid_number") {
		t.Fatalf("POST audio with an empty number: %d %s, want 400 invalid_number", r.Status, r.Body)
	}
	ui := startBrowser(t, chromium, t.TempDir())
	pa := ui.open(t, "A", env.URL, 1280, 800)
	pa.signIn(A, "/ui/c/"+conv)
	pa.click("phone-button")
	pa.click("join-using")
	pa.click("join-new-number")
	pa.typeInto("new-number", "   "+kb.Enter)
	pa.waitText("new-number-error", "Type the phone number")
	pa.waitJS("the field is marked invalid and has focus", `(() => { const e = `+elem("new-number")+`; return e.getAttribute("aria-invalid") === "true" && document.activeElement === e && e.getAttribute("aria-describedby").includes("new-number-error"); })()`)
	if n := len(legsOfLast(t, env, conv, A.Token)); n != 0 {
		t.Fatalf("an empty number placed %d calls", n)
	}

	_, token := jlLink(t, env, A, conv, nil)
	pg := ui.open(t, "G", env.URL, 390, 844)
	pg.do("open the join link", chromedp.Navigate(env.URL+"/join/"+token))
	pg.typeInto("name-input", "Gina")
	pg.click("call-me")
	pg.waitText("number-error", "Please give the phone number")
	pg.typeInto("number-input", "+44 20 7946 0000")
	pg.click("call-me")
	pg.waitText("number-error", "United Kingdom")
	pg.waitJS("nothing under the button", elem("join-error")+`.textContent === ""`)
	pg.waitJS("the number field is marked invalid", elem("number-input")+`.getAttribute("aria-invalid") === "true"`)
	checkClean(t, pa, pg)
}

// legsOfLast lists the calls of the conversation's newest conference (none
// when it never had audio).
func legsOfLast(t *testing.T, env *apitest.Env, convID, token string) []legRow {
	t.Helper()
	r := env.Do("GET", "/api/v1/conversations/"+convID+"/audio?last=true", token, nil)
	if r.Status == 404 {
		return nil
	}
	var a struct {
		Legs []legRow `json:"legs"`
	}
	r.JSON(t, &a)
	return a.Legs
}

// Point 4: a way back after a failure — "Call me again" and "Call my
// mobile instead" after a busy line; a call hung up by the organiser says
// who did it, and the organiser can invite that person again from their row.
func TestWebUI_AWayBackAfterAFailedCall(t *testing.T) {
	chromium := findChromium(t)
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer",
		controller.NumberInput{Label: "work", Number: "+1 202 555 0486", Default: true}, // busy
		controller.NumberInput{Label: "mobile", Number: "+1 202 555 0102"})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	conv := convOf(t, env, A, "Way back", B)
	ui := startBrowser(t, chromium, t.TempDir())
	pa := ui.open(t, "A", env.URL, 1280, 800)
	pa.signIn(A, "/ui/c/"+conv)
	pb := ui.open(t, "B", env.URL, 1280, 800)
	pb.signIn(B, "/ui/c/"+conv)

	pa.click("phone-button")
	pa.click("join-using")
	pa.click("join-using-work")
	pa.waitState("my-call", "busy")
	pa.waitVisible("call-again")
	pa.waitText("call-other", "Call my mobile instead")
	pa.click("call-other")
	pa.waitInCall("audio-status-" + A.ID)
	pa.waitText("participant-"+A.ID, "+1 202 555 0102")
	pa.waitHidden("call-again")

	pb.waitVisible("invitation-banner")
	pb.click("invite-accept")
	pa.waitInCall("audio-status-" + B.ID)
	pa.click("hangup-" + B.ID)
	pb.waitText("my-call-text", "Alice Archer hung up your call.")
	pb.waitText("activity", "Alice Archer hung up your call.")
	if strings.Contains(eval[string](pb, elem("activity")+`.textContent`), "You left the audio") {
		t.Fatalf("B's activity says B left, but Alice hung B up")
	}
	pb.waitVisible("call-again")
	pa.waitText("participant-"+B.ID, "hung up by Alice Archer")

	pa.click("reinvite-" + B.ID)
	pa.waitState("audio-status-"+B.ID, "invited")
	pb.waitVisible("invitation-banner")
	pb.click("call-again")
	for _, p := range []*page{pa, pb} {
		p.waitInCall("audio-status-" + B.ID)
	}
	checkClean(t, pa, pb)
}

// Point 8: the call bar, the people's states, the invitation and the lobby
// each have one live region, and a change is said there once.
func TestWebUI_LiveRegionsSayEachChangeOnce(t *testing.T) {
	chromium := findChromium(t)
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer", controller.NumberInput{Label: "work", Number: "+1 202 555 0101", Default: true})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	conv := convOf(t, env, A, "Heard", B)
	ui := startBrowser(t, chromium, t.TempDir())
	pa := ui.open(t, "A", env.URL, 1280, 800)
	pa.signIn(A, "/ui/c/"+conv)
	pb := ui.open(t, "B", env.URL, 1280, 800)
	pb.signIn(B, "/ui/c/"+conv)

	for _, p := range []*page{pa, pb} {
		for id, live := range map[string]string{"invite-live": "assertive", "my-call-live": "polite", "people-live": "polite", "lobby-live": "polite"} {
			if got := attr(p, id, "aria-live"); got != live {
				t.Fatalf("%s: %s has aria-live %q, want %q", p.name, id, got, live)
			}
		}
		// The visible widgets are not live themselves: no double reading.
		for _, id := range []string{"activity", "invitation-banner", "invite-toast", "my-call", "participants", "lobby"} {
			if got := attr(p, id, "aria-live"); got != "" && got != "off" {
				t.Fatalf("%s: %s is a live region too (%q): changes would be read twice", p.name, id, got)
			}
		}
	}
	pa.click("phone-button")
	pa.click("join-using")
	pa.click("join-using-work")
	pa.waitText("my-call-live", "You are in the conference at +1 202 555 0101. Nobody else is in the audio yet.")
	pb.waitText("invite-live", "Alice Archer invited you to the audio conference.")
	pb.waitText("people-live", "Alice Archer: ")
	if got := eval[string](pb, elem("announcer")+`.textContent`); strings.Contains(got, "invited you") {
		t.Fatalf("B: the invitation is said twice (the announcer too): %q", got)
	}
	pb.click("invite-accept")
	pa.waitText("people-live", "Bob Baker: ")
	pa.waitJS("Alice's bar no longer says she is alone", `!`+elem("my-call-live")+`.textContent.includes("Nobody else")`)

	_, token := jlLink(t, env, A, conv, map[string]any{"require_admission": true})
	env.Must(201, "POST", "/api/v1/join/"+token, "", map[string]string{"display_name": "Gina", "number": "+1 202 555 0155"})
	pa.waitText("lobby-live", "Gina (guest) is waiting to join the conversation.")
	if got := eval[string](pa, elem("announcer")+`.textContent`); strings.Contains(got, "waiting") {
		t.Fatalf("A: the lobby is said twice (the announcer too): %q", got)
	}
	checkClean(t, pa, pb)
}

// Point 5 (server side): the others are invited once the first call is
// connected, so a first call that fails — again and again — invites
// nobody and cancels nothing; the call that connects invites them once.
func TestGivenAFirstCallThatFails_WhenRetried_ThenNobodyIsInvitedUntilOneConnects(t *testing.T) {
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer", controller.NumberInput{Label: "work", Number: "+1 202 555 0101", Default: true})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	conv := convOf(t, env, A, "Retry", B)
	for i := 0; i < 3; i++ {
		env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", A.Token, map[string]any{"number": "+1 202 555 0486"})
		env.WaitFor("the busy call's audio to end", 10*time.Second, func() bool {
			return env.Do("GET", "/api/v1/conversations/"+conv+"/audio", A.Token, nil).Status == 404
		})
	}
	var conf struct {
		Invitations []struct{ UserID, State string } `json:"invitations"`
	}
	env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio?last=true", A.Token, nil).JSON(t, &conf)
	if len(conf.Invitations) != 0 {
		t.Fatalf("a failed first call invited: %+v", conf.Invitations)
	}
	evs, err := env.Store.EventsAfter(context.Background(), conv, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == "invitation.updated" {
			t.Fatalf("an invitation event after busy first calls: %+v", ev)
		}
	}
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", A.Token, map[string]any{})
	pendingInvitation(t, env, B, conv)
	env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", A.Token, nil).JSON(t, &conf)
	if len(conf.Invitations) != 1 || conf.Invitations[0].State != "pending" {
		t.Fatalf("after the call connected: invitations %+v, want one pending for Bob", conf.Invitations)
	}
}

// Point 6: a join link is shown once (only its hash is kept); Copy a new
// link makes another like it in one click and shows it ready to copy.
func TestWebUI_CopyANewJoinLink(t *testing.T) {
	chromium := findChromium(t)
	env := peopleEnv(t)
	A := env.AddUser("Alice Archer", controller.NumberInput{Label: "work", Number: "+1 202 555 0101", Default: true})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	conv := convOf(t, env, A, "Links", B)
	old, oldToken := jlLink(t, env, A, conv, map[string]any{"expires_in_s": 3600, "require_admission": true, "max_uses": 5})
	ui := startBrowser(t, chromium, t.TempDir())
	pa := ui.open(t, "A", env.URL, 1280, 800)
	pa.signIn(A, "/ui/c/"+conv)
	pa.click("meet-now")
	id := old["id"].(string)
	pa.click("copy-new-" + id)
	pa.waitVisible("join-link-result")
	pa.waitJS("a new URL is shown", elem("join-link-url")+`.value.includes("/join/")`)
	newURL := eval[string](pa, elem("join-link-url")+`.value`)
	if strings.HasSuffix(newURL, "/join/"+oldToken) {
		t.Fatalf("the old link was shown again: %s", newURL)
	}
	pa.waitJS("it is copied, or selected for copying", `["copied", "selected"].includes(`+elem("join-link-copied")+`.dataset.state)`)
	pa.waitText("join-link-expiry", "admits them")
	var links struct {
		JoinLinks []struct {
			ID               string    `json:"id"`
			CreatedAt        time.Time `json:"created_at"`
			ExpiresAt        time.Time `json:"expires_at"`
			MaxUses          int       `json:"max_uses"`
			RequireAdmission bool      `json:"require_admission"`
			State            string    `json:"state"`
		} `json:"join_links"`
	}
	env.Must(200, "GET", "/api/v1/conversations/"+conv+"/join-links", A.Token, nil).JSON(t, &links)
	if len(links.JoinLinks) != 2 {
		t.Fatalf("join links = %+v, want the old one and a new one", links.JoinLinks)
	}
	for _, l := range links.JoinLinks {
		if l.State != "active" || !l.RequireAdmission || l.MaxUses != 5 || l.ExpiresAt.Sub(l.CreatedAt).Round(time.Minute) != time.Hour {
			t.Fatalf("link %+v: want active, admission, 5 uses, an hour", l)
		}
	}
	tok := newURL[strings.LastIndex(newURL, "/join/")+len("/join/"):]
	env.Must(200, "GET", "/api/v1/join/"+tok, "", nil)
	env.Must(200, "GET", "/api/v1/join/"+oldToken, "", nil) // the old one still works
	pa.click("email-done")
	pa.waitVisible("copy-new-" + id)
	checkClean(t, pa)
}
