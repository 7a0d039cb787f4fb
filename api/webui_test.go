package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/emuphone"
)

// TestWebUI drives the embedded web UI in a real headless chromium: four
// people (A organiser, B, C, D) in four isolated browser contexts, E checked
// through the API. It follows the seed's story — Phone → Join Conference Now
// Using, Accept / Redirect / Decline, Invite Someone, mute, hang up, end
// audio — and checks that every change shows in every window without a
// reload, that a busy and an invalid number say so, and that a page whose
// event stream is cut catches up when it comes back.
//
// Each browser reaches convoice through its own TCP proxy, so the test can
// cut one person's connections (stream included) as a network outage would.
//
// Screenshots of the key moments go to the test's temp dir (logged), and the
// conversation window in full swing is copied to docs/screenshot-conversation.png.
func TestWebUI(t *testing.T) {
	chromium := findChromium(t)

	env := apitest.Start(t, apitest.Options{
		// Phones ring long enough for a person (and the test) to see "ringing".
		Timing: emuphone.Timing{Ring: 1200 * time.Millisecond, Hold: 2 * time.Second, SlowRing: 3 * time.Second},
	})
	A := env.AddUser("Alice Archer",
		controller.NumberInput{Label: "work", Number: "+1 202 555 0101"},
		controller.NumberInput{Label: "mobile", Number: "+1 202 555 0102", Default: true})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	C := env.AddUser("Carol Chen", controller.NumberInput{Label: "work", Number: "+1 202 555 0121", Default: true})
	D := env.AddUser("Dave Diaz", controller.NumberInput{Label: "work", Number: "+1 202 555 0131", Default: true})
	E := env.AddUser("Erin Evans", controller.NumberInput{Label: "mobile", Number: "+1 202 555 0141", Default: true})
	env.Must(200, "PUT", "/api/v1/me/contacts", A.Token, map[string]any{"user_ids": []string{B.ID, C.ID, D.ID, E.ID}})

	shots := t.TempDir()
	if dir := os.Getenv("CONVOICE_UI_SHOTS"); dir != "" { // keep them after the test
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		shots = dir
	}
	t.Logf("screenshots: %s", shots)
	ui := startBrowser(t, chromium, shots)

	pa := ui.open(t, "A", env.URL, 1280, 860)
	pb := ui.open(t, "B", env.URL, 1100, 820)
	pc := ui.open(t, "C", env.URL, 1100, 820)
	pd := ui.open(t, "D", env.URL, 375, 780) // phone-sized
	pages := []*page{pa, pb, pc, pd}
	users := map[*page]apitest.User{pa: A, pb: B, pc: C, pd: D}

	// --- A wrong token is refused on the sign-in form, with the server's words.
	pb.do("open convoice", chromedp.Navigate(pb.base+"/"))
	pb.waitVisible("token-input")
	pb.typeInto("token-input", "not-a-token"+kb.Enter)
	pb.waitText("signin-error", "unknown or revoked")

	// --- Sign in with demo links (#token=…): the token leaves the address bar
	// and is nowhere a script can read it.
	for _, p := range pages {
		u := users[p]
		p.do("open the sign-in link", chromedp.Navigate(p.base+"/#token="+u.Token))
		p.waitText("whoami", u.Name)
		p.waitJS("token removed from the URL", `location.hash === "" && !location.href.includes("token")`)
		leak := eval[bool](p, fmt.Sprintf(`document.cookie.includes(%s) || JSON.stringify(localStorage).includes(%[1]s) || JSON.stringify(sessionStorage).includes(%[1]s)`, jsStr(u.Token)))
		if leak {
			t.Fatalf("%s: the token is readable by page scripts (cookie not HttpOnly, or stored)", p.name)
		}
	}

	// --- A starts a conversation with B, C and D from the New conversation form.
	pa.click("new-conversation")
	pa.typeInto("subject-input", "Quarterly plan")
	for _, u := range []apitest.User{B, C, D} {
		pa.click("new-pick-" + u.ID)
	}
	pa.click("new-conv-create")
	pa.waitText("conv-title", "Quarterly plan")
	pa.waitState("stream-status", "live")
	convID := strings.TrimPrefix(eval[string](pa, `location.pathname`), "/ui/c/")
	if convID == "" || strings.Contains(convID, "/") {
		t.Fatalf("A: unexpected conversation path for %q", convID)
	}

	// B and D open it from their lists (it appears there by itself); C stays
	// on the list for now.
	for _, p := range []*page{pb, pc, pd} {
		p.waitVisible("conv-" + convID)
	}
	for _, p := range []*page{pb, pd} {
		p.click("conv-" + convID)
		p.waitText("conv-title", "Quarterly plan")
		p.waitState("stream-status", "live")
	}
	if w := eval[int](pd, `document.documentElement.scrollWidth`); w > 375 {
		pd.shot("overflow")
		t.Fatalf("D: the page is %d px wide on a 375 px screen", w)
	}

	// --- A: Phone → Join Conference Now Using → Mobile; "ringing", then "connected".
	pa.click("phone-button")
	pa.click("join-using")
	pa.waitText("join-using-mobile", "+1 202 555 0102")
	pa.waitText("join-new-number", "New Number…")
	pa.shot("a-phone-menu")
	pa.click("join-using-mobile")
	// The phone rings for 1.2 s: the status shows it, and the activity log
	// keeps it (so a slow machine that polls past the ring still sees it).
	pa.waitJS(`A's phone shows "ringing"`, fmt.Sprintf(`(() => {
		const s = %s, m = %s, log = %s;
		return (s && s.dataset.state === "ringing" && m.dataset.state === "ringing") || log.textContent.includes("Your phone is ringing.");
	})()`, elem("audio-status-"+A.ID), elem("my-call"), elem("activity")))
	pa.shot("a-ringing")
	pa.waitInCall("audio-status-" + A.ID)
	pa.waitState("my-call", "connected")
	pa.waitState("conference-state", "active")
	for _, p := range []*page{pb, pd} {
		p.waitInCall("audio-status-" + A.ID)
		p.waitState("audio-status-"+p.userID(users), "invited")
	}

	// --- B sees the invitation and accepts (B's default number rings).
	pb.waitVisible("invitation-banner")
	pb.waitText("invitation-banner", "Alice Archer invited you")
	pb.shot("b-invitation")
	pb.click("invite-accept")
	pb.waitHidden("invitation-banner")
	for _, p := range []*page{pa, pb, pd} {
		p.waitInCall("audio-status-" + B.ID)
	}

	// --- C sees the invitation badge in the list, opens the conversation and
	// redirects the call to a new number.
	pc.waitVisible("conv-invite-" + convID)
	pc.shot("c-list-badge")
	pc.click("conv-" + convID)
	pc.waitState("stream-status", "live")
	pc.waitVisible("invitation-banner")
	pc.click("invite-redirect")
	pc.typeInto("redirect-number", "+1 202 555 0177\r")
	pc.waitHidden("invitation-banner")
	for _, p := range []*page{pa, pb, pc, pd} {
		p.waitInCall("audio-status-" + C.ID)
	}
	pa.waitText("participant-"+C.ID, "+1 202 555 0177")

	// --- D declines: nothing rings, D stays in the IM conversation and chats
	// (Enter sends).
	pd.waitVisible("invitation-banner")
	pd.click("invite-decline")
	pd.waitHidden("invitation-banner")
	for _, p := range []*page{pa, pb, pc, pd} {
		p.waitState("audio-status-"+D.ID, "declined")
	}
	pd.typeInto("message-input", "I'll follow along in chat."+kb.Enter)
	for _, p := range []*page{pa, pb, pc, pd} {
		p.waitText("messages", "I'll follow along in chat.")
	}
	pb.typeInto("message-input", "Hi Dave, we'll keep notes here."+kb.Enter)
	pd.waitText("messages", "we'll keep notes here")
	for _, l := range legsOf(t, env, convID, A.Token) {
		if l.UserID == D.ID {
			t.Fatalf("D declined but a call to %s was placed", l.Number)
		}
	}

	// --- B talks; A mutes B.
	// Live updates change B's row in place: the Hang up button A may be
	// pressing stays the same element (a replaced one would swallow a click
	// whose mousedown landed on the old one).
	pa.waitVisible("hangup-" + B.ID)
	if !eval[bool](pa, `!!(window.__bHangup = `+elem("hangup-"+B.ID)+`)`) {
		t.Fatalf("A: no Hang up button for B")
	}
	bLeg := liveLegOf(t, env, convID, A.Token, B.ID)
	if err := env.Emu.SetTalking(bLeg, true); err != nil {
		t.Fatalf("make B talk: %v", err)
	}
	for _, p := range []*page{pa, pc} {
		p.waitState("audio-status-"+B.ID, "talking")
	}
	pa.click("mute-" + B.ID)
	for _, p := range []*page{pa, pb, pc, pd} {
		p.waitState("audio-status-"+B.ID, "muted")
	}
	if !eval[bool](pa, `!!window.__bHangup && window.__bHangup.isConnected && window.__bHangup === `+elem("hangup-"+B.ID)) {
		t.Fatalf("A: B's Hang up button was replaced by the talking and muted updates")
	}

	// --- A: Invite → Invite Someone → E (search, tick, OK).
	pa.click("invite-button")
	// The server has join links (its OpenAPI document describes POST
	// …/join-links), so Invite Using Email is offered beside Invite Someone.
	pa.waitVisible("invite-someone")
	pa.waitVisible("invite-email")
	pa.click("invite-someone")
	pa.waitVisible("invite-dialog")
	pa.typeInto("invite-search", "Erin")
	pa.waitJS("search filters the contacts", fmt.Sprintf(`!document.querySelector('[data-testid="invite-pick-%s"]')`, B.ID))
	pa.click("invite-pick-" + E.ID)
	pa.shot("a-invite-someone")
	pa.click("invite-ok")
	pa.waitHidden("invite-dialog")
	for _, p := range []*page{pa, pb, pc, pd} {
		p.waitState("audio-status-"+E.ID, "invited")
	}
	var einv struct {
		Invitations []struct {
			ConversationID string `json:"conversation_id"`
			State          string `json:"state"`
		} `json:"invitations"`
	}
	env.Must(200, "GET", "/api/v1/invitations", E.Token, nil).JSON(t, &einv)
	if len(einv.Invitations) != 1 || einv.Invitations[0].ConversationID != convID || einv.Invitations[0].State != "pending" {
		t.Fatalf("E's invitations = %+v, want one pending for %s", einv.Invitations, convID)
	}
	pa.waitText("messages", "we'll keep notes here")
	pa.waitInCall("audio-status-" + A.ID)
	readme := pa.shot("a-conversation")

	// --- Meet Now → the arrow beside Invite → Invite Using Email: a join
	// link for someone outside the directory, who is admitted, called,
	// muted, and ended by revoking the link.
	guest := meetNowGuest(t, env, ui, convID, A, []*page{pa, pb, pc, pd})
	pages = append(pages, guest)

	// --- D's connection drops (stream included). While D is away, A hangs
	// up C and writes; when D is back, D's window has caught up by itself.
	pd.proxy.cut()
	pd.waitState("stream-status", "down")
	pd.shot("d-reconnecting")
	pa.click("hangup-" + C.ID)
	for _, p := range []*page{pa, pb, pc} {
		p.waitState("audio-status-"+C.ID, "left")
	}
	pa.typeInto("message-input", "Carol had to drop; notes to follow."+kb.Enter)
	pb.waitText("messages", "Carol had to drop")
	if s := attr(pd, "audio-status-"+C.ID, "data-state"); s != "connected" && s != "talking" {
		t.Fatalf("D's window changed while cut off (C is %q): the cut did not cut", s)
	}
	pd.proxy.restore()
	pd.waitState("stream-status", "live")
	pd.waitState("audio-status-"+C.ID, "left")
	pd.waitText("messages", "Carol had to drop")
	pd.shot("d-caught-up")
	pd.typeInto("message-input", "Back online."+kb.Enter)
	pa.waitText("messages", "Back online.")

	// --- A fresh load of the conversation (its deep link) reads the
	// messages newest first and shows them in the order they were written.
	pb.do("reopen the conversation", chromedp.Navigate(pb.base+"/ui/c/"+convID))
	pb.waitState("stream-status", "live")
	pb.waitText("messages", "Back online.")
	texts := eval[[]string](pb, `Array.from(document.querySelectorAll('[data-testid="message"] .message-text')).map(e => e.textContent)`)
	at := func(sub string) int {
		for i, x := range texts {
			if strings.Contains(x, sub) {
				return i
			}
		}
		t.Fatalf("message %q missing after a reload: %q", sub, texts)
		return -1
	}
	if a, b, c := at("keep notes here"), at("Carol had to drop"), at("Back online."); !(a < b && b < c && c == len(texts)-1) {
		t.Fatalf("messages after a reload are not in the order written: %q", texts)
	}

	// --- A ends the audio for everyone (with a confirmation step).
	pa.click("end-audio")
	pa.click("end-audio-confirm")
	for _, p := range []*page{pa, pb, pc, pd} {
		p.waitState("conference-state", "ended")
	}
	pa.waitState("audio-status-"+B.ID, "left")
	env.WaitFor("the PBX bridge to go", 10*time.Second, func() bool { return len(env.Emu.Bridges()) == 0 })
	env.Must(200, "GET", "/api/v1/invitations", E.Token, nil).JSON(t, &einv)
	if len(einv.Invitations) != 0 {
		t.Fatalf("E still has pending invitations after the audio ended: %+v", einv.Invitations)
	}
	pa.shot("a-ended")

	// --- An invalid number: the server's words, inline, on the field. Done
	// with the keyboard: Phone, ↓ opens the menu, Enter opens Join
	// Conference Now Using, End goes to New Number…, Enter opens the box.
	pa.do("open Phone with the keyboard", chromedp.Focus(tid("phone-button")), chromedp.KeyEvent(kb.ArrowDown))
	pa.waitJS("Join Conference Now Using has focus", `document.activeElement && document.activeElement.dataset.testid === "join-using"`)
	pa.do("open the submenu", chromedp.KeyEvent(kb.Enter))
	pa.waitJS("the submenu has focus", `document.activeElement && document.activeElement.dataset.testid === "join-using-work"`)
	pa.do("go to New Number…", chromedp.KeyEvent(kb.End))
	pa.waitJS("New Number… has focus", `document.activeElement && document.activeElement.dataset.testid === "join-new-number"`)
	pa.do("choose New Number…", chromedp.KeyEvent(kb.Enter))
	pa.waitJS("the Phone Number box has focus", `document.activeElement && document.activeElement.dataset.testid === "new-number"`)
	pa.do("type an invalid number", chromedp.KeyEvent("12345"+kb.Enter))
	want := env.Do("POST", "/api/v1/conversations/"+convID+"/audio", A.Token, map[string]string{"number": "12345"})
	var wantErr struct {
		Error struct{ Code, Message, Field string } `json:"error"`
	}
	want.JSON(t, &wantErr)
	if want.Status != 400 || wantErr.Error.Field != "number" {
		t.Fatalf("POST audio with 12345: %d %s, want 400 on field number", want.Status, want.Body)
	}
	pa.waitText("new-number-error", wantErr.Error.Message) // under the field
	pa.waitJS("the field is marked invalid", `document.querySelector('[data-testid="new-number"]').getAttribute("aria-invalid") === "true"`)
	pa.shot("a-invalid-number")

	// --- A busy number: the call is placed, the line is busy, and it says so.
	eval[bool](pa, elem("new-number")+`.value = "", true`)
	pa.typeInto("new-number", "+1 202 555 0486"+kb.Enter)
	pa.waitState("my-call", "busy")
	pa.waitText("my-call", "busy")
	pa.waitState("audio-status-"+A.ID, "busy")
	pb.waitState("audio-status-"+A.ID, "busy")
	for _, p := range []*page{pa, pb} { // the only call failed: that audio is over too
		p.waitState("conference-state", "ended")
	}
	pa.waitJS("no stale error", `document.querySelector('[data-testid="phone-error"]').textContent === ""`)
	pa.shot("a-busy")

	// --- Desktop sharing: the presenter moves, live. A and B open it by its
	// address (a deep link; the cookie session carries over).
	var share struct {
		ID string `json:"id"`
	}
	env.Must(201, "POST", "/api/v1/conversations", A.Token, map[string]any{"kind": "sharing", "subject": "Design review", "participants": []string{B.ID}}).JSON(t, &share)
	for _, p := range []*page{pa, pb} {
		p.do("open the sharing session", chromedp.Navigate(p.base+"/ui/c/"+share.ID))
		p.waitText("conv-title", "Design review")
		p.waitState("stream-status", "live")
		p.waitVisible("presenting-" + A.ID)
	}
	pa.waitText("presenter-line", "You are presenting")
	pb.waitText("presenter-line", "Presenter: Alice Archer")
	pb.waitText("presenter-toggle", "Start presenting")
	pb.click("presenter-toggle")
	for _, p := range []*page{pa, pb} {
		p.waitVisible("presenting-" + B.ID)
		p.waitHidden("presenting-" + A.ID)
	}
	pa.waitText("presenter-line", "Presenter: Bob Baker")
	pb.waitText("presenter-line", "You are presenting")
	pb.waitText("presenter-toggle", "Stop presenting")
	pa.waitText("presenter-toggle", "Start presenting")

	// --- Sign-out ends the cookie session.
	pd.click("signout")
	pd.waitVisible("token-input")
	pd.waitText("signin-error", "signed out")
	if st := eval[int](pd, `fetch("/api/v1/session").then(r => r.status)`); st != 401 {
		t.Fatalf("D: GET /api/v1/session after sign-out = %d, want 401", st)
	}

	// --- The pages stayed clean: no script errors, no CSP refusals.
	for _, p := range pages {
		if errs := p.problems(); len(errs) > 0 {
			t.Errorf("%s: the page reported problems:\n  %s", p.name, strings.Join(errs, "\n  "))
		}
	}

	updateReadmeShot(t, readme)
}

