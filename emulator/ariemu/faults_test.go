package ariemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

// connectApp connects a collecting websocket for app and waits until the
// emulator has registered it.
func connectApp(t *testing.T, s *Server, app string) *wsClient {
	t.Helper()
	c := newWSClient(t)
	if err := c.connect(s.Addr(), "app="+app); err != nil {
		t.Fatal(err)
	}
	waitApp(t, s, app, 200)
	return c
}

func waitApp(t *testing.T, s *Server, app string, status int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		r := rest(t, s, "GET", "/ari/applications/"+app, nil)
		if r.Status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /applications/%s stays %d, want %d", app, r.Status, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// originateUp dials an answering trunk number into app and waits for its
// StasisStart.
func originateUp(t *testing.T, s *Server, c *wsClient, id string) {
	t.Helper()
	mustStatus(t, rest(t, s, "POST", originatePath(id, "PJSIP/+12025550101@trunk", ""), nil), 200)
	c.waitEvent(t, "StasisStart", id)
}

// readUntilEnd reads raw frames until the connection ends and reports
// whether a close frame came first.
func readUntilEnd(t *testing.T, w *rawWS, d time.Duration) (texts []string, sawClose bool) {
	t.Helper()
	for {
		op, payload, err := w.next(d)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("websocket still open after %v", d)
			}
			return texts, sawClose
		}
		switch op {
		case opText:
			texts = append(texts, string(payload))
		case opClose:
			sawClose = true
		}
	}
}

