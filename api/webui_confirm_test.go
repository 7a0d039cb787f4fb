package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/emuphone"
)

// With CONVOICE_CONFIRM_KEY=5, a confirming call says "press 5" — never
// "press 1" — to the person called (their own call box), to the others in
// the conversation (the status and the activity log) and to a guest on the
// guest page, also after the guest page is reloaded. The pages learn the
// key from the session answers (confirm_key). The emulator's phones answer
// and never press 5, so the calls stay confirming for the whole test.
func TestWebUI_ConfirmingCallsNameTheConfiguredKey(t *testing.T) {
	chromium := findChromium(t)
	env := apitest.Start(t, apitest.Options{
		Timing:  emuphone.Timing{Ring: 300 * time.Millisecond, Hold: 2 * time.Second, SlowRing: 3 * time.Second},
		Confirm: controller.ConfirmConfig{Mode: controller.ConfirmAll, Key: "5", Timeout: time.Minute},
	})
	A := env.AddUser("Alice Archer", controller.NumberInput{Label: "work", Number: "+1 202 555 0101", Default: true})
	B := env.AddUser("Bob Baker", controller.NumberInput{Label: "work", Number: "+1 202 555 0111", Default: true})
	for _, tok := range []string{A.Token, apitest.AdminToken} {
		if k := env.Must(200, "GET", "/api/v1/session", tok, nil).Map(t)["confirm_key"]; k != "5" {
			t.Fatalf("GET /api/v1/session: confirm_key %v, want 5", k)
		}
	}
	conv := convOf(t, env, A, "Keys", B)
	ui := startBrowser(t, chromium, t.TempDir())
	pa := ui.open(t, "A", env.URL, 1280, 800)
	pa.signIn(A, "/ui/c/"+conv)
	pb := ui.open(t, "B", env.URL, 1280, 800)
	pb.signIn(B, "/ui/c/"+conv)

	pa.click("phone-button")
	pa.click("join-using")
	pa.click("join-using-work")
	pa.waitState("my-call", "confirming")
	pa.waitText("my-call-text", "waiting for you to press 5 to join the conference")
	pb.waitState("audio-status-"+A.ID, "confirming")
	pb.waitText("audio-status-"+A.ID, "Answered — waiting for them to press 5")
	pb.waitText("activity", "call was answered — waiting for them to press 5")

	// A guest: the join answer brings the key; a reload, GET /guest.
	_, token := jlLink(t, env, A, conv, nil)
	pg := ui.open(t, "G", env.URL, 390, 844)
	pg.do("open the join link", chromedp.Navigate(pg.base+"/join/"+token))
	pg.typeInto("name-input", "Gina Guest")
	pg.typeInto("number-input", "+1 202 555 0144")
	pg.click("call-me")
	pg.waitState("call-state", "confirming")
	pg.waitText("call-text", "You answered – press 5 to join the conference")
	pg.do("reload the guest page", chromedp.Reload())
	pg.waitState("call-state", "confirming")
	pg.waitText("call-text", "press 5 to join")

	for _, p := range []*page{pa, pb, pg} {
		if text := eval[string](p, `document.body.innerText`); strings.Contains(text, "press 1") || strings.Contains(text, "pressed 1") {
			t.Errorf("%s: the page still says the default key:\n%s", p.name, text)
		}
	}
	checkClean(t, pa, pb, pg)
}