// meetNowGuest is the join-link part of the story. A makes a link in the
// Invite Using Email dialog (expiry and "organiser must admit" chosen
// there), copies it and checks the ready e-mail; a guest opens it in a
// browser of their own, gives a name and a number and waits in the lobby,
// where every participant sees them with Admit and Refuse and nothing is
// dialed; A admits them and every window shows their row ringing, then
// connected; A mutes them; A revokes the link from the Meet Now list, which
// ends the guest's session and call. It returns the guest's page.
func meetNowGuest(t *testing.T, env *apitest.Env, ui *browser, convID string, A apitest.User, members []*page) *page {
	t.Helper()
	pa, pd := members[0], members[3]

	// Meet Now opens its panel; the arrow beside Invite opens the menu with
	// the keyboard's focus on its first item; End and Enter choose Invite
	// Using Email.
	pa.waitVisible("meet-now")
	pa.click("meet-now")
	pa.waitVisible("meet-now-panel")
	pa.waitJS("Meet Now says it is expanded", elem("meet-now")+`.getAttribute("aria-expanded") === "true"`)
	pa.waitVisible("join-links-empty")
	pa.click("meet-invite-arrow")
	pa.waitVisible("meet-invite-menu")
	pa.waitJS("the menu has focus", `document.activeElement && document.activeElement.dataset.testid === "meet-invite-someone"`)
	pa.do("go to Invite Using Email", chromedp.KeyEvent(kb.End))
	pa.waitJS("Invite Using Email has focus", `document.activeElement && document.activeElement.dataset.testid === "meet-invite-email"`)
	pa.do("choose Invite Using Email", chromedp.KeyEvent(kb.Enter))
	pa.waitVisible("email-dialog")
	pa.waitHidden("meet-invite-menu")
	pa.waitJS("the dialog starts on the expiry", `document.activeElement && document.activeElement.dataset.testid === "join-link-expires"`)

	// The options: one hour, and the organiser admits each guest.
	pa.do("choose one hour", chromedp.SetValue(tid("join-link-expires"), "3600"))
	pa.click("join-link-admit")
	pa.click("join-link-make")
	pa.waitVisible("join-link-result")
	pa.waitJS("the join URL is shown", elem("join-link-url")+`.value.includes("/join/")`)
	joinURL := eval[string](pa, elem("join-link-url")+`.value`)
	u, err := url.Parse(joinURL)
	if err != nil || u.Scheme != "http" || "http://"+u.Host != pa.base || !regexp.MustCompile(`^/join/[A-Za-z0-9_-]{43}$`).MatchString(u.Path) || u.RawQuery != "" || u.Fragment != "" {
		t.Fatalf("the join URL %q is not %s/join/<256-bit token>", joinURL, pa.base)
	}
	pa.waitText("join-link-expiry", "admits them")

	// Copy: the clipboard, or (when headless chromium refuses it) the whole
	// link selected for Ctrl+C.
	selected := fmt.Sprintf(`(() => {
		const s = %s, i = %s;
		return s.dataset.state === "selected" && s.textContent.includes("Ctrl+C") && document.activeElement === i &&
			i.selectionStart === 0 && i.selectionEnd === i.value.length;
	})()`, elem("join-link-copied"), elem("join-link-url"))
	pa.click("join-link-copy")
	pa.waitJS("the link is copied, or selected for copying", fmt.Sprintf(`(() => {
		const s = %s;
		return s.dataset.state === "copied" && s.textContent.includes("copied") || %s;
	})()`, elem("join-link-copied"), selected))
	// With the clipboard refused outright (no permission, and no copy
	// command either), Copy still leaves the whole link selected and says so.
	eval[bool](pa, `(() => {
		navigator.clipboard.writeText = () => Promise.reject(new DOMException("refused", "NotAllowedError"));
		document.execCommand = () => false;
		return true;
	})()`)
	pa.do("move the selection away", chromedp.Focus(tid("join-link-copy")))
	pa.click("join-link-copy")
	pa.waitJS("the link is selected for Ctrl+C", selected)

	// The e-mail: a well-formed mailto: (RFC 6068) whose body carries the URL.
	href := attr(pa, "join-link-mailto", "href")
	if !regexp.MustCompile(`^mailto:\?subject=[A-Za-z0-9._~%-]+&body=[A-Za-z0-9._~%-]+$`).MatchString(href) {
		t.Fatalf("the e-mail link is not a well-formed mailto: URL: %q", href)
	}
	q, err := url.ParseQuery(strings.TrimPrefix(href, "mailto:?"))
	if err != nil {
		t.Fatalf("mailto query %q: %v", href, err)
	}
	subject, body := q.Get("subject"), q.Get("body")
	if !strings.Contains(subject, "Quarterly plan") || !strings.Contains(body, "\r\n"+joinURL+"\r\n") ||
		!strings.Contains(body, "Alice Archer") || !strings.Contains(body, "lets each guest in") {
		t.Fatalf("the e-mail: subject %q, body %q; want the conversation's subject, and the URL and the admission in the body", subject, body)
	}
	if got := eval[string](pa, elem("join-link-subject")+`.textContent`); got != subject {
		t.Fatalf("the dialog shows the subject %q, the e-mail has %q", got, subject)
	}
	if got := eval[string](pa, elem("join-link-body")+`.textContent`); !strings.Contains(got, joinURL) {
		t.Fatalf("the dialog's e-mail text lacks the URL: %q", got)
	}
	pa.shot("a-invite-using-email")
	pa.click("email-done")
	pa.waitHidden("email-dialog")

	// The link is in the Meet Now list, as made: one hour, with admission.
	var links struct {
		JoinLinks []struct {
			ID               string    `json:"id"`
			CreatedAt        time.Time `json:"created_at"`
			ExpiresAt        time.Time `json:"expires_at"`
			RequireAdmission bool      `json:"require_admission"`
			State            string    `json:"state"`
		} `json:"join_links"`
	}
	env.Must(200, "GET", "/api/v1/conversations/"+convID+"/join-links", A.Token, nil).JSON(t, &links)
	if len(links.JoinLinks) != 1 || !links.JoinLinks[0].RequireAdmission || links.JoinLinks[0].State != "active" ||
		links.JoinLinks[0].ExpiresAt.Sub(links.JoinLinks[0].CreatedAt).Round(time.Minute) != time.Hour {
		t.Fatalf("join links = %+v, want one active for an hour with admission", links.JoinLinks)
	}
	linkID := links.JoinLinks[0].ID
	pa.waitState("join-link-"+linkID, "active")
	pa.waitText("join-link-"+linkID, "admitted one by one")
	pa.waitVisible("revoke-" + linkID)

	// The guest opens the URL in a browser of their own (phone-sized), gives
	// a name and a number, clicks Call me, and waits in the lobby.
	pg := ui.open(t, "G", env.URL, 375, 780)
	pg.do("open the join link", chromedp.Navigate(joinURL))
	pg.waitText("join-subject", "Quarterly plan")
	pg.waitVisible("admission-note")
	pg.typeInto("name-input", "Gina Green")
	pg.typeInto("number-input", "+1 202 555 0155")
	pg.click("call-me")
	pg.waitText("lobby", "Waiting for the organiser")
	pg.shot("g-lobby")

	var guests struct {
		Guests []struct{ ID, DisplayName, State string } `json:"guests"`
	}
	env.Must(200, "GET", "/api/v1/conversations/"+convID+"/guests", A.Token, nil).JSON(t, &guests)
	if len(guests.Guests) != 1 || guests.Guests[0].State != "lobby" {
		t.Fatalf("guests = %+v, want one in the lobby", guests.Guests)
	}
	gid := guests.Guests[0].ID
	for _, p := range members { // everyone in the conversation may admit
		p.waitText("lobby-guest-"+gid, "Gina Green")
		p.waitVisible("admit-" + gid)
		p.waitVisible("refuse-" + gid)
	}
	pa.waitText("activity", "Gina Green (guest) is waiting to join.")
	pa.waitText("lobby-live", "Gina Green (guest) is waiting")
	if w := eval[int](pd, `document.documentElement.scrollWidth`); w > 375 {
		pd.shot("overflow-lobby")
		t.Fatalf("D: the page is %d px wide on a 375 px screen with the lobby shown", w)
	}
	// On the phone-sized screen too: the lobby, and the Meet Now panel with
	// the link, fit; Close gives the keyboard back to Meet Now.
	pd.click("meet-now")
	pd.waitState("join-link-"+linkID, "active")
	if w := eval[int](pd, `document.documentElement.scrollWidth`); w > 375 {
		pd.shot("overflow-meet-now")
		t.Fatalf("D: the page is %d px wide on a 375 px screen with Meet Now open", w)
	}
	eval[bool](pd, elem("meet-now")+`.scrollIntoView(), true`)
	pd.shot("d-guest-waiting")
	pd.click("meet-invite-arrow")
	pd.click("meet-invite-email")
	pd.waitVisible("join-link-make")
	if w := eval[int](pd, `Math.max(document.documentElement.scrollWidth, Math.ceil(`+elem("email-dialog")+`.getBoundingClientRect().right))`); w > 375 {
		pd.shot("overflow-email-dialog")
		t.Fatalf("D: the Invite Using Email dialog reaches %d px on a 375 px screen", w)
	}
	pd.shot("d-invite-using-email")
	pd.do("close the dialog with Escape", chromedp.KeyEvent(kb.Escape))
	pd.waitHidden("email-dialog")
	pd.waitJS("the arrow beside Invite has focus again", `document.activeElement && document.activeElement.dataset.testid === "meet-invite-arrow"`)
	pd.do("close Meet Now with the keyboard", chromedp.Focus(`#meet-now-close`), chromedp.KeyEvent(kb.Enter))
	pd.waitHidden("meet-now-panel")
	pd.waitJS("Meet Now has focus", `document.activeElement && document.activeElement.dataset.testid === "meet-now"`)

	// A second guest (joining through the API) waits too; A refuses them:
	// they leave the lobby everywhere and are never dialed.
	var rex struct {
		Guest struct{ ID, State string } `json:"guest"`
	}
	env.Must(201, "POST", "/api/v1/join/"+strings.TrimPrefix(u.Path, "/join/"), "",
		map[string]string{"display_name": "Rex Random", "number": "+1 202 555 0166"}).JSON(t, &rex)
	if rex.Guest.State != "lobby" {
		t.Fatalf("the second guest is %q, want lobby", rex.Guest.State)
	}
	pa.waitText("lobby-guest-"+rex.Guest.ID, "Rex Random")
	pa.shot("a-guests-waiting")
	pa.click("refuse-" + rex.Guest.ID)
	for _, p := range members {
		p.waitHidden("lobby-guest-" + rex.Guest.ID)
	}
	pa.waitText("activity", "Rex Random (guest) was not admitted.")
	pa.waitJS("focus stays in the lobby", `document.activeElement && document.activeElement.dataset.testid === "admit-`+gid+`"`)
	for _, l := range legsOf(t, env, convID, A.Token) {
		if l.Number == "+12025550155" || l.Number == "+12025550166" {
			t.Fatalf("a guest was dialed before being admitted (%s)", l.Number)
		}
	}

	// A admits: the guest's row shows "ringing", then "connected", in every
	// window (and the lobby empties everywhere).
	pa.click("admit-" + gid)
	for _, p := range members {
		p.waitHidden("lobby-guest-" + gid)
	}
	pa.waitJS(`the guest's row shows "ringing"`, fmt.Sprintf(`(() => {
		const s = %s, log = %s;
		return (s && s.dataset.state === "ringing") || log.textContent.includes("Gina Green (guest)’s phone is ringing.");
	})()`, elem("audio-status-"+gid), elem("activity")))
	for _, p := range members {
		p.waitInCall("audio-status-" + gid)
		p.waitText("participant-"+gid, "Gina Green")
		p.waitText("guest-tag-"+gid, "guest")
	}
	pa.waitText("participant-"+gid, "+1 202 555 0155")
	pg.waitState("call-state", "connected")

	// Moderation works on a guest: A mutes them, and may hang them up.
	pa.click("mute-" + gid)
	for _, p := range members {
		p.waitState("audio-status-"+gid, "muted")
	}
	pa.waitVisible("hangup-" + gid)
	pa.waitHidden("join-links-empty")
	pa.shot("a-guest-connected")

	// A revokes the link (asked first: a guest is in with it). The guest's
	// session and call end; every window shows their row as left.
	pa.click("revoke-" + linkID)
	pa.waitVisible("revoke-confirm-" + linkID)
	pa.click("revoke-confirm-" + linkID)
	pa.waitState("join-link-"+linkID, "revoked")
	pa.waitHidden("revoke-" + linkID)
	for _, p := range members {
		p.waitState("audio-status-"+gid, "left")
		p.waitText("guest-tag-"+gid, "left")
	}
	pa.waitText("participant-"+gid, "withdrawn")
	pg.waitText("ended-text", "withdrawn")
	pa.shot("a-link-revoked")
	pg.shot("g-ended")
	if st := env.Do("GET", "/api/v1/join/"+strings.TrimPrefix(u.Path, "/join/"), "", nil).Status; st != 404 {
		t.Fatalf("the revoked link answers %d, want 404", st)
	}
	if w := eval[int](pg, `document.documentElement.scrollWidth`); w > 375 {
		t.Fatalf("G: the guest page is %d px wide on a 375 px screen", w)
	}
	pa.click("meet-now")
	pa.waitHidden("meet-now-panel")
	return pg
}