// TestCancelRacingTheDial reproduces the order recording i shows when the
// DELETE beats Asterisk's dial thread (the conformance replay cannot hit
// that race on purpose): HangupRequest while Down, then the first Dial, Dial
// NOANSWER, ChannelDestroyed 16 — compared with the recorded events.
func TestCancelRacingTheDial(t *testing.T) {
	s := startServer(t, Config{})
	c := connectApp(t, s, "confbridge-lab")
	s.mu.Lock()
	ch, status := s.originateLocked(originateArgs{
		channelID: "lab-chan-i-now", endpoint: "PJSIP/+12025550480@trunk", app: "confbridge-lab",
		appArgs: "cancel-test", callerID: "Lab Caller <+12025550100>", timeout: 30,
	}, "PJSIP", "+12025550480@trunk")
	if ch == nil {
		s.mu.Unlock()
		t.Fatalf("originate: %d", status)
	}
	s.hangupByUsLocked(ch, 16) // the DELETE wins…
	s.startDialLocked(ch)      // …and the dial thread comes too late
	s.mu.Unlock()
	c.waitEvent(t, "ChannelDestroyed", "lab-chan-i-now")

	recs := loadRecordings(t)
	var want []event
	for _, st := range recs["i_cancel_before_answer"].Steps {
		if st.Kind != "event" {
			continue
		}
		var m map[string]any
		json.Unmarshal(st.Event, &m)
		e := event{raw: st.Event, m: m}
		if e.chanID() == "lab-chan-i-now" && e.typ() != "ChannelVarset" {
			want = append(want, e)
		}
	}
	var got []event
	for _, e := range c.events() {
		if e.chanID() == "lab-chan-i-now" && e.typ() != "ChannelVarset" {
			got = append(got, e)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d:%s", len(got), len(want), summarize(got))
	}
	for i := range want {
		for _, f := range [][]string{{"type"}, {"cause"}, {"cause_txt"}, {"soft"}, {"dialstatus"}, {"channel", "state"}, {"peer", "state"}} {
			if want[i].str(f...) != got[i].str(f...) {
				t.Errorf("event %d %s: %v = %q, want %q", i, want[i].typ(), f, got[i].str(f...), want[i].str(f...))
			}
		}
		if wk, gk := orderedKeys(want[i].raw), orderedKeys(got[i].raw); !slices.Equal(wk, gk) {
			t.Errorf("event %d keys %v, want %v", i, gk, wk)
		}
	}
}

// TestDropWebsockets: recording m's behaviour on a server-side cut — a bare
// TCP close, the calls go on, the application stays while it holds
// something, nothing is replayed after reconnecting.
func TestDropWebsockets(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 20 * time.Millisecond, Hold: 300 * time.Millisecond}})
	c := connectApp(t, s, "convoice")
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/conf1?type=mixing", nil), 200)
	originateUp(t, s, c, "stay")
	originateUp(t, s, c, "bye")
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/conf1/addChannel?channel=stay,bye", nil), 204)

	raw, code, err := dialRawWS(s.Addr(), "app=convoice")
	if err != nil || code != 101 {
		t.Fatalf("raw websocket: %d %v", code, err)
	}
	waitFor(t, func() bool { return socketCount(s) == 2 })
	s.DropWebsockets()
	if !c.waitEnded(2 * time.Second) {
		t.Fatal("client websocket not ended")
	}
	if _, sawClose := readUntilEnd(t, raw, 2*time.Second); sawClose {
		t.Error("DropWebsockets sent a close frame; want a bare TCP close")
	}

	// The gap: calls go on, the application answers with what it holds.
	if err := s.FarEndHangup("bye"); err != nil {
		t.Fatal(err)
	}
	app := rest(t, s, "GET", "/ari/applications/convoice", nil)
	mustStatus(t, app, 200)
	if got := app.json(t).(map[string]any); !slices.Equal(toStrings(got["channel_ids"]), []string{"stay"}) || !slices.Equal(toStrings(got["bridge_ids"]), []string{"conf1"}) {
		t.Errorf("application during the gap: %s", app.Body)
	}
	chans := s.Channels()
	if len(chans) != 1 || chans[0].ID != "stay" || chans[0].BridgeID != "conf1" || !chans[0].InStasis {
		t.Errorf("channels during the gap: %+v", chans)
	}
	// An originate into the app while no websocket is connected: answered,
	// hung up about 20 ms later, never in Stasis, no trace afterwards.
	mustStatus(t, rest(t, s, "POST", originatePath("gap", "PJSIP/+12025550111@trunk", ""), nil), 200)
	time.Sleep(200 * time.Millisecond)
	mustStatus(t, rest(t, s, "GET", "/ari/channels/gap", nil), 404)

	c2 := connectApp(t, s, "convoice")
	time.Sleep(200 * time.Millisecond)
	if evs := c2.events(); len(evs) != 0 {
		t.Errorf("events replayed after reconnect:%s", summarize(evs))
	}
	mustStatus(t, rest(t, s, "GET", "/ari/channels/bye", nil), 404)

	// Part 2: once the app holds nothing and loses its socket, it is gone.
	mustStatus(t, rest(t, s, "DELETE", "/ari/channels/stay", nil), 204)
	mustStatus(t, rest(t, s, "DELETE", "/ari/bridges/conf1", nil), 204)
	c2.waitEvent(t, "BridgeDestroyed", "conf1") // "bye" hung up inside it
	s.DropWebsockets()
	c2.waitEnded(2 * time.Second)
	mustStatus(t, rest(t, s, "GET", "/ari/applications/convoice", nil), 404)
	if r := rest(t, s, "GET", "/ari/applications", nil); strings.TrimSpace(string(r.Body)) != "[]" {
		t.Errorf("applications after the app vanished: %s", r.Body)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func socketCount(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.websocks)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("condition never met")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRestart: `core restart now` — the hangup events reach the socket,
// which then ends without a close frame; connections are refused, then 503
// "Asterisk not booted", then the emulator is back, empty, with ids counting
// from 0 and a new startup time.
func TestRestart(t *testing.T) {
	s := startServer(t, Config{
		User: "u", Password: "p",
		Timing:         emuphone.Timing{Ring: 20 * time.Millisecond},
		RestartRefused: 200 * time.Millisecond, RestartBooting: 200 * time.Millisecond,
	})
	info1 := rest(t, s, "GET", "/ari/asterisk/info", nil).json(t).(map[string]any)
	raw, code, err := dialRawWS(s.Addr(), "app=a&api_key=u:p")
	if err != nil || code != 101 {
		t.Fatalf("raw websocket: %d %v", code, err)
	}
	waitFor(t, func() bool { return s.Booted() && len(s.Channels()) == 0 })
	mustStatus(t, rest(t, s, "POST", "/ari/bridges?bridgeId=b", nil), 200)
	r := rest(t, s, "POST", "/ari/channels?endpoint=PJSIP/1001&app=a", nil)
	mustStatus(t, r, 200)
	first := r.json(t).(map[string]any)["id"].(string)
	mustStatus(t, rest(t, s, "POST", originatePath("ringing", "PJSIP/+12025550480@trunk", ""), nil), 200)
	// Let PJSIP/1001 answer (lab phones ring 500 ms) and bridge it.
	deadline := time.Now().Add(3 * time.Second)
	for rest(t, s, "POST", "/ari/bridges/b/addChannel?channel="+first, nil).Status != 204 {
		if time.Now().After(deadline) {
			t.Fatal("1001 never answered")
		}
		time.Sleep(20 * time.Millisecond)
	}

	s.Restart()
	texts, sawClose := readUntilEnd(t, raw, 3*time.Second)
	if sawClose {
		t.Error("restart sent a close frame; want a bare TCP close")
	}
	var tail []string
	for _, txt := range texts {
		var m map[string]any
		json.Unmarshal([]byte(txt), &m)
		e := event{m: m}
		if e.typ() == "ChannelVarset" || e.chanID() != first {
			continue
		}
		tail = append(tail, e.typ()+" "+e.str("cause")+" "+e.str("soft"))
	}
	wantTail := []string{"ChannelHangupRequest 4 true", "ChannelLeftBridge  ", "StasisEnd  ", "ChannelDestroyed 16 "}
	if len(tail) < 4 || !slices.Equal(tail[len(tail)-4:], wantTail) {
		t.Errorf("restart events for the bridged channel: %q, want ending %q", tail, wantTail)
	}
	for _, txt := range texts {
		if strings.Contains(txt, `"BridgeDestroyed"`) {
			t.Error("restart sent BridgeDestroyed")
		}
	}

	// Refused, then 503, then back.
	var phases []string
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		resp, err := restErr(s.Addr(), "u", "p", "GET", "/ari/asterisk/info", nil)
		switch {
		case err != nil:
			phases = appendPhase(phases, "refused")
		case resp.Status == 503:
			if !strings.Contains(string(resp.Body), "Asterisk not booted") {
				t.Errorf("503 body %s", resp.Body)
			}
			if w, code, _ := dialRawWS(s.Addr(), "app=a&api_key=u:p"); code == 101 {
				// Booting ended between the two probes.
				w.conn.Close()
				if !s.Booted() {
					t.Error("websocket upgraded while booting")
				}
				waitFor(t, func() bool { return socketCount(s) == 0 })
			} else if code != 503 {
				t.Errorf("websocket while booting: %d, want 503", code)
			}
			// Auth still comes first.
			if r, _ := restErr(s.Addr(), "u", "wrong", "GET", "/ari/asterisk/info", nil); r.Status != 401 {
				t.Errorf("wrong password while booting: %d, want 401", r.Status)
			}
			phases = appendPhase(phases, "503")
		case resp.Status == 200:
			phases = appendPhase(phases, "200")
		}
		if len(phases) > 0 && phases[len(phases)-1] == "200" {
			break
		}
	}
	if !slices.Equal(phases, []string{"refused", "503", "200"}) {
		t.Fatalf("phases %v", phases)
	}
	for _, p := range []string{"/ari/channels", "/ari/bridges", "/ari/applications"} {
		if r := rest(t, s, "GET", p, nil); strings.TrimSpace(string(r.Body)) != "[]" {
			t.Errorf("GET %s after restart: %s", p, r.Body)
		}
	}
	mustStatus(t, rest(t, s, "GET", "/ari/channels/"+first, nil), 404)
	mustStatus(t, rest(t, s, "GET", "/ari/bridges/b", nil), 404)
	info2 := rest(t, s, "GET", "/ari/asterisk/info", nil).json(t).(map[string]any)
	if info1["status"].(map[string]any)["startup_time"] == info2["status"].(map[string]any)["startup_time"] {
		t.Error("startup_time unchanged by restart")
	}
	r = rest(t, s, "POST", "/ari/channels?endpoint=PJSIP/1001&app=a", nil)
	mustStatus(t, r, 200)
	got := r.json(t).(map[string]any)
	if id := got["id"].(string); !strings.HasSuffix(id, ".0") {
		t.Errorf("first channel after restart is %s, want id counter back at 0", id)
	}
	if name := got["name"].(string); name != "PJSIP/1001-00000000" {
		t.Errorf("first channel name after restart %s", name)
	}
}

