package freeswitch

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// Each fault below would end or hang a process using go-eventsocket's
// Connection (log.Fatal on an unknown Content-Type, a blocked reader). The
// driver must report it, become not ready, reconnect by itself and carry on.

// linkCycle checks the pattern every fault must give: link down with a
// reason that says what happened, not ready, then link up again.
func linkCycle(t *testing.T, td *testDriver, downsBefore int, reasonPart string) {
	t.Helper()
	n := 0
	down := td.rec.WaitFirst(t, "link down", func(e pbx.Event) bool {
		if e.Type != pbx.EventLinkDown {
			return false
		}
		n++
		return n > downsBefore
	})
	if !strings.Contains(down.Reason, reasonPart) {
		t.Errorf("link down reason %q does not say %q", down.Reason, reasonPart)
	}
	deadline := time.Now().Add(10 * time.Second)
	for td.rec.Count(pbxtest.IsType(pbx.EventLinkUp)) < downsBefore+2 {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect after %q; events: %s", reasonPart, pbxtest.Dump(td.rec.All()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	pbxtest.WaitReady(t, td)
}

func TestGivenUnknownContentTypeThenClearErrorNotReadyAndReconnect(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	emu.SendUnknownContentType()
	st := pbxtest.WaitNotReady(t, td)
	if !strings.Contains(st.Detail, "unknown Content-Type") {
		t.Errorf("status detail %q does not name the problem", st.Detail)
	}
	linkCycle(t, td, 0, "unknown Content-Type")
	if st := td.Status(); st.Reconnects != 1 {
		t.Errorf("reconnects = %d, want 1", st.Reconnects)
	}
	// Still working.
	leg := td.dial(t, "conf-r", "+12025550101")
	td.rec.WaitFirst(t, "connected after reconnect", pbxtest.Is(pbx.EventConnected, leg))
}

func TestGivenTruncatedFrameThenClearErrorNotReadyAndReconnect(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	emu.SendTruncatedFrame()
	st := pbxtest.WaitNotReady(t, td)
	if !strings.Contains(st.Detail, "truncated frame") {
		t.Errorf("status detail %q does not name the problem", st.Detail)
	}
	linkCycle(t, td, 0, "truncated frame")
}

func TestGivenServerThatStopsAnsweringThenNotReadyNoHangAndReconnect(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	emu.SetUnresponsive(true)
	st := pbxtest.WaitNotReady(t, td)
	if !strings.Contains(st.Detail, "no answer") {
		t.Errorf("status detail %q does not say the server stopped answering", st.Detail)
	}
	// Calls fail fast instead of hanging.
	start := time.Now()
	err := td.Dial(pbxtest.Ctx(t), pbx.DialRequest{LegID: newID(), ConferenceID: "c", Number: "+12025550101"})
	if !errors.Is(err, pbx.ErrUnavailable) {
		t.Errorf("Dial while the server is hung = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Dial hung for %s while the server did not answer", d)
	}
	// Reconnect attempts meet a server that accepts the socket and says
	// nothing: still not ready, Run still running.
	time.Sleep(700 * time.Millisecond)
	if td.Status().Ready {
		t.Error("ready while the server does not answer")
	}
	emu.SetUnresponsive(false)
	linkCycle(t, td, 0, "no answer")
}

func TestGivenACLRejectionThenClearErrorNotReadyAndReconnectOnceAllowed(t *testing.T) {
	emu := startEmu(t, nil)
	emu.SetRudeRejection(true)
	td := startDriver(t, emu.Addr(), false, nil)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(td.Status().Detail, "ACL") {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v does not say the ACL refused us", td.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if td.Status().Ready {
		t.Fatal("ready while rejected")
	}
	if err := td.Dial(pbxtest.Ctx(t), pbx.DialRequest{LegID: newID(), ConferenceID: "c", Number: "+12025550101"}); !errors.Is(err, pbx.ErrUnavailable) {
		t.Errorf("Dial while rejected = %v, want ErrUnavailable", err)
	}
	emu.SetRudeRejection(false)
	pbxtest.WaitReady(t, td)
	td.rec.WaitFirst(t, "link up", pbxtest.IsType(pbx.EventLinkUp))
}

func TestGivenWrongPasswordThenNotReadyWithClearDetail(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), false, func(c *Config) { c.Password = "wrong" })
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(td.Status().Detail, "password") {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v does not say the password was rejected", td.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(td.Status().Detail, "wrong") {
		t.Error("the status shows the password")
	}
}

func TestGivenUndecodableEventThenLostCountedAndLinkStaysUp(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	body := `{"Event-Name":"CHANNEL_ANSWER","Unique-ID":`
	emu.SendRaw("Content-Length: " + itoa(len(body)) + "\nContent-Type: text/event-json\n\n" + body)
	td.rec.WaitFirst(t, "lost", pbxtest.IsType(pbx.EventLost))
	if st := td.Status(); st.LostEvents != 1 || !st.Ready {
		t.Errorf("status %+v, want ready with 1 lost event", st)
	}
	if n := td.rec.Count(pbxtest.IsType(pbx.EventLinkDown)); n != 0 {
		t.Errorf("link went down %d times for one bad event", n)
	}
	leg := td.dial(t, "conf-l", "+12025550101")
	td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
}