// updateReadmeShot copies the conversation-window screenshot to the one the
// README shows, when that file is missing or CONVOICE_UPDATE_SCREENSHOT=1:
// a plain test run leaves the tracked image (and a read-only checkout) alone.
func updateReadmeShot(t *testing.T, src string) {
	dst := filepath.Join("..", "docs", "screenshot-conversation.png")
	if src == "" {
		return
	}
	if _, err := os.Stat(dst); err == nil && os.Getenv("CONVOICE_UPDATE_SCREENSHOT") != "1" {
		return
	}
	b, err := os.ReadFile(src)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(dst), 0o755)
	}
	if err == nil {
		err = os.WriteFile(dst, b, 0o644)
	}
	if err != nil {
		t.Logf("could not update %s: %v", dst, err)
		return
	}
	t.Logf("updated %s", dst)
}

// ---------------------------------------------------------------- API helpers

type legRow struct {
	ID     string `json:"id"`
	UserID string `json:"user_id"`
	Number string `json:"number"`
	State  string `json:"state"`
}

func legsOf(t *testing.T, env *apitest.Env, convID, token string) []legRow {
	t.Helper()
	var a struct {
		Legs []legRow `json:"legs"`
	}
	env.Must(200, "GET", "/api/v1/conversations/"+convID+"/audio", token, nil).JSON(t, &a)
	return a.Legs
}

