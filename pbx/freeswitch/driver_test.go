package freeswitch

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/eslemu"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

func TestGivenAnsweringPhoneWhenDialedThenRingingThenConnectedInTheRoom(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	leg := td.dial(t, "conf-1", "+12025550101")

	td.rec.WaitFirst(t, "ringing", pbxtest.Is(pbx.EventRinging, leg))
	c := td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
	if c.ConferenceID != "conf-1" {
		t.Errorf("connected event conference = %q, want conf-1", c.ConferenceID)
	}
	ch, ok := emuChannel(emu, leg)
	if !ok || !ch.Answered || ch.Conference != "conf-1" {
		t.Fatalf("emulator channel = %+v (found %v), want answered in conf-1", ch, ok)
	}
	// The originate: our id, timeout, caller id, tag, the route's dial
	// string, the room on the configured profile.
	var originate string
	for _, cmd := range emu.Commands() {
		if strings.HasPrefix(cmd, "bgapi originate ") {
			originate = cmd
		}
	}
	for _, want := range []string{"origination_uuid=" + leg, "originate_timeout=5", "convoice_node=convoice",
		"convoice_conference=conf-1", "origination_caller_id_number=+12025550100",
		"origination_caller_id_name='Convoice Inc.'", "}sofia/gateway/pbx/+12025550101 &conference(conf-1@default)"} {
		if !strings.Contains(originate, want) {
			t.Errorf("originate %q lacks %q", originate, want)
		}
	}
	// Ringing comes before connected, once each.
	evs := td.rec.All()
	ri, ci := -1, -1
	for i, e := range evs {
		if e.LegID != leg {
			continue
		}
		switch e.Type {
		case pbx.EventRinging:
			if ri >= 0 {
				t.Error("ringing reported twice")
			}
			ri = i
		case pbx.EventConnected:
			ci = i
		}
	}
	if ri > ci {
		t.Errorf("ringing (%d) after connected (%d)", ri, ci)
	}
}

func TestGivenScriptedPhonesWhenDialedThenEndedWithTheRecordedCause(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, func(c *Config) { c.RingTimeout = time.Second })
	cases := []struct {
		number    string
		cause     int
		causeText string
		rings     bool
	}{
		{"+12025550486", 17, "USER_BUSY", false},
		{"+12025550480", 19, "NO_ANSWER", true},
		{"+12025550603", 21, "CALL_REJECTED", false},
		{"+12025550404", 1, "UNALLOCATED_NUMBER", false},
		// 503 from the far end: FreeSWITCH says NORMAL_TEMPORARY_FAILURE (recording d).
		{"+12025550503", 41, "NORMAL_TEMPORARY_FAILURE", false},
	}
	legs := map[string]string{}
	for _, c := range cases {
		legs[c.number] = td.dial(t, "conf-outcomes", c.number)
	}
	for _, c := range cases {
		leg := legs[c.number]
		e := td.rec.WaitFirst(t, "end of "+c.number, pbxtest.Is(pbx.EventEnded, leg))
		if e.Cause != c.cause || e.CauseText != c.causeText {
			t.Errorf("%s: ended with %d %q, want %d %q", c.number, e.Cause, e.CauseText, c.cause, c.causeText)
		}
		if n := td.rec.Count(pbxtest.Is(pbx.EventConnected, leg)); n != 0 {
			t.Errorf("%s: reported connected", c.number)
		}
		if rang := td.rec.Count(pbxtest.Is(pbx.EventRinging, leg)) > 0; rang != c.rings {
			t.Errorf("%s: ringing reported = %v, want %v", c.number, rang, c.rings)
		}
		if n := td.rec.Count(pbxtest.Is(pbx.EventEnded, leg)); n != 1 {
			t.Errorf("%s: ended reported %d times", c.number, n)
		}
	}
	if n := len(emu.Channels()); n != 0 {
		t.Errorf("emulator still has %d channels", n)
	}
}

func TestGivenEarlyMediaWhenRingingThenNeverConnected(t *testing.T) {
	emu := startEmu(t, func(c *eslemu.Config) { c.EarlyMedia = true })
	td := startDriver(t, emu.Addr(), true, func(c *Config) { c.RingTimeout = time.Second })
	leg := td.dial(t, "conf-early", "+12025550480")
	td.rec.WaitFirst(t, "ringing (183)", pbxtest.Is(pbx.EventRinging, leg))
	e := td.rec.WaitFirst(t, "no answer", pbxtest.Is(pbx.EventEnded, leg))
	if e.Cause != 19 || td.rec.Count(pbxtest.Is(pbx.EventConnected, leg)) != 0 {
		t.Fatalf("early media leg: ended %d, connected %d times; want 19 and never", e.Cause, td.rec.Count(pbxtest.Is(pbx.EventConnected, leg)))
	}
}

