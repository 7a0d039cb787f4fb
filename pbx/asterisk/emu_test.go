package asterisk

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/ariemu"
	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// These tests run the driver against the ARI emulator over its real HTTP
// and websocket on loopback. Numbers follow the contract's emulator phones.

const (
	numAnswer     = "+12025550123"
	numBusy       = "+12025550486"
	numNoAnswer   = "+12025550480"
	numReject     = "+12025550603"
	numUnalloc    = "+12025550404"
	numByeAfter2s = "+12025550200"
	extNoContact  = "1006"         // PJSIP/1006: no contact → 500 Allocation failed
	numSlowRing   = "+12025550777" // routed to @trunk-slow: rings SlowRing, then answers
)

const emuUser, emuPass = "convoice", "emu-secret"

func startEmu(t *testing.T, mod func(*ariemu.Config)) *ariemu.Server {
	t.Helper()
	return pbxtest.StartEmulator(t, ariemu.Config{User: emuUser, Password: emuPass, Logger: pbxtest.Logger(t).With("side", "emu"),
		Timing: emuphone.Timing{Ring: 300 * time.Millisecond, Hold: 2 * time.Second}}, mod, ariemu.New)
}

func emuRoutes(t *testing.T) pbx.Routes {
	t.Helper()
	rs, err := pbx.ParseRoutes(`^1006$=PJSIP/{ext};^\+12025550777$=PJSIP/{e164}@trunk-slow;.*=PJSIP/{e164}@trunk`)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// newEmuDriver is a driver for the emulator at url with the tests'
// timings, changed by mod.
func newEmuDriver(t *testing.T, url string, mod func(*Config)) *Driver {
	t.Helper()
	return pbxtest.Build(t, Config{URL: url, User: emuUser, Password: emuPass, Routes: emuRoutes(t),
		RingTimeout: 20 * time.Second, RequestTimeout: 2 * time.Second,
		PingInterval: 250 * time.Millisecond, Logger: pbxtest.Logger(t).With("side", "driver")}, mod, New)
}

// runDriver starts Run against url and returns once the link is up (unless
// wantUp is false).
func runDriver(t *testing.T, url string, wantUp bool, mod func(*Config)) (*Driver, *pbxtest.Recorder) {
	t.Helper()
	d := newEmuDriver(t, url, mod)
	rec := pbxtest.NewRecorder()
	pbxtest.Run(t, d, rec)
	if wantUp {
		rec.WaitEvent(t, "", pbx.EventLinkUp)
		if !d.Status().Ready {
			t.Fatalf("link up but not ready: %+v", d.Status())
		}
	}
	return d, rec
}

func dial(t *testing.T, d *Driver, leg, conf, number string, ring time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.Dial(ctx, pbx.DialRequest{LegID: leg, ConferenceID: conf, Number: number,
		CallerIDName: "Convoice Test", CallerIDNumber: "+12025550100", RingTimeout: ring})
}

func createConf(t *testing.T, d *Driver, conf string) {
	t.Helper()
	if err := d.CreateConference(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
}

func emuChannel(emu *ariemu.Server, id string) (ariemu.ChannelState, bool) {
	for _, c := range emu.Channels() {
		if c.ID == id {
			return c, true
		}
	}
	return ariemu.ChannelState{}, false
}

func connectLeg(t *testing.T, d *Driver, rec *pbxtest.Recorder, leg, conf string) {
	t.Helper()
	if err := dial(t, d, leg, conf, numAnswer, 0); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, leg, pbx.EventConnected)
}

func TestEmu_givenPhoneAnswers_thenRingingConnectedAndInBridge(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-a")
	connectLeg(t, d, rec, "leg-a1", "conf-a")
	wantTypes(t, rec, "leg-a1", pbx.EventRinging, pbx.EventConnected)
	c, ok := emuChannel(emu, "leg-a1")
	if !ok || c.BridgeID != "conf-a" || !c.InStasis || c.State != "Up" {
		t.Fatalf("emulator channel %+v", c)
	}
	if c.AppArgs != "conf-a" || c.App != "convoice" {
		t.Errorf("originate app/args %q %q, want convoice / conf-a", c.App, c.AppArgs)
	}
	if e := rec.Of("leg-a1")[1]; e.ConferenceID != "conf-a" {
		t.Errorf("connected event conference %q", e.ConferenceID)
	}
}

// Busy, no answer, reject, unallocated: ended with the Q.850 cause of
// ChannelDestroyed, never connected.
func TestEmu_givenUnhappyPhones_thenEndedWithTheirCauses(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-u")
	cases := []struct {
		leg, number string
		ring        time.Duration
		cause       int
	}{
		{"leg-busy", numBusy, 0, pbx.CauseUserBusy},
		{"leg-noanswer", numNoAnswer, time.Second, pbx.CauseNoAnswer},
		{"leg-reject", numReject, 0, pbx.CauseCallRejected},
		{"leg-unalloc", numUnalloc, 0, pbx.CauseUnallocated},
	}
	for _, c := range cases {
		if err := dial(t, d, c.leg, "conf-u", c.number, c.ring); err != nil {
			t.Fatalf("%s: %v", c.leg, err)
		}
	}
	for _, c := range cases {
		e := rec.WaitEvent(t, c.leg, pbx.EventEnded)
		if e.Cause != c.cause {
			t.Errorf("%s: cause %d %q, want %d", c.leg, e.Cause, e.CauseText, c.cause)
		}
		if n := pbxtest.CountType(rec.All(), c.leg, pbx.EventConnected); n != 0 {
			t.Errorf("%s: reported connected", c.leg)
		}
	}
	if !strings.Contains(rec.WaitEvent(t, "leg-busy", pbx.EventEnded).CauseText, "busy") {
		t.Errorf("busy cause text lost")
	}
	// The no-answer leg rang first.
	wantTypes(t, rec, "leg-noanswer", pbx.EventRinging, pbx.EventEnded)
}

func TestEmu_givenUnreachableEndpoint_thenRefusedWithAsterisksWords(t *testing.T) {
	emu := startEmu(t, nil)
	d, _ := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-r")
	err := dial(t, d, "leg-nocontact", "conf-r", extNoContact, 0)
	if !errors.Is(err, pbx.ErrRefused) || !strings.Contains(err.Error(), "Allocation failed") {
		t.Fatalf("err = %v, want ErrRefused with Allocation failed", err)
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 500 {
		t.Fatalf("status not kept: %v", err)
	}
}

func TestEmu_givenSameLegIDTwice_thenErrExists(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-d")
	if err := dial(t, d, "leg-dup", "conf-d", numNoAnswer, 0); err != nil {
		t.Fatal(err)
	}
	err := dial(t, d, "leg-dup", "conf-d", numAnswer, 0)
	if !errors.Is(err, pbx.ErrExists) {
		t.Fatalf("second dial: %v, want ErrExists", err)
	}
	// The first call is untouched and still ours.
	rec.WaitEvent(t, "leg-dup", pbx.EventRinging)
	if err := d.Hangup(context.Background(), "leg-dup"); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, "leg-dup", pbx.EventEnded)
}

func TestEmu_givenRingingLeg_whenHangup_thenEndedAsOursWithoutConnect(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-c")
	if err := dial(t, d, "leg-cancel", "conf-c", numNoAnswer, 0); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, "leg-cancel", pbx.EventRinging)
	if err := d.SetMute(context.Background(), "conf-c", "leg-cancel", true); !errors.Is(err, pbx.ErrNotReady) {
		t.Errorf("mute of a ringing leg: %v, want ErrNotReady", err)
	}
	if err := d.Hangup(context.Background(), "leg-cancel"); err != nil {
		t.Fatal(err)
	}
	e := rec.WaitEvent(t, "leg-cancel", pbx.EventEnded)
	if e.Cause != pbx.CauseNormalClearing || e.Reason != "hung up by convoice" {
		t.Fatalf("ended %+v", e)
	}
	wantTypes(t, rec, "leg-cancel", pbx.EventRinging, pbx.EventEnded)
	if err := d.Hangup(context.Background(), "leg-cancel"); !errors.Is(err, pbx.ErrNotFound) {
		t.Fatalf("second hangup: %v, want ErrNotFound", err)
	}
}