func liveLegOf(t *testing.T, env *apitest.Env, convID, token, userID string) string {
	t.Helper()
	for _, l := range legsOf(t, env, convID, token) {
		if l.UserID == userID && l.State == "connected" {
			return l.ID
		}
	}
	t.Fatalf("no connected leg for user %s", userID)
	return ""
}

// ---------------------------------------------------------------- browser

type browser struct {
	ctx   context.Context
	shots string
	mu    sync.Mutex
	n     int
}

// startBrowser starts one headless chromium with a fresh profile; each page
// gets its own browser context (cookies, storage: like separate people).
func startBrowser(t *testing.T, chromium, shots string) *browser {
	t.Helper()
	return &browser{ctx: launchChromium(t, chromium, 1280, 860), shots: shots}
}

// page is one person's browser tab, in its own browser context, reaching
// convoice through its own cuttable proxy.
type page struct {
	t     *testing.T
	b     *browser
	name  string
	ctx   context.Context
	base  string
	proxy *cutProxy
	pageProblems
}

func (b *browser) open(t *testing.T, name, target string, w, h int64) *page {
	t.Helper()
	px := newCutProxy(t, strings.TrimPrefix(target, "http://"))
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	p := &page{t: t, b: b, name: name, ctx: ctx, base: "http://" + px.addr(), proxy: px}
	if err := chromedp.Listen(ctx, p.onEvent); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	vp := []chromedp.EmulateViewportOption{}
	if w < 500 {
		vp = append(vp, chromedp.EmulateMobile, chromedp.EmulatePortrait)
	}
	p.do("set the viewport", chromedp.EmulateViewport(w, h, vp...))
	return p
}