// TestCrash: SIGKILL — no event at all, the socket just ends.
func TestCrash(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 20 * time.Millisecond}, RestartRefused: 100 * time.Millisecond, RestartBooting: 100 * time.Millisecond})
	c := connectApp(t, s, "convoice")
	originateUp(t, s, c, "x")
	raw, code, err := dialRawWS(s.Addr(), "app=convoice")
	if err != nil || code != 101 {
		t.Fatalf("raw websocket: %d %v", code, err)
	}
	waitFor(t, func() bool { return socketCount(s) == 2 })
	n := len(c.events())
	s.Crash()
	texts, sawClose := readUntilEnd(t, raw, 3*time.Second)
	if sawClose || len(texts) != 0 {
		t.Errorf("crash: close frame %v, events %q; want neither", sawClose, texts)
	}
	c.waitEnded(2 * time.Second)
	if got := c.events()[n:]; len(got) != 0 {
		t.Errorf("events on crash:%s", summarize(got))
	}
	if err := s.WaitBooted(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(s.Channels()) != 0 {
		t.Errorf("channels survived the crash: %+v", s.Channels())
	}
}

// TestUnresponsive: half-open — REST unanswered (and cut when the mode
// ends), pings unanswered, events held back and delivered afterwards; the
// calls go on meanwhile.
func TestUnresponsive(t *testing.T) {
	// "late" answers 500 ms after its originate: inside the unresponsive
	// window, which lasts about a second below.
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 500 * time.Millisecond}})
	c := connectApp(t, s, "convoice")
	raw, code, err := dialRawWS(s.Addr(), "app=b")
	if err != nil || code != 101 {
		t.Fatalf("raw websocket: %d %v", code, err)
	}
	waitApp(t, s, "b", 200)
	// A ping is answered while responsive.
	raw.send(opPing, []byte("hello"))
	if op, p, err := raw.next(time.Second); err != nil || op != opPong || string(p) != "hello" {
		t.Fatalf("pong: %x %q %v", op, p, err)
	}

	mustStatus(t, rest(t, s, "POST", originatePath("late", "PJSIP/+12025550101@trunk", ""), nil), 200)
	s.SetUnresponsive(true)

	// REST: no answer.
	type result struct {
		err error
	}
	done := make(chan result, 1)
	go func() {
		// A fresh connection: net/http would silently retry an idempotent
		// request cut on a reused keep-alive connection.
		cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := cl.Get("http://" + s.Addr() + "/ari/asterisk/info")
		if err == nil {
			resp.Body.Close()
		}
		done <- result{err}
	}()
	select {
	case r := <-done:
		t.Fatalf("REST answered while unresponsive (err %v)", r.err)
	case <-time.After(500 * time.Millisecond):
	}
	// Websocket: no pong, and the answer of "late" (at 500 ms) is held.
	raw.send(opPing, []byte("anyone?"))
	if op, _, err := raw.next(300 * time.Millisecond); err == nil {
		t.Fatalf("got frame %x while unresponsive", op)
	}
	time.Sleep(200 * time.Millisecond)
	for _, e := range c.events() {
		if e.typ() == "StasisStart" {
			t.Fatal("event delivered while unresponsive")
		}
	}
	if chans := s.Channels(); len(chans) != 1 || !chans[0].InStasis {
		t.Fatalf("the call should go on while unresponsive: %+v", chans)
	}

	s.SetUnresponsive(false)
	select {
	case r := <-done:
		if r.err == nil {
			t.Error("the request held while unresponsive got an answer; want the connection cut")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("held request never released")
	}
	c.waitEvent(t, "StasisStart", "late")
	mustStatus(t, rest(t, s, "GET", "/ari/asterisk/info", nil), 200)
	var unanswered bool
	for _, r := range s.Requests() {
		if r.Path == "/ari/asterisk/info" && r.Status == 0 {
			unanswered = true
		}
	}
	if !unanswered {
		t.Error("the unanswered request is not in Requests() with status 0")
	}
}

