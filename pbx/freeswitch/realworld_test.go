package freeswitch

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/eslemu"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// Tests of the call engine under real-world conditions (early media, slow
// originates, restarts, partitions, other replicas), against the emulator
// behaving as recorded.

// memberWatch polls the emulator and remembers whether the leg was ever a
// member of a room, and until when it was in none.
type memberWatch struct {
	mu       sync.Mutex
	everIn   bool
	firstIn  time.Time
	stop     chan struct{}
	finished chan struct{}
}

func watchMember(t *testing.T, emu *eslemu.Server, leg string) *memberWatch {
	t.Helper()
	w := &memberWatch{stop: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(w.finished)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if ch, ok := emuChannel(emu, leg); ok && ch.Conference != "" {
				w.mu.Lock()
				if !w.everIn {
					w.everIn, w.firstIn = true, time.Now()
				}
				w.mu.Unlock()
			}
		}
	}()
	t.Cleanup(w.done)
	return w
}

func (w *memberWatch) done() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.finished
}

func (w *memberWatch) result() (bool, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.everIn, w.firstIn
}

// 183 with early media, then 200 (…0183): ringing while the carrier's
// announcement plays, not in the room; connected and in the room only
// after the answer. The originate asks for ignore_early_media=true
// (recording p: without it the early media is in the mix).
func TestGivenEarlyMediaThenAnswer_whenDialed_thenRingingOutOfTheRoomUntilAnswered(t *testing.T) {
	emu := startEmu(t, func(c *eslemu.Config) { c.Timing.EarlyMedia = 800 * time.Millisecond })
	td := startDriver(t, emu.Addr(), true, nil)
	leg := td.dial(t, "conf-em", "+12025550183")
	w := watchMember(t, emu, leg)
	td.rec.WaitFirst(t, "ringing (183)", pbxtest.Is(pbx.EventRinging, leg))
	c := td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
	pbxtest.Eventually(t, "seen in the room", func() bool { in, _ := w.result(); return in })
	w.done()
	ch, ok := emuChannel(emu, leg)
	if !ok || !ch.Answered || ch.Conference != "conf-em" {
		t.Fatalf("after the answer: %+v", ch)
	}
	_, at := w.result()
	answered := td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg)).At
	if at.Before(answered.Add(-50 * time.Millisecond)) {
		t.Errorf("in the room at %v, before the answer at %v (early media in the mix)", at, answered)
	}
	if c.At.Sub(td.rec.WaitFirst(t, "ringing", pbxtest.Is(pbx.EventRinging, leg)).At) < 500*time.Millisecond {
		t.Errorf("connected too soon after the 183: early media taken as the answer")
	}
	var originate string
	for _, cmd := range emu.Commands() {
		if strings.HasPrefix(cmd, "bgapi originate ") && strings.Contains(cmd, leg) {
			originate = cmd
		}
	}
	if !strings.Contains(originate, "ignore_early_media=true") {
		t.Errorf("originate without ignore_early_media=true: %q", originate)
	}
}

// 183 with early media, then 480 (…0187): ringing, then ended with
// NO_USER_RESPONSE (18) from CHANNEL_HANGUP_COMPLETE; never in the room,
// never connected.
func TestGivenEarlyMediaThen480_whenDialed_thenEndedCause18NeverInTheRoom(t *testing.T) {
	emu := startEmu(t, func(c *eslemu.Config) { c.Timing.EarlyMedia = 500 * time.Millisecond })
	td := startDriver(t, emu.Addr(), true, nil)
	leg := td.dial(t, "conf-480", "+12025550187")
	w := watchMember(t, emu, leg)
	td.rec.WaitFirst(t, "ringing (183)", pbxtest.Is(pbx.EventRinging, leg))
	e := td.rec.WaitFirst(t, "ended", pbxtest.Is(pbx.EventEnded, leg))
	w.done()
	if e.Cause != pbx.CauseNoUserResponse || e.CauseText != "NO_USER_RESPONSE" {
		t.Errorf("ended %+v, want 18 NO_USER_RESPONSE", e)
	}
	if in, _ := w.result(); in {
		t.Error("the leg was a member of the room during its early media")
	}
	if n := td.rec.Count(pbxtest.Is(pbx.EventConnected, leg)); n != 0 {
		t.Errorf("connected %d times", n)
	}
	if n := td.rec.Count(pbxtest.Is(pbx.EventEnded, leg)); n != 1 {
		t.Errorf("ended %d times (the job's -ERR after the hangup must not end it again)", n)
	}
}