func TestEmu_givenConnectedLeg_whenFarEndHangsUp_thenEnded16(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-f")
	connectLeg(t, d, rec, "leg-stay", "conf-f")
	connectLeg(t, d, rec, "leg-bye", "conf-f")
	if err := emu.FarEndHangup("leg-bye"); err != nil {
		t.Fatal(err)
	}
	e := rec.WaitEvent(t, "leg-bye", pbx.EventEnded)
	if e.Cause != pbx.CauseNormalClearing || e.Reason != "" {
		t.Fatalf("ended %+v, want 16 from the far end", e)
	}
	// The 0200 phone hangs up by itself after answering.
	if err := dial(t, d, "leg-0200", "conf-f", numByeAfter2s, 0); err != nil {
		t.Fatal(err)
	}
	if e := rec.WaitEvent(t, "leg-0200", pbx.EventEnded); e.Cause != pbx.CauseNormalClearing {
		t.Fatalf("0200 ended %+v", e)
	}
	wantTypes(t, rec, "leg-0200", pbx.EventRinging, pbx.EventConnected, pbx.EventEnded)
	if c, ok := emuChannel(emu, "leg-stay"); !ok || c.BridgeID != "conf-f" {
		t.Fatalf("the other leg left: %+v", c)
	}
}

func TestEmu_givenConnectedLeg_whenMuteUnmute_thenPBXMutesInbound(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-m")
	connectLeg(t, d, rec, "leg-m", "conf-m")
	if err := d.SetMute(context.Background(), "conf-m", "leg-m", true); err != nil {
		t.Fatal(err)
	}
	if c, _ := emuChannel(emu, "leg-m"); !c.MutedIn || c.MutedOut {
		t.Fatalf("after mute: %+v", c)
	}
	if err := d.SetMute(context.Background(), "conf-m", "leg-m", false); err != nil {
		t.Fatal(err)
	}
	if c, _ := emuChannel(emu, "leg-m"); c.MutedIn {
		t.Fatalf("after unmute: %+v", c)
	}
	if err := d.SetMute(context.Background(), "conf-m", "no-such-leg", true); !errors.Is(err, pbx.ErrNotFound) {
		t.Fatalf("mute unknown: %v", err)
	}
}