func TestGivenBadRequestsWhenDialingThenRefused(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	ctx := pbxtest.Ctx(t)
	for name, req := range map[string]pbx.DialRequest{
		"not a number":       {LegID: newID(), ConferenceID: "c1", Number: "12ab"},
		"dial string breaks": {LegID: newID(), ConferenceID: "c1", Number: "+1202555&0101"},
		"leg id not a uuid":  {LegID: "leg-1", ConferenceID: "c1", Number: "+12025550101"},
		"room name unsafe":   {LegID: newID(), ConferenceID: "c1 &park()", Number: "+12025550101"},
	} {
		if err := td.Dial(ctx, req); !errors.Is(err, pbx.ErrRefused) {
			t.Errorf("%s: Dial = %v, want ErrRefused", name, err)
		}
	}
	for _, cmd := range emu.Commands() {
		if strings.Contains(cmd, "originate") || strings.Contains(cmd, "uuid_exists") {
			t.Errorf("a refused dial reached FreeSWITCH: %q", cmd)
		}
	}

	// FreeSWITCH refusing the job (the route names a gateway it does not
	// have): the leg ends with its cause.
	leg := td.dial(t, "c1", "+15550000101")
	e := td.rec.WaitFirst(t, "refused originate", pbxtest.Is(pbx.EventEnded, leg))
	if e.Cause != 608 || e.CauseText != "INVALID_GATEWAY" {
		t.Errorf("unknown gateway: ended %d %q, want 608 INVALID_GATEWAY", e.Cause, e.CauseText)
	}

	// The same leg id twice.
	dup := td.dial(t, "c1", "+12025550101")
	err := td.Dial(ctx, pbx.DialRequest{LegID: dup, ConferenceID: "c1", Number: "+12025550101"})
	if !errors.Is(err, pbx.ErrExists) {
		t.Errorf("second Dial with the same leg id = %v, want ErrExists", err)
	}
}

func TestGivenConnectedLegWhenMutedAndUnmutedThenTheRoomFollows(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	leg := td.dial(t, "conf-mute", "+12025550101")
	td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
	ctx := pbxtest.Ctx(t)

	if err := td.SetMute(ctx, "conf-mute", leg, true); err != nil {
		t.Fatalf("mute: %v", err)
	}
	if ch, _ := emuChannel(emu, leg); !ch.Muted {
		t.Fatalf("emulator member not muted: %+v", ch)
	}
	snap, err := td.Snapshot(ctx)
	if err != nil || len(snap.Legs) != 1 || !snap.Legs[0].Muted {
		t.Fatalf("snapshot after mute = %+v, %v", snap, err)
	}
	if err := td.SetMute(ctx, "conf-mute", leg, false); err != nil {
		t.Fatalf("unmute: %v", err)
	}
	if ch, _ := emuChannel(emu, leg); ch.Muted {
		t.Fatalf("emulator member still muted: %+v", ch)
	}
	var cmds []string
	for _, c := range emu.Commands() {
		if strings.Contains(c, " mute ") || strings.Contains(c, " unmute ") {
			cmds = append(cmds, c)
		}
	}
	ch, _ := emuChannel(emu, leg)
	want := []string{"api conference conf-mute mute " + itoa(ch.MemberID), "api conference conf-mute unmute " + itoa(ch.MemberID)}
	if strings.Join(cmds, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q, want %q", cmds, want)
	}

	ringing := td.dial(t, "conf-mute", "+12025550480")
	td.rec.WaitFirst(t, "ringing", pbxtest.Is(pbx.EventRinging, ringing))
	if err := td.SetMute(ctx, "conf-mute", ringing, true); !errors.Is(err, pbx.ErrNotReady) {
		t.Errorf("mute a ringing leg = %v, want ErrNotReady", err)
	}
	if err := td.SetMute(ctx, "conf-mute", newID(), true); !errors.Is(err, pbx.ErrNotFound) {
		t.Errorf("mute an unknown leg = %v, want ErrNotFound", err)
	}
}