// Hang-up while FreeSWITCH still holds the originate (the channel does not
// exist: uuid_kill says "No such channel"): Hangup succeeds, the channel is
// hung up within a second of appearing, never rings for us and never
// joins the room; its end is reported as ours.
func TestGivenSlowOriginate_whenHungUpBeforeTheChannelExists_thenHungUpOnSightNeverInTheRoom(t *testing.T) {
	var mu sync.Mutex
	var created time.Time
	emu := startEmu(t, func(c *eslemu.Config) {
		c.OnOriginate = func(_ string, at time.Time) { mu.Lock(); created = at; mu.Unlock() }
	})
	emu.SetOriginateDelay(600 * time.Millisecond)
	td := startDriver(t, emu.Addr(), true, nil)
	leg := td.dial(t, "conf-slow", "+12025550101")
	if err := td.Hangup(pbxtest.Ctx(t), leg); err != nil {
		t.Fatalf("Hangup during the originate: %v", err)
	}
	w := watchMember(t, emu, leg)
	pbxtest.Eventually(t, "the channel appears", func() bool { mu.Lock(); defer mu.Unlock(); return !created.IsZero() })
	pbxtest.Eventually(t, "the channel is gone", func() bool { _, ok := emuChannel(emu, leg); return !ok })
	gone := time.Now()
	mu.Lock()
	lived := gone.Sub(created)
	mu.Unlock()
	if lived > time.Second {
		t.Errorf("the cancelled channel lived %v after appearing", lived)
	}
	e := td.rec.WaitFirst(t, "ended", pbxtest.Is(pbx.EventEnded, leg))
	if e.Reason != "hung up by convoice" {
		t.Errorf("ended %+v, want ours", e)
	}
	w.done()
	if in, _ := w.result(); in {
		t.Error("the cancelled leg joined the room")
	}
	for _, typ := range []pbx.EventType{pbx.EventRinging, pbx.EventConnected, pbx.EventAnswered} {
		if n := td.rec.Count(pbxtest.Is(typ, leg)); n != 0 {
			t.Errorf("%s reported %d times for a cancelled leg", typ, n)
		}
	}
	if len(emu.Conferences()) != 0 {
		t.Errorf("rooms left: %+v", emu.Conferences())
	}
}

// A FreeSWITCH that restarted while we were away is another process (new
// Core-UUID) even when calls with our leg ids exist on it: restart.
func TestGivenRestartWhileAway_whenOurLegIDsExistAgain_thenPBXRestartedByCoreUUID(t *testing.T) {
	emu := startEmu(t, func(c *eslemu.Config) { c.Timing.Hold = time.Minute })
	d := newTestDriver(t, emu.Addr(), nil)
	td := &testDriver{Driver: d, rec: pbxtest.NewRecorder()}
	td.stop = pbxtest.Run(t, d, td.rec)
	pbxtest.WaitReady(t, d)
	leg := td.dial(t, "conf-rs", "+12025550101")
	td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
	td.stop()

	emu.RestartHard()
	// The same leg id on the new process (e.g. placed again by another
	// replica): the old guess "none of our calls exist" would miss the
	// restart.
	r := rawClient(t, emu.Addr())
	if reply := r.send("bgapi originate {origination_uuid=" + leg + ",convoice_node=convoice,convoice_conference=conf-rs}sofia/gateway/pbx/+12025550101 &conference(conf-rs@default)"); !strings.HasPrefix(reply.get("Reply-Text"), "+OK") {
		t.Fatalf("originate: %v", reply)
	}
	pbxtest.Eventually(t, "the same id on the new process", func() bool { _, ok := emuChannel(emu, leg); return ok })

	rec := pbxtest.NewRecorder()
	pbxtest.Run(t, d, rec)
	e := rec.WaitFirst(t, "pbx restarted", pbxtest.IsType(pbx.EventPBXRestarted))
	if !strings.Contains(e.Reason, "Core-UUID") {
		t.Errorf("restart reason %q", e.Reason)
	}
}