func TestEmu_givenTalkDetect_thenTalkingStartedAndFinished(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, func(c *Config) { c.TalkDetect = true })
	createConf(t, d, "conf-t")
	connectLeg(t, d, rec, "leg-t", "conf-t")
	if c, _ := emuChannel(emu, "leg-t"); !c.TalkDetect {
		t.Fatalf("TALK_DETECT not set: %+v", c)
	}
	if err := emu.SetTalking("leg-t", true); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, "leg-t", pbx.EventTalkingStarted)
	if err := emu.SetTalking("leg-t", false); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, "leg-t", pbx.EventTalkingFinished)
}

func TestEmu_givenConferenceWithLegs_whenEnd_thenNothingLeftOnThePBX(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-e")
	connectLeg(t, d, rec, "leg-e1", "conf-e")
	connectLeg(t, d, rec, "leg-e2", "conf-e")
	if err := dial(t, d, "leg-e3", "conf-e", numNoAnswer, 0); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, "leg-e3", pbx.EventRinging)
	if err := d.EndConference(context.Background(), "conf-e"); err != nil {
		t.Fatal(err)
	}
	pbxtest.Eventually(t, "no channel and no bridge left", func() bool {
		return len(emu.Channels()) == 0 && len(emu.Bridges()) == 0
	})
	for _, leg := range []string{"leg-e1", "leg-e2", "leg-e3"} {
		rec.WaitEvent(t, leg, pbx.EventEnded)
	}
	if err := d.EndConference(context.Background(), "conf-e"); err != nil {
		t.Fatalf("ending again: %v", err)
	}
	snap, err := d.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Legs)+len(snap.Conferences) != 0 {
		t.Fatalf("snapshot after end: %+v", snap)
	}
}