func (p *page) userID(users map[*page]apitest.User) string { return users[p].ID }

// uiWait bounds every wait on the page: generous, since the machine is
// shared; a passing run never comes near it.
const uiWait = 20 * time.Second

func tid(id string) chromedp.CSS { return chromedp.CSS(`[data-testid="` + id + `"]`) }

func jsStr(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, uiWait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.fail(what, err)
	}
}

func (p *page) fail(what string, err error) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	p.shot("failure")
	p.t.Fatalf("%s: %s: %v\n--- %s's page ---\n%s\n--- problems ---\n%s", p.name, what, err, p.name, text, strings.Join(p.problems(), "\n"))
}

func (p *page) click(id string) {
	p.t.Helper()
	p.do("click "+id, chromedp.Click(tid(id)))
}

func (p *page) typeInto(id, text string) {
	p.t.Helper()
	p.do("type into "+id, chromedp.SendKeys(tid(id), text))
}

// waitJS polls a JavaScript predicate until it holds.
func (p *page) waitJS(what, predicate string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, uiWait+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate,
		chromedp.WithPollingInterval(40*time.Millisecond), chromedp.WithPollingTimeout(uiWait)))
	if err != nil {
		p.fail("waiting until "+what, err)
	}
}

func elem(id string) string { return `document.querySelector('[data-testid="` + id + `"]')` }