// A dropped socket is not a restart: same Core-UUID, nothing ended, even
// with every one of our calls gone meanwhile (those are reported one by
// one from the snapshot, not as a restart).
func TestGivenReconnectToTheSameProcess_thenNoRestartEvenWithOurCallsGone(t *testing.T) {
	emu := startEmu(t, func(c *eslemu.Config) { c.Timing.Hold = time.Minute })
	td := startDriver(t, emu.Addr(), true, nil)
	stay := td.dial(t, "conf-rc", "+12025550101")
	td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, stay))

	emu.DropConnections()
	td.rec.WaitFirst(t, "link down", pbxtest.IsType(pbx.EventLinkDown))
	td.rec.WaitFor(t, "link up again", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) >= 2 })
	if n := td.rec.Count(pbxtest.Is(pbx.EventEnded, stay)); n != 0 {
		t.Fatalf("a call still up was ended by a reconnect: %s", pbxtest.Dump(td.rec.All()))
	}

	// Now the only call ends while we are away: still no restart.
	emu.SetRudeRejection(true)
	emu.DropConnections()
	pbxtest.WaitNotReady(t, td)
	if err := emu.FarEndHangup(stay); err != nil {
		t.Fatal(err)
	}
	emu.SetRudeRejection(false)
	e := td.rec.WaitFirst(t, "the gone call ended", pbxtest.Is(pbx.EventEnded, stay))
	if e.Cause != 0 || e.Reason == "" {
		t.Errorf("ended %+v, want cause 0 with a reason", e)
	}
	if n := td.rec.Count(pbxtest.IsType(pbx.EventPBXRestarted)); n != 0 {
		t.Fatalf("reconnects to the same FreeSWITCH reported as a restart: %s", pbxtest.Dump(td.rec.All()))
	}
}

// A partition longer than a few pings: not ready, link down, reconnected
// when healed, same Core-UUID: link up, no restart, the call still up is
// not ended, the call that ended during the partition is reported ended
// from the resync.
func TestGivenPartition_whenHealed_thenLinkUpNoRestartLiveCallsKept(t *testing.T) {
	emu := startEmu(t, func(c *eslemu.Config) { c.Timing.Hold = time.Minute })
	td := startDriver(t, emu.Addr(), true, nil)
	stay := td.dial(t, "conf-part", "+12025550101")
	gone := td.dial(t, "conf-part", "+12025550102")
	td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, stay))
	td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, gone))

	emu.SetPartitioned(true)
	td.rec.WaitFirst(t, "link down", pbxtest.IsType(pbx.EventLinkDown))
	if td.Status().Ready {
		t.Error("ready during the partition")
	}
	if err := emu.FarEndHangup(gone); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * 100 * time.Millisecond) // several ping intervals more
	emu.SetPartitioned(false)
	td.rec.WaitFor(t, "link up again", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) >= 2 })
	pbxtest.WaitReady(t, td)
	td.rec.WaitFirst(t, "the call gone in the partition ended", pbxtest.Is(pbx.EventEnded, gone))
	if n := td.rec.Count(pbxtest.Is(pbx.EventEnded, stay)); n != 0 {
		t.Errorf("the call still up was ended: %s", pbxtest.Dump(td.rec.All()))
	}
	if n := td.rec.Count(pbxtest.IsType(pbx.EventPBXRestarted)); n != 0 {
		t.Errorf("a partition reported as a restart")
	}
	if ch, ok := emuChannel(emu, stay); !ok || ch.Conference != "conf-part" {
		t.Errorf("the call still up: %+v", ch)
	}
}