// The websocket drops; a far end hangs up in the gap. The driver reports
// link down, reconnects, reports link up, and its resync reports the leg
// that vanished in the gap; the other leg stays connected in the bridge, and
// a leg that was ringing across the drop is connected when it answers.
func TestEmu_givenWebsocketDrop_whenReconnected_thenResyncReportsGapHangup(t *testing.T) {
	emu := startEmu(t, func(c *ariemu.Config) { c.Timing.SlowRing = 3 * time.Second })
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-w")
	connectLeg(t, d, rec, "leg-w1", "conf-w")
	connectLeg(t, d, rec, "leg-w2", "conf-w")
	if err := dial(t, d, "leg-w3", "conf-w", numSlowRing, 0); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, "leg-w3", pbx.EventRinging)
	emu.DropWebsockets()
	if err := emu.FarEndHangup("leg-w2"); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, "", pbx.EventLinkDown)
	rec.WaitFor(t, "second link up", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) >= 2 })
	rec.WaitEvent(t, "leg-w2", pbx.EventEnded)
	if d.Status().Reconnects < 1 || !d.Status().Ready {
		t.Fatalf("status %+v", d.Status())
	}
	if n := pbxtest.CountType(rec.All(), "", pbx.EventPBXRestarted); n != 0 {
		t.Fatalf("a websocket drop was reported as a PBX restart")
	}
	if c, ok := emuChannel(emu, "leg-w1"); !ok || c.BridgeID != "conf-w" {
		t.Fatalf("leg-w1 %+v", c)
	}
	rec.WaitEvent(t, "leg-w3", pbx.EventConnected)
	if c, ok := emuChannel(emu, "leg-w3"); !ok || c.BridgeID != "conf-w" {
		t.Fatalf("leg-w3 %+v", c)
	}
	wantTypes(t, rec, "leg-w3", pbx.EventRinging, pbx.EventConnected)
	// Events flow on the new websocket.
	if err := emu.FarEndHangup("leg-w1"); err != nil {
		t.Fatal(err)
	}
	if e := rec.WaitEvent(t, "leg-w1", pbx.EventEnded); e.Cause != pbx.CauseNormalClearing {
		t.Fatalf("leg-w1 ended %+v", e)
	}
}

// A leg answers while the link is half-open (its StasisStart never reaches
// us). The driver detects the dead link within its bound, reports not ready
// and link down, refuses dials at once, reconnects when the PBX answers
// again, and its resync puts the answered-while-blind leg into its bridge
// and reports it connected.
func TestEmu_givenHalfOpen_thenDetectedNotReadyAndAnsweredLegJoinedOnResync(t *testing.T) {
	emu := startEmu(t, func(c *ariemu.Config) { c.Timing.Ring = 1500 * time.Millisecond })
	const ping = 250 * time.Millisecond
	d, rec := runDriver(t, emu.URL(), true, func(c *Config) { c.PingInterval = ping })
	createConf(t, d, "conf-h")
	if err := dial(t, d, "leg-blind", "conf-h", numAnswer, 0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	emu.SetUnresponsive(true)
	down := rec.WaitEvent(t, "", pbx.EventLinkDown)
	took := time.Since(start)
	if !strings.Contains(down.Reason, "ping") {
		t.Errorf("link down reason %q", down.Reason)
	}
	// Stated bound: 3×PingInterval; the slack covers a loaded test machine.
	if took > 3*ping+2*time.Second {
		t.Errorf("half-open detected after %v, bound is %v", took, 3*ping)
	}
	if st := d.Status(); st.Ready {
		t.Fatalf("ready while half-open: %+v", st)
	}
	t0 := time.Now()
	err := dial(t, d, "leg-during", "conf-h", numAnswer, 0)
	if !errors.Is(err, pbx.ErrUnavailable) {
		t.Fatalf("dial while down: %v, want ErrUnavailable", err)
	}
	if time.Since(t0) > time.Second {
		t.Errorf("dial while down took %v", time.Since(t0))
	}
	pbxtest.Eventually(t, "the leg answered on the PBX", func() bool {
		c, ok := emuChannel(emu, "leg-blind")
		return ok && c.InStasis
	})
	if n := pbxtest.CountType(rec.All(), "leg-blind", pbx.EventConnected); n != 0 {
		t.Fatalf("connected reported while blind")
	}
	emu.SetUnresponsive(false)
	e := rec.WaitEvent(t, "leg-blind", pbx.EventConnected)
	if !strings.Contains(e.Reason, "event link was down") {
		t.Errorf("connected reason %q", e.Reason)
	}
	pbxtest.Eventually(t, "the leg in its bridge", func() bool {
		c, ok := emuChannel(emu, "leg-blind")
		return ok && c.BridgeID == "conf-h"
	})
	rec.WaitFor(t, "link up again", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) >= 2 })
	if !d.Status().Ready {
		t.Fatalf("not ready after recovery: %+v", d.Status())
	}
	if d.Stats().BridgeFixes < 1 || d.Stats().HalfOpen < 1 {
		t.Errorf("stats %+v", d.Stats())
	}
}

