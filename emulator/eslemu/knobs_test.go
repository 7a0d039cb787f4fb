package eslemu

import (
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emuserver"
)

func originateCmd(u, number string) string {
	return "bgapi originate {origination_uuid=" + u + ",originate_timeout=20}sofia/gateway/pbx/" + number + " &conference(room@default)"
}

func TestGivenOriginateDelayWhenOriginatingThenReplyAtOnceAndChannelLater(t *testing.T) {
	s := startTestEmu(t, nil)
	c := login(t, s, "json")
	s.SetOriginateDelay(400 * time.Millisecond)
	u := emuserver.UUID()
	start := time.Now()
	if r := c.cmd(originateCmd(u, "+12025550101")); !strings.HasPrefix(r.headers["Reply-Text"], "+OK Job-UUID: ") {
		t.Fatalf("bgapi reply %+v", r)
	}
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Errorf("the bgapi reply took %v; FreeSWITCH answers it at once", el)
	}
	// The channel does not exist yet.
	if r := c.cmd("api uuid_kill " + u); r.body != "-ERR No such channel!\n" {
		t.Errorf("uuid_kill during the delay: %q", r.body)
	}
	for _, e := range c.events() {
		if e.get("Unique-ID") == u {
			t.Fatalf("%s before the originate delay ended", e.name())
		}
	}
	waitEvent(t, c, "CHANNEL_OUTGOING", func(e evt) bool { return e.name() == "CHANNEL_OUTGOING" && e.get("Unique-ID") == u })
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Errorf("channel after %v, want the 400ms delay", el)
	}
	job := waitEvent(t, c, "BACKGROUND_JOB", func(e evt) bool { return e.name() == "BACKGROUND_JOB" })
	if job.body != "+OK "+u+"\n" {
		t.Errorf("job result %q", job.body)
	}
}

func TestGivenAnswerDelayWhenDialingThenOrdinaryPhonesRingThatLong(t *testing.T) {
	s := startTestEmu(t, nil) // Ring 100 ms
	c := login(t, s, "json")
	s.SetAnswerDelay(600 * time.Millisecond)
	u := emuserver.UUID()
	c.cmd(originateCmd(u, "+12025550101"))
	waitEvent(t, c, "CHANNEL_CREATE", func(e evt) bool { return e.name() == "CHANNEL_CREATE" && e.get("Unique-ID") == u })
	start := time.Now()
	waitEvent(t, c, "CHANNEL_ANSWER", func(e evt) bool { return e.name() == "CHANNEL_ANSWER" && e.get("Unique-ID") == u })
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Errorf("answered %v after the channel was created, want about 600ms", el)
	}
	s.SetAnswerDelay(0)
	u2 := emuserver.UUID()
	c.cmd(originateCmd(u2, "+12025550101"))
	waitEvent(t, c, "CHANNEL_CREATE", func(e evt) bool { return e.name() == "CHANNEL_CREATE" && e.get("Unique-ID") == u2 })
	start = time.Now()
	waitEvent(t, c, "CHANNEL_ANSWER", func(e evt) bool { return e.name() == "CHANNEL_ANSWER" && e.get("Unique-ID") == u2 })
	if el := time.Since(start); el > 400*time.Millisecond {
		t.Errorf("answered %v after creation with the delay off, want the configured 100ms", el)
	}
}

// A partition: nothing is written, not even the auth/request of a socket
// opened during it; phones go on (a 0200 phone hangs up meanwhile), calls
// survive a short and a long partition, and Core-UUID stays the same across
// reconnects of the same process.
func TestGivenPartitionWhenItEndsThenCallsWentOnAndCoreUUIDIsTheSame(t *testing.T) {
	s := startTestEmu(t, func(c *Config) { c.Timing = emuphone.Timing{Ring: 50 * time.Millisecond, Hold: 300 * time.Millisecond} })
	c := login(t, s, "json")
	stays, byes := emuserver.UUID(), emuserver.UUID()
	c.cmd(originateCmd(stays, "+12025550101"))
	c.cmd(originateCmd(byes, "+12025550200"))
	add := waitEvent(t, c, "add-member", func(e evt) bool { return e.get("Action") == "add-member" && e.get("Unique-ID") == byes })
	core := add.get("Core-UUID")

	for _, long := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond} {
		s.SetPartitioned(true)
		time.Sleep(50 * time.Millisecond) // a batch being written when it started
		before := len(c.events())
		fresh := dialClient(t, s.Addr())
		time.Sleep(long)
		if fs, _, _ := fresh.snapshot(); len(fs) != 0 {
			t.Fatalf("a socket opened during the partition got %d frames (first %q)", len(fs), fs[0].ct)
		}
		if n := len(c.events()); n != before {
			t.Fatalf("%d events written during the partition", n-before)
		}
		s.SetPartitioned(false)
		if !fresh.waitFor(3*time.Second, func(fs []frame, _ bool) bool { return len(fs) > 0 && fs[0].ct == "auth/request" }) {
			t.Error("the socket opened during the partition got no auth/request after it")
		}
		fresh.close()
		chans := s.Channels()
		if len(chans) != 1 || chans[0].UUID != stays || chans[0].Conference != "room" {
			t.Fatalf("after a %v partition: %+v, want only the leg that stays, in its room", long, chans)
		}
	}
	// The BYE of the 0200 phone during the first partition reaches us now.
	if e := waitEvent(t, c, "hangup", hangupOf(byes)); e.get("Hangup-Cause") != "NORMAL_CLEARING" {
		t.Errorf("0200 hung up with %q", e.get("Hangup-Cause"))
	}
	c.close()
	c2 := login(t, s, "json")
	if r := c2.cmd("api uuid_kill " + stays); r.body != "+OK\n" {
		t.Fatalf("uuid_kill: %q", r.body)
	}
	e := waitEvent(t, c2, "hangup", hangupOf(stays))
	if e.get("Core-UUID") != core {
		t.Errorf("Core-UUID %s after a reconnect, was %s: the same process must keep it", e.get("Core-UUID"), core)
	}
}