// A replica without the event connection hangs up a ringing leg another
// replica placed (the controller passes the ids of a conference's legs):
// it is cancelled on FreeSWITCH and the owner reports its end.
func TestGivenPassiveReplica_whenItHangsUpALegItNeverPlaced_thenTheLegEnds(t *testing.T) {
	emu := startEmu(t, nil)
	owner := startDriver(t, emu.Addr(), true, func(c *Config) { c.RingTimeout = 30 * time.Second })
	passive := startPassive(t, emu.Addr())
	leg := owner.dial(t, "conf-pe", "+12025550480")
	owner.rec.WaitFirst(t, "ringing", pbxtest.Is(pbx.EventRinging, leg))
	if err := passive.Hangup(pbxtest.Ctx(t), leg); err != nil {
		t.Fatalf("passive Hangup: %v", err)
	}
	owner.rec.WaitFirst(t, "ended", pbxtest.Is(pbx.EventEnded, leg))
	if err := passive.EndConference(pbxtest.Ctx(t), "conf-pe"); err != nil {
		t.Fatal(err)
	}
	if len(emu.Channels()) != 0 {
		t.Errorf("left on the PBX: %+v", emu.Channels())
	}
}

// Confirm-to-join (recording q): …0111 answers, hears the prompt, presses 1
// and only then enters the room (EventAnswered, then EventConnected on
// add-member); …0190 never presses, is hung up after Tries×Timeout and
// never was in the room. The originate runs the recorded inline dialplan.
func TestGivenConfirm_then0111JoinsOnlyAfterTheKeyAnd0190IsHungUpNeverInTheRoom(t *testing.T) {
	emu := startEmu(t, func(c *eslemu.Config) { c.Timing.DigitAfter = 1200 * time.Millisecond })
	td := startDriver(t, emu.Addr(), true, nil)
	confirm := &pbx.Confirm{Timeout: 400 * time.Millisecond, Tries: 2}
	legs := map[string]string{}
	for _, number := range []string{"+12025550111", "+12025550190"} {
		leg := newID()
		legs[number] = leg
		if err := td.Dial(pbxtest.Ctx(t), pbx.DialRequest{LegID: leg, ConferenceID: "conf-k", Number: number, Confirm: confirm}); err != nil {
			t.Fatal(err)
		}
	}
	key, vm := legs["+12025550111"], legs["+12025550190"]
	wKey, wVM := watchMember(t, emu, key), watchMember(t, emu, vm)
	answered := td.rec.WaitFirst(t, "0111 answered", pbxtest.Is(pbx.EventAnswered, key))
	connected := td.rec.WaitFirst(t, "0111 connected", pbxtest.Is(pbx.EventConnected, key))
	pbxtest.Eventually(t, "0111 in the room", func() bool { in, _ := wKey.result(); return in })
	_, firstIn := wKey.result()
	if firstIn.Before(answered.At.Add(time.Second)) {
		t.Errorf("0111 in the room %v after the answer, before its key", firstIn.Sub(answered.At))
	}
	if connected.At.Before(answered.At.Add(time.Second)) {
		t.Errorf("connected %v after the answer, before the key", connected.At.Sub(answered.At))
	}
	td.rec.WaitFirst(t, "0190 answered", pbxtest.Is(pbx.EventAnswered, vm))
	e := td.rec.WaitFirst(t, "0190 ended", pbxtest.Is(pbx.EventEnded, vm))
	wVM.done()
	if in, _ := wVM.result(); in {
		t.Error("the voicemail box was in the room")
	}
	if n := td.rec.Count(pbxtest.Is(pbx.EventConnected, vm)); n != 0 || e.Cause != pbx.CauseNormalClearing {
		t.Errorf("0190: connected %d times, ended %+v", n, e)
	}
	var originate string
	for _, cmd := range emu.Commands() {
		if strings.HasPrefix(cmd, "bgapi originate ") && strings.Contains(cmd, key) {
			originate = cmd
		}
	}
	want := " '^^;play_and_get_digits:1 1 2 400 # file_string://voicemail/vm-press.wav!digits/1.wav silence_stream://250 convoice_confirm_digit 1;transfer:${cond(x${convoice_confirm_digit} == x1 ? conf-conf-k XML default : hangup inline)}' inline"
	if !strings.HasSuffix(originate, want) {
		t.Errorf("originate %q\nwant it to end with %q", originate, want)
	}
	// Without Confirm nothing changed: the room on the answer, no
	// EventAnswered.
	plain := td.dial(t, "conf-k", "+12025550101")
	td.rec.WaitFirst(t, "plain connected", pbxtest.Is(pbx.EventConnected, plain))
	if n := td.rec.Count(pbxtest.Is(pbx.EventAnswered, plain)); n != 0 {
		t.Errorf("EventAnswered without Confirm")
	}
}