func (p *page) waitState(id, state string) {
	p.t.Helper()
	p.waitJS(fmt.Sprintf("%s is %q", id, state),
		fmt.Sprintf(`(() => { const e = %s; return !!e && e.dataset.state === %s; })()`, elem(id), jsStr(state)))
}

// waitInCall waits until a person's status says they are in the call:
// connected, or talking (the emulator's phones speak once answered).
func (p *page) waitInCall(id string) {
	p.t.Helper()
	p.waitJS(id+" is in the call",
		fmt.Sprintf(`(() => { const e = %s; return !!e && ["connected", "talking"].includes(e.dataset.state); })()`, elem(id)))
}

func (p *page) waitText(id, sub string) {
	p.t.Helper()
	p.waitJS(fmt.Sprintf("%s shows %q", id, sub),
		fmt.Sprintf(`(() => { const e = %s; return !!e && e.textContent.includes(%s) && e.getClientRects().length > 0; })()`, elem(id), jsStr(sub)))
}

func (p *page) waitVisible(id string) {
	p.t.Helper()
	p.waitJS(id+" is visible", fmt.Sprintf(`(() => { const e = %s; return !!e && e.getClientRects().length > 0; })()`, elem(id)))
}

func (p *page) waitHidden(id string) {
	p.t.Helper()
	p.waitJS(id+" is hidden", fmt.Sprintf(`(() => { const e = %s; return !e || e.getClientRects().length === 0; })()`, elem(id)))
}