// A handler that blocks must not stop the socket reader: commands still
// get their replies and events queue up until the handler resumes.
func TestGivenBlockedHandlerThenCommandsStillWorkAndNoEventIsLost(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	td.rec.WaitFirst(t, "link up", pbxtest.IsType(pbx.EventLinkUp))
	gate := make(chan struct{})
	var once sync.Once
	rec2 := pbxtest.NewRecorder()
	blocking := pbx.HandlerFunc(func(e pbx.Event) {
		once.Do(func() { <-gate })
		rec2.HandleEvent(e)
	})
	// A second driver (its own node tag, so the first does not see its
	// calls) whose handler blocks on its first event.
	cfg2 := td.cfg
	cfg2.Node = "blocked"
	d2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	stop := pbxtest.Run(t, d2, blocking)
	pbxtest.WaitReady(t, d2)
	var legs []string
	for range 5 {
		leg := newID()
		if err := d2.Dial(pbxtest.Ctx(t), pbx.DialRequest{LegID: leg, ConferenceID: "conf-b", Number: "+12025550101"}); err != nil {
			t.Fatalf("Dial with a blocked handler: %v", err)
		}
		legs = append(legs, leg)
	}
	// All five answer and join while the handler is blocked.
	deadline := time.Now().Add(5 * time.Second)
	for {
		snap, err := d2.Snapshot(pbxtest.Ctx(t))
		if err != nil {
			t.Fatalf("Snapshot with a blocked handler: %v", err)
		}
		in := 0
		for _, l := range snap.Legs {
			if l.InConference {
				in++
			}
		}
		if in == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d legs joined", in)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(gate)
	for _, leg := range legs {
		rec2.WaitFirst(t, "connected after unblocking", pbxtest.Is(pbx.EventConnected, leg))
		if td.rec.Count(func(e pbx.Event) bool { return e.LegID == leg }) != 0 {
			t.Errorf("the first driver reported a call of the second")
		}
	}
	if d2.Status().LostEvents != 0 {
		t.Errorf("events lost: %d", d2.Status().LostEvents)
	}
	stop()
}

// Commands from many goroutines go out one at a time and each gets its own
// reply (replies are matched to commands in order).
func TestGivenConcurrentCommandsThenEachGetsItsOwnReply(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	leg := td.dial(t, "conf-c", "+12025550101")
	td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			switch i % 3 {
			case 0:
				snap, err := td.Snapshot(ctx)
				if err == nil && (len(snap.Legs) != 1 || snap.Legs[0].LegID != leg) {
					err = errors.New("snapshot mixed up: " + describeSnap(snap))
				}
				errs <- err
			case 1:
				errs <- td.SetMute(ctx, "conf-c", leg, i%2 == 0)
			case 2:
				err := td.Hangup(ctx, newID())
				if errors.Is(err, pbx.ErrNotFound) {
					err = nil
				}
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func describeSnap(s pbx.Snapshot) string {
	var b strings.Builder
	for _, l := range s.Legs {
		b.WriteString(l.LegID + " ")
	}
	return b.String()
}

func TestFrameReaderNeverPanicsOnGarbage(t *testing.T) {
	cases := map[string]string{
		"no colon":            "Content-Type command/reply\n\n",
		"bad length":          "Content-Type: api/response\nContent-Length: x\n\n",
		"negative length":     "Content-Type: api/response\nContent-Length: -3\n\n",
		"huge length":         "Content-Type: api/response\nContent-Length: 99999999999\n\n",
		"truncated body":      "Content-Type: api/response\nContent-Length: 10\n\nabc",
		"header without end":  "Content-Type: api/response\nReply-Text: +OK",
		"empty header name":   ": value\n\n",
		"binary header":       "\x00\x01\x02\n\n",
		"short reply text":    "Content-Type: command/reply\nReply-Text: \n\n",
		"one byte api answer": "Content-Type: api/response\nContent-Length: 1\n\n0",
	}
	for name, in := range cases {
		br := bufio.NewReader(strings.NewReader(in))
		f, err := readFrame(br)
		switch name {
		case "short reply text", "one byte api answer":
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if name == "one byte api answer" && f.body != "0" {
				t.Errorf("%s: body %q", name, f.body)
			}
		default:
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("%s: err = %v, want ErrProtocol", name, err)
			}
		}
	}
	// Events whose JSON is not all strings are refused, not panicked on.
	if _, err := decodeEvent(frame{headers: map[string]string{"Content-Type": "text/event-json"}, body: `{"Event-Name":1}`}); err == nil {
		t.Error("a JSON event with a number value was accepted")
	}
	ev, err := decodeEvent(frame{headers: map[string]string{"Content-Type": "text/event-plain"},
		body: "Event-Name: BACKGROUND_JOB\nJob-Command-Arg: %7Borigination_uuid%3Dx%7D\nContent-Length: 15\n\n-ERR USER_BUSY\n"})
	if err != nil || ev.Get("Job-Command-Arg") != "{origination_uuid=x}" || ev.Body != "-ERR USER_BUSY\n" {
		t.Errorf("plain BACKGROUND_JOB decoded as %+v, %v", ev, err)
	}
}

func TestCauseNamesMapToQ850(t *testing.T) {
	for name, want := range map[string]int{
		"USER_BUSY": 17, "NO_USER_RESPONSE": 18, "NO_ANSWER": 19, "CALL_REJECTED": 21,
		"UNALLOCATED_NUMBER": 1, "NORMAL_CLEARING": 16, "NORMAL_CIRCUIT_CONGESTION": 34,
		"NETWORK_OUT_OF_ORDER": 38, "NORMAL_TEMPORARY_FAILURE": 41, "SWITCH_CONGESTION": 42,
		"ORIGINATOR_CANCEL": 487, "normal_clearing": 16,
	} {
		if got := causeCode(name, ""); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	if got := causeCode("SOMETHING_NEW", "44"); got != 44 {
		t.Errorf("unknown name falls back to the q850 variable: %d", got)
	}
	if got := causeCode("SOMETHING_NEW", ""); got != 0 {
		t.Errorf("unknown name without q850: %d", got)
	}
}
