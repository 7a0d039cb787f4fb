package eslemu

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emuserver"
)

func startTestEmu(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{Timing: emuphone.Timing{Ring: 100 * time.Millisecond, Hold: 200 * time.Millisecond}, SignalDelay: 10 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	s := New(cfg)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// login opens a client, authenticates and subscribes to every event.
func login(t *testing.T, s *Server, format string) *client {
	t.Helper()
	c := dialClient(t, s.Addr())
	t.Cleanup(c.close)
	c.waitFor(5*time.Second, func(fs []frame, _ bool) bool { return len(fs) > 0 })
	if r := c.cmd("auth ClueCon"); r.headers["Reply-Text"] != "+OK accepted" {
		t.Fatalf("auth: %+v", r)
	}
	if r := c.cmd("event " + format + " ALL"); r.headers["Reply-Text"] != "+OK event listener enabled "+format {
		t.Fatalf("event: %+v", r)
	}
	return c
}

func waitEvent(t *testing.T, c *client, what string, pred func(evt) bool) evt {
	t.Helper()
	var got evt
	if !c.waitFor(5*time.Second, func(fs []frame, _ bool) bool {
		for _, e := range c.events() {
			if pred(e) {
				got = e
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no %s", what)
	}
	return got
}

func hangupOf(uuid string) func(evt) bool {
	return func(e evt) bool { return e.name() == "CHANNEL_HANGUP_COMPLETE" && e.get("Unique-ID") == uuid }
}

func TestPhonesOfTheContractThroughGatewayDialStrings(t *testing.T) {
	originated := make(chan string, 10)
	s := startTestEmu(t, func(c *Config) {
		c.OnOriginate = func(uuid string, at time.Time) {
			if !at.IsZero() {
				originated <- uuid
			}
		}
	})
	c := login(t, s, "plain") // plain events: URL-encoded, decoded by the client
	cases := map[string]string{
		"+12025550486": "USER_BUSY",
		"+12025550480": "NO_ANSWER",
		"+12025550603": "CALL_REJECTED",
		"+12025550404": "UNALLOCATED_NUMBER",
		"+12025550503": "NORMAL_TEMPORARY_FAILURE",
		"+12025550200": "NORMAL_CLEARING", // answers, then the far end hangs up
	}
	uuids := map[string]string{}
	for number := range cases {
		u := emuserver.UUID()
		uuids[number] = u
		r := c.cmd("bgapi originate {origination_uuid=" + u + ",originate_timeout=1}sofia/gateway/pbx/" + number + " &conference(r1@default)")
		if !strings.HasPrefix(r.headers["Reply-Text"], "+OK Job-UUID: ") {
			t.Fatalf("bgapi: %+v", r)
		}
	}
	for number, cause := range cases {
		e := waitEvent(t, c, "hangup of "+number, hangupOf(uuids[number]))
		if e.get("Hangup-Cause") != cause {
			t.Errorf("%s: Hangup-Cause %q, want %q", number, e.get("Hangup-Cause"), cause)
		}
		if e.get("Caller-Destination-Number") != number {
			t.Errorf("%s: destination %q (the + must survive URL encoding)", number, e.get("Caller-Destination-Number"))
		}
	}
	// 0200 answered and joined before hanging up.
	waitEvent(t, c, "add-member of 0200", func(e evt) bool {
		return e.get("Action") == "add-member" && e.get("Unique-ID") == uuids["+12025550200"]
	})
	if n := len(s.Channels()); n != 0 {
		t.Errorf("%d channels left", n)
	}
	for deadline := time.Now().Add(2 * time.Second); len(originated) < len(cases) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if len(originated) != len(cases) {
		t.Errorf("OnOriginate called %d times for %d originates", len(originated), len(cases))
	}
	if got := s.Commands(); len(got) != len(cases) || !strings.HasPrefix(got[0], "bgapi originate {origination_uuid=") {
		t.Errorf("Commands() = %q", got)
	}
}

func TestDropConnectionsKeepsCalls(t *testing.T) {
	s := startTestEmu(t, nil)
	c := login(t, s, "json")
	u := emuserver.UUID()
	c.cmd("bgapi originate {origination_uuid=" + u + "}sofia/gateway/pbx/+12025550101 &conference(room@default)")
	waitEvent(t, c, "add-member", func(e evt) bool { return e.get("Action") == "add-member" })
	s.DropConnections()
	if !c.waitFor(5*time.Second, func(_ []frame, closed bool) bool { return closed }) {
		t.Fatal("socket not closed")
	}
	fs, _, _ := c.snapshot()
	for _, f := range fs {
		if f.ct == "text/disconnect-notice" {
			t.Error("a dropped connection got a disconnect notice")
		}
	}
	chans := s.Channels()
	if len(chans) != 1 || chans[0].Conference != "room" || !chans[0].Answered {
		t.Fatalf("call did not survive the drop: %+v", chans)
	}
	confs := s.Conferences()
	if len(confs) != 1 || len(confs[0].Members) != 1 || confs[0].Members[0].UUID != u {
		t.Fatalf("conferences: %+v", confs)
	}
}

func TestUnresponsiveServerAnswersLater(t *testing.T) {
	s := startTestEmu(t, nil)
	c := login(t, s, "json")
	s.SetUnresponsive(true)
	c.write("api status\n\n")
	time.Sleep(200 * time.Millisecond)
	fs, _, _ := c.snapshot()
	before := len(fs)
	for _, f := range fs {
		if f.ct == "api/response" {
			t.Fatal("answered while unresponsive")
		}
	}
	s.SetUnresponsive(false)
	if !c.waitFor(5*time.Second, func(fs []frame, _ bool) bool {
		for _, f := range fs[before:] {
			if f.ct == "api/response" && strings.HasPrefix(f.body, "UP ") {
				return true
			}
		}
		return false
	}) {
		t.Fatal("no answer after waking up")
	}
}

func TestRestartGracefulAndHard(t *testing.T) {
	s := startTestEmu(t, func(c *Config) { c.FirstMemberID = 5 })
	c := login(t, s, "json")
	u := emuserver.UUID()
	c.cmd("bgapi originate {origination_uuid=" + u + "}sofia/gateway/pbx/+12025550101 &conference(room@default)")
	add := waitEvent(t, c, "add-member", func(e evt) bool { return e.get("Action") == "add-member" })
	if add.get("Member-ID") != "5" {
		t.Errorf("first member id %q, want 5", add.get("Member-ID"))
	}
	core := add.get("Core-UUID")
	s.Restart()
	waitEvent(t, c, "SHUTDOWN", func(e evt) bool { return e.name() == "SHUTDOWN" })
	if e := waitEvent(t, c, "hangup", hangupOf(u)); e.get("Hangup-Cause") != "SYSTEM_SHUTDOWN" {
		t.Errorf("cause %q", e.get("Hangup-Cause"))
	}
	if !c.waitFor(5*time.Second, func(_ []frame, closed bool) bool { return closed }) {
		t.Fatal("socket not closed by the restart")
	}
	fs, eof, _ := c.snapshot()
	if last := fs[len(fs)-1]; last.ct != "text/disconnect-notice" || last.body != "The system is being shut down.\n" || !eof {
		t.Errorf("last frame %+v, eof %v", last, eof)
	}
	if len(s.Channels()) != 0 || len(s.Conferences()) != 0 {
		t.Error("calls survived the restart")
	}

	// The new process: new Core-UUID, member ids from the start again.
	c2 := login(t, s, "json")
	u2 := emuserver.UUID()
	c2.cmd("bgapi originate {origination_uuid=" + u2 + "}sofia/gateway/pbx/+12025550101 &conference(room@default)")
	add2 := waitEvent(t, c2, "add-member", func(e evt) bool { return e.get("Action") == "add-member" })
	if add2.get("Member-ID") != "5" || add2.get("Core-UUID") == core {
		t.Errorf("after restart: member %q core %q (before %q)", add2.get("Member-ID"), add2.get("Core-UUID"), core)
	}
	s.RestartHard()
	if !c2.waitFor(5*time.Second, func(_ []frame, closed bool) bool { return closed }) {
		t.Fatal("socket not closed by the crash")
	}
	fs, _, _ = c2.snapshot()
	for _, f := range fs {
		if f.ct == "text/disconnect-notice" {
			t.Error("a crash sent a notice")
		}
	}
	for _, e := range c2.events() {
		if e.name() == "CHANNEL_HANGUP_COMPLETE" {
			t.Error("a crash sent hangups")
		}
	}
	if len(s.Channels()) != 0 {
		t.Error("calls survived the crash")
	}
}

func TestRudeRejectionAndRawFrames(t *testing.T) {
	s := startTestEmu(t, nil)
	s.SetRudeRejection(true)
	c := dialClient(t, s.Addr())
	defer c.close()
	if !c.waitFor(5*time.Second, func(_ []frame, closed bool) bool { return closed }) {
		t.Fatal("rejected socket not closed")
	}
	fs, _, _ := c.snapshot()
	if len(fs) != 2 || fs[0].ct != "text/rude-rejection" || fs[0].body != "Access Denied, go away.\n" || fs[1].ct != "text/disconnect-notice" {
		t.Fatalf("frames %+v", fs)
	}
	s.SetRudeRejection(false)

	a := login(t, s, "json")
	s.SendUnknownContentType()
	if !a.waitFor(5*time.Second, func(fs []frame, _ bool) bool { return fs[len(fs)-1].ct == "text/x-convoice-unknown" }) {
		t.Fatal("no unknown frame")
	}
	s.SendTruncatedFrame()
	if !a.waitFor(5*time.Second, func(_ []frame, closed bool) bool { return closed }) {
		t.Fatal("truncated frame did not end the socket")
	}
	if _, _, err := a.snapshot(); err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("client error %v, want an unexpected EOF inside the frame", err)
	}
}

func TestServeStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", Config{}) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}