func attr(p *page, id, name string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(() => { const e = %s; return e ? (e.getAttribute(%s) || "") : ""; })()`, elem(id), jsStr(name)))
}

func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, uiWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.fail("evaluate "+expr, err)
	}
	return v
}

var unsafeName = regexp.MustCompile(`[^a-z0-9-]+`)

// shot saves a screenshot of the page and returns its path ("" on failure).
func (p *page) shot(what string) string {
	p.b.mu.Lock()
	p.b.n++
	n := p.b.n
	p.b.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("%s: screenshot %q: %v", p.name, what, err)
		return ""
	}
	name := fmt.Sprintf("%02d-%s-%s.png", n, strings.ToLower(p.name), unsafeName.ReplaceAllString(strings.ToLower(what), "-"))
	path := filepath.Join(p.b.shots, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Logf("save %s: %v", path, err)
		return ""
	}
	return path
}

// ---------------------------------------------------------------- cuttable proxy

// cutProxy is a TCP proxy in front of convoice for one browser. cut closes
// every connection and refuses new ones (the network is gone); restore lets
// them through again.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.pipe(c)
	}
}

func (p *cutProxy) pipe(c net.Conn) {
	defer p.wg.Done()
	defer p.forget(c)
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		u.Close()
		return
	}
	p.conns[u] = struct{}{}
	p.mu.Unlock()
	defer p.forget(u)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(u, c)
		u.Close()
		close(done)
	}()
	_, _ = io.Copy(c, u)
	c.Close()
	<-done
}

func (p *cutProxy) forget(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *cutProxy) close() {
	p.cut()
	if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return
	}
	p.wg.Wait()
}