// captureHandler records log messages.
type captureHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.msgs = append(h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }
func (h *captureHandler) has(sub string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// TestSlowConsumerIsCut: a websocket whose queue overflows is closed and
// the cut is logged; the calls and the other sockets are unaffected.
func TestSlowConsumerIsCut(t *testing.T) {
	logs := &captureHandler{}
	s := startServer(t, Config{EventQueue: 16, Logger: slog.New(logs), Timing: emuphone.Timing{Ring: 10 * time.Millisecond}})
	c := connectApp(t, s, "convoice")
	var ids []string
	for i := 1; i <= 12; i++ {
		ids = append(ids, fmt.Sprintf("c%d", i))
	}
	for _, id := range ids {
		originateUp(t, s, c, id)
	}
	// Hold the writer back so the queue fills: 12 hangups make 48 events.
	// The writer takes at most one batch (at most the 16 a queue holds)
	// before it blocks, so at least 32 are left for a queue of 16, however
	// the goroutines are scheduled.
	s.SetUnresponsive(true)
	for _, id := range ids {
		s.FarEndHangup(id)
	}
	// The hangups run their event sequences on timers: keep the writer held
	// until every channel is gone, so all 20 events are queued by then
	// (else a loaded machine lets the writer drain some first).
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Channels()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("far-end hangups did not finish: %d channels left", len(s.Channels()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.SetUnresponsive(false)
	if !c.waitEnded(3 * time.Second) {
		t.Fatal("slow consumer not cut")
	}
	if !logs.has("too slow") {
		t.Errorf("overflow not logged: %q", logs.msgs)
	}
	waitApp(t, s, "convoice", 404)
}

// TestTalkDetect: TALK_DETECT(set) and the phone's speech, SetTalking,
// Finished after the silence threshold with the talking time as duration,
// no Finished after remove or hangup, nothing without the module, nothing
// from mute.
func TestTalkDetect(t *testing.T) {
	s := startServer(t, Config{QuietPhones: true, Timing: emuphone.Timing{Ring: 10 * time.Millisecond}})
	c := connectApp(t, s, "convoice")
	originateUp(t, s, c, "q")
	if err := s.SetTalking("q", true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if slices.Contains(typesFor(c.events(), "q"), "ChannelTalkingStarted") {
		t.Fatal("talking event without TALK_DETECT")
	}
	s.SetTalking("q", false)
	mustStatus(t, rest(t, s, "POST", "/ari/channels/q/variable?variable=TALK_DETECT(set)&value=400", nil), 204)
	time.Sleep(100 * time.Millisecond)
	if slices.Contains(typesFor(c.events(), "q"), "ChannelTalkingStarted") {
		t.Fatal("a quiet phone talked")
	}
	t0 := time.Now()
	s.SetTalking("q", true)
	c.waitEvent(t, "ChannelTalkingStarted", "q")
	mustStatus(t, rest(t, s, "POST", "/ari/channels/q/mute?direction=in", nil), 204)
	time.Sleep(300 * time.Millisecond)
	s.SetTalking("q", false)
	talked := time.Since(t0)
	fin := c.waitEvent(t, "ChannelTalkingFinished", "q")
	if d := fin.at.Sub(t0) - talked; d < 350*time.Millisecond {
		t.Errorf("Finished %v after the silence began, want the 400 ms threshold", d)
	}
	dur, _ := fin.m["duration"].(float64)
	if dur < 250 || dur > float64(talked.Milliseconds())+50 {
		t.Errorf("duration %v ms, talked %v", dur, talked)
	}
	if k := orderedKeys(fin.raw); k[0] != "duration" {
		t.Errorf("Finished keys %v: duration first", k)
	}
	// Pauses shorter than the threshold do not end talking.
	s.SetTalking("q", true)
	c.waitFor(time.Second, func(evs []event) bool { return countType(evs, "q", "ChannelTalkingStarted") == 2 })
	s.SetTalking("q", false)
	time.Sleep(50 * time.Millisecond)
	s.SetTalking("q", true)
	time.Sleep(500 * time.Millisecond)
	if n := countType(c.events(), "q", "ChannelTalkingFinished"); n != 1 {
		t.Errorf("%d Finished after a short pause, want still 1", n)
	}
	// Remove while talking: no Finished.
	mustStatus(t, rest(t, s, "POST", "/ari/channels/q/variable", map[string]string{"variable": "TALK_DETECT(remove)"}), 204)
	s.SetTalking("q", false)
	time.Sleep(500 * time.Millisecond)
	if n := countType(c.events(), "q", "ChannelTalkingFinished"); n != 1 {
		t.Errorf("Finished after TALK_DETECT(remove)")
	}

	// A phone that answers with its tone talks ~20 ms after TALK_DETECT(set)
	// (recording h); hanging up while talking gives no Finished.
	s2 := startServer(t, Config{Timing: emuphone.Timing{Ring: 10 * time.Millisecond}})
	c2 := connectApp(t, s2, "convoice")
	originateUp(t, s2, c2, "tone")
	mustStatus(t, rest(t, s2, "POST", "/ari/channels/tone/variable", map[string]string{"variable": "TALK_DETECT(set)"}), 204)
	c2.waitEvent(t, "ChannelTalkingStarted", "tone")
	mustStatus(t, rest(t, s2, "DELETE", "/ari/channels/tone", nil), 204)
	c2.waitEvent(t, "ChannelDestroyed", "tone")
	if slices.Contains(typesFor(c2.events(), "tone"), "ChannelTalkingFinished") {
		t.Error("Finished after hangup")
	}
	// Without func_talkdetect: 204 and silence (recording k).
	s2.SetTalkDetectLoaded(false)
	originateUp(t, s2, c2, "nomod")
	mustStatus(t, rest(t, s2, "POST", "/ari/channels/nomod/variable?variable=TALK_DETECT(set)&value=", nil), 204)
	time.Sleep(150 * time.Millisecond)
	if slices.Contains(typesFor(c2.events(), "nomod"), "ChannelTalkingStarted") {
		t.Error("talking event without the module")
	}
	if err := s2.SetTalking("nope", true); !errors.Is(err, ErrNoChannel) {
		t.Errorf("SetTalking on unknown channel: %v", err)
	}
}

func countType(evs []event, id, typ string) int {
	n := 0
	for _, e := range evs {
		if e.chanID() == id && e.typ() == typ {
			n++
		}
	}
	return n
}

// TestFarEndHangup: BYE on an answered leg in a bridge (recording j), and
// an error for a leg not answered yet.
func TestFarEndHangup(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 10 * time.Millisecond}})
	c := connectApp(t, s, "convoice")
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/br", nil), 200)
	originateUp(t, s, c, "x")
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/br/addChannel?channel=x", nil), 204)
	if err := s.FarEndHangup("x"); err != nil {
		t.Fatal(err)
	}
	d := c.waitEvent(t, "ChannelDestroyed", "x")
	if d.str("cause") != "16" {
		t.Errorf("cause %s", d.str("cause"))
	}
	got := typesFor(c.events(), "x")
	if want := []string{"ChannelHangupRequest", "ChannelLeftBridge", "StasisEnd", "ChannelDestroyed"}; !slices.Equal(got[len(got)-4:], want) {
		t.Errorf("BYE events %v", got)
	}
	mustStatus(t, rest(t, s, "POST", originatePath("ring", "PJSIP/+12025550480@trunk", ""), nil), 200)
	if err := s.FarEndHangup("ring"); err == nil {
		t.Error("FarEndHangup on a ringing leg should fail")
	}
	if err := s.FarEndHangup("none"); !errors.Is(err, ErrNoChannel) {
		t.Errorf("unknown channel: %v", err)
	}
	// DELETE of the bridge: the member hung up inside it, so BridgeDestroyed.
	mustStatus(t, rest(t, s, "DELETE", "/ari/bridges/br", nil), 204)
	c.waitEvent(t, "BridgeDestroyed", "br")
}

// TestServe: the CLI entry point serves until its context ends.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, addr, Config{User: "u", Password: "p"}) }()
	var resp restResp
	deadline := time.Now().Add(3 * time.Second)
	for {
		resp, err = restErr(addr, "u", "p", "GET", "/ari/asterisk/ping", nil)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || resp.Status != 200 || !bytes.Contains(resp.Body, []byte(`"ping":"pong"`)) {
		t.Fatalf("ping: %v %d %s", err, resp.Status, resp.Body)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := restErr(addr, "u", "p", "GET", "/ari/asterisk/ping", nil); err == nil {
		t.Error("still serving after Serve returned")
	}
}