func TestGivenLegsWhenHungUpKickedOrByeThenEndedWithCause(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	ctx := pbxtest.Ctx(t)

	// Hangup of a connected leg: NORMAL_CLEARING, and it was us.
	a := td.dial(t, "conf-h", "+12025550101")
	td.rec.WaitFirst(t, "connected a", pbxtest.Is(pbx.EventConnected, a))
	if err := td.Hangup(ctx, a); err != nil {
		t.Fatal(err)
	}
	e := td.rec.WaitFirst(t, "end a", pbxtest.Is(pbx.EventEnded, a))
	if e.Cause != 16 || e.Reason != "hung up by convoice" {
		t.Errorf("hangup connected: %d %q %q", e.Cause, e.CauseText, e.Reason)
	}
	if err := td.Hangup(ctx, a); !errors.Is(err, pbx.ErrNotFound) {
		t.Errorf("second hangup = %v, want ErrNotFound", err)
	}

	// Hangup of a ringing leg: cancelled (ORIGINATOR_CANCEL, recording i).
	b := td.dial(t, "conf-h", "+12025550480")
	td.rec.WaitFirst(t, "ringing b", pbxtest.Is(pbx.EventRinging, b))
	if err := td.Hangup(ctx, b); err != nil {
		t.Fatal(err)
	}
	e = td.rec.WaitFirst(t, "end b", pbxtest.Is(pbx.EventEnded, b))
	if e.Cause != 487 || e.CauseText != "ORIGINATOR_CANCEL" {
		t.Errorf("hangup ringing: %d %q, want 487 ORIGINATOR_CANCEL", e.Cause, e.CauseText)
	}

	// Kicked out of the room by someone else (another ESL client).
	c := td.dial(t, "conf-h", "+12025550101")
	td.rec.WaitFirst(t, "connected c", pbxtest.Is(pbx.EventConnected, c))
	ch, _ := emuChannel(emu, c)
	other := rawClient(t, emu.Addr())
	if reply := other.api("conference conf-h kick " + itoa(ch.MemberID)); !strings.HasPrefix(reply, "+OK kicked") {
		t.Fatalf("kick: %q", reply)
	}
	e = td.rec.WaitFirst(t, "end c", pbxtest.Is(pbx.EventEnded, c))
	if e.Cause != 16 || e.Reason != "" {
		t.Errorf("kicked: %d %q reason %q", e.Cause, e.CauseText, e.Reason)
	}

	// The far end hangs up (BYE), and the 0200 phone that does it alone.
	dLeg := td.dial(t, "conf-h", "+12025550101")
	td.rec.WaitFirst(t, "connected d", pbxtest.Is(pbx.EventConnected, dLeg))
	if err := emu.FarEndHangup(dLeg); err != nil {
		t.Fatal(err)
	}
	if e = td.rec.WaitFirst(t, "end d", pbxtest.Is(pbx.EventEnded, dLeg)); e.Cause != 16 {
		t.Errorf("far end BYE: %d", e.Cause)
	}
	self := td.dial(t, "conf-h", "+12025550200")
	td.rec.WaitFirst(t, "connected 0200", pbxtest.Is(pbx.EventConnected, self))
	if e = td.rec.WaitFirst(t, "end 0200", pbxtest.Is(pbx.EventEnded, self)); e.Cause != 16 || e.Reason != "" {
		t.Errorf("0200 phone: %d %q", e.Cause, e.Reason)
	}
}

func TestGivenConnectedLegWhenThePhoneTalksThenTalkingEvents(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	leg := td.dial(t, "conf-talk", "+12025550101")
	td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
	if err := emu.SetTalking(leg, true); err != nil {
		t.Fatal(err)
	}
	td.rec.WaitFirst(t, "talking started", pbxtest.Is(pbx.EventTalkingStarted, leg))
	if err := emu.SetTalking(leg, false); err != nil {
		t.Fatal(err)
	}
	td.rec.WaitFirst(t, "talking finished", pbxtest.Is(pbx.EventTalkingFinished, leg))
}

func TestGivenARoomWithRingingAndConnectedLegsWhenEndedThenNothingIsLeft(t *testing.T) {
	emu := startEmu(t, nil)
	td := startDriver(t, emu.Addr(), true, nil)
	a := td.dial(t, "conf-end", "+12025550101")
	b := td.dial(t, "conf-end", "+12025550111")
	r := td.dial(t, "conf-end", "+12025550480")
	other := td.dial(t, "conf-other", "+12025550121")
	for _, l := range []string{a, b, other} {
		td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, l))
	}
	td.rec.WaitFirst(t, "ringing", pbxtest.Is(pbx.EventRinging, r))

	ctx := pbxtest.Ctx(t)
	if err := td.EndConference(ctx, "conf-end"); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{a, b, r} {
		if e := td.rec.WaitFirst(t, "ended", pbxtest.Is(pbx.EventEnded, l)); e.Reason != "hung up by convoice" {
			t.Errorf("leg ended by EndConference: reason %q", e.Reason)
		}
	}
	for _, ch := range emu.Channels() {
		if ch.UUID != other {
			t.Errorf("channel left on the PBX: %+v", ch)
		}
	}
	for _, c := range emu.Conferences() {
		if c.Name == "conf-end" {
			t.Errorf("room left on the PBX: %+v", c)
		}
	}
	if err := td.EndConference(ctx, "never-existed"); err != nil {
		t.Errorf("EndConference of an unknown room = %v, want nil", err)
	}
	if _, ok := emuChannel(emu, other); !ok {
		t.Error("the other conference's leg was hung up")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