// `core restart now`: the legs end with the recorded events, the websocket
// closes, the PBX refuses then answers 503, then comes back empty: the
// driver reports the restart and links up again.
func TestEmu_givenRestart_thenLegsEndPBXRestartedAndLinkBack(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-r")
	connectLeg(t, d, rec, "leg-r1", "conf-r")
	emu.Restart()
	rec.WaitEvent(t, "", pbx.EventLinkDown)
	e := rec.WaitEvent(t, "", pbx.EventPBXRestarted)
	if e.Reason == "" {
		t.Error("no reason")
	}
	rec.WaitFor(t, "link up after restart", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) >= 2 })
	if e := rec.WaitEvent(t, "leg-r1", pbx.EventEnded); e.Cause != pbx.CauseNormalClearing {
		t.Errorf("leg ended %+v", e)
	}
	// Usable again: a new conference and leg.
	createConf(t, d, "conf-r2")
	connectLeg(t, d, rec, "leg-r2", "conf-r2")
}

// A crash (SIGKILL) sends no event at all: the restart report is what ends
// the legs.
func TestEmu_givenCrash_thenPBXRestarted(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-k")
	connectLeg(t, d, rec, "leg-k1", "conf-k")
	emu.Crash()
	rec.WaitEvent(t, "", pbx.EventPBXRestarted)
	rec.WaitFor(t, "link up after crash", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) >= 2 })
	if n := pbxtest.CountType(rec.All(), "leg-k1", pbx.EventEnded); n != 0 {
		t.Errorf("a crash gave a leg event; the recording (f2) has none")
	}
}

// Started while the PBX is down: Run does not block, Status says why, Dial
// fails fast with ErrUnavailable; when the PBX comes up the link comes up.
func TestEmu_givenPBXDownAtStart_thenNotBlockedDialUnavailableThenLinkUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d, rec := runDriver(t, "http://"+addr+"/ari", false, nil)
	pbxtest.Eventually(t, "a status detail", func() bool {
		st := d.Status()
		return !st.Ready && st.Detail != "connecting" && st.Detail != "not started"
	})
	t0 := time.Now()
	err = dial(t, d, "leg-x", "conf-x", numAnswer, 0)
	if !errors.Is(err, pbx.ErrUnavailable) {
		t.Fatalf("dial while down: %v", err)
	}
	if time.Since(t0) > time.Second {
		t.Errorf("dial while down took %v", time.Since(t0))
	}
	emu := ariemu.New(ariemu.Config{User: emuUser, Password: emuPass, Logger: pbxtest.Logger(t)})
	if err := emu.Start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	rec.WaitEvent(t, "", pbx.EventLinkUp)
	createConf(t, d, "conf-x")
	connectLeg(t, d, rec, "leg-x", "conf-x")
}
