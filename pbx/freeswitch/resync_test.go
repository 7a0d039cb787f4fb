package freeswitch

import (
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/eslemu"
	"github.com/convoice/convoice/pbx"
)

// snapshotMatchesEmulator compares the driver's Snapshot with the
// emulator's own state, leg by leg.
func snapshotMatchesEmulator(t *testing.T, td *testDriver, emu *eslemu.Server) pbx.Snapshot {
	t.Helper()
	snap, err := td.Snapshot(ctxT(t))
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	chans := emu.Channels()
	if len(snap.Legs) != len(chans) {
		t.Fatalf("snapshot has %d legs, emulator %d channels", len(snap.Legs), len(chans))
	}
	byID := map[string]pbx.LegSnapshot{}
	for _, l := range snap.Legs {
		byID[l.LegID] = l
	}
	for _, ch := range chans {
		l, ok := byID[ch.UUID]
		if !ok {
			t.Errorf("channel %s missing from the snapshot", ch.UUID)
			continue
		}
		if l.Answered != ch.Answered || l.InConference != (ch.Conference != "") || l.Muted != ch.Muted {
			t.Errorf("leg %s: snapshot %+v, emulator %+v", ch.UUID, l, ch)
		}
		if ch.Conference != "" && l.ConferenceID != ch.Conference {
			t.Errorf("leg %s: conference %q, emulator %q", ch.UUID, l.ConferenceID, ch.Conference)
		}
	}
	var rooms []string
	for _, c := range emu.Conferences() {
		rooms = append(rooms, c.Name)
	}
	sort.Strings(rooms)
	got := append([]string(nil), snap.Conferences...)
	sort.Strings(got)
	if len(rooms) != len(got) {
		t.Errorf("snapshot rooms %v, emulator %v", got, rooms)
	}
	return snap
}

// The socket is cut while legs ring and stays unusable while they answer,
// join, and one gives up: after the link is back, the driver reports what
// it missed and its Snapshot matches the emulator.
func TestGivenRingingLegsWhenTheSocketIsCutAndRestoredThenSnapshotMatchesAndMissedChangesAreReported(t *testing.T) {
	emu := startEmu(t, func(c *eslemu.Config) {
		c.Timing = emuphone.Timing{Ring: 600 * time.Millisecond, Hold: time.Minute}
	})
	td := startDriver(t, emu.Addr(), true, func(c *Config) { c.RingTimeout = time.Second })
	a := td.dial(t, "conf-cut", "+12025550101") // answers at 600 ms
	b := td.dial(t, "conf-cut", "+12025550111") // answers at 600 ms
	n := td.dial(t, "conf-cut", "+12025550480") // gives up at 1 s
	s := newID()                                // rings on through the outage
	if err := td.Dial(ctxT(t), pbx.DialRequest{LegID: s, ConferenceID: "conf-cut", Number: "+12025550480",
		RingTimeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{a, b, n, s} {
		td.rec.waitFor(t, "ringing", is(pbx.EventRinging, l))
	}

	emu.SetRudeRejection(true) // reconnect attempts fail meanwhile
	emu.DropConnections()
	td.waitNotReady(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ca, _ := emuChannel(emu, a)
		cb, _ := emuChannel(emu, b)
		_, nAlive := emuChannel(emu, n)
		if ca.Conference != "" && cb.Conference != "" && !nAlive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("legs did not move on while the link was down: %+v", emu.Channels())
		}
		time.Sleep(20 * time.Millisecond)
	}
	missedBefore := td.rec.count(is(pbx.EventConnected, a)) + td.rec.count(is(pbx.EventConnected, b))
	if missedBefore != 0 {
		t.Fatalf("connected reported while the link was down")
	}
	emu.SetRudeRejection(false)
	td.waitReady(t)

	td.rec.waitFor(t, "connected a (missed)", is(pbx.EventConnected, a))
	td.rec.waitFor(t, "connected b (missed)", is(pbx.EventConnected, b))
	e := td.rec.waitFor(t, "end of n (missed)", is(pbx.EventEnded, n))
	if e.Reason == "" {
		t.Errorf("synthesised end has no reason: %+v", e)
	}
	if st := td.Status(); st.Reconnects != 1 {
		t.Errorf("reconnects = %d, want 1", st.Reconnects)
	}
	snap := snapshotMatchesEmulator(t, td, emu)
	if len(snap.Legs) != 3 {
		t.Errorf("want a, b and the ringing leg in the snapshot, got %+v", snap.Legs)
	}
	if n := td.rec.count(is(pbx.EventEnded, s)) + td.rec.count(is(pbx.EventConnected, s)); n != 0 {
		t.Errorf("the still ringing leg was reported ended or connected")
	}
	// Mute works on a leg that joined while we were away (member id from
	// the resync).
	if err := td.SetMute(ctxT(t), "conf-cut", a, true); err != nil {
		t.Fatalf("mute after resync: %v", err)
	}
	snapshotMatchesEmulator(t, td, emu)
}

func TestGivenCallsWhenFreeSWITCHRestartsThenPBXRestarted(t *testing.T) {
	for _, hard := range []bool{false, true} {
		name := "graceful (SIGTERM)"
		if hard {
			name = "crash (SIGKILL)"
		}
		t.Run(name, func(t *testing.T) {
			emu := startEmu(t, nil)
			td := startDriver(t, emu.Addr(), true, nil)
			leg := td.dial(t, "conf-restart", "+12025550101")
			td.rec.waitFor(t, "connected", is(pbx.EventConnected, leg))
			if hard {
				emu.RestartHard()
			} else {
				emu.Restart()
			}
			td.rec.waitFor(t, "pbx restarted or ended", func(e pbx.Event) bool {
				return e.Type == pbx.EventPBXRestarted || is(pbx.EventEnded, leg)(e)
			})
			if hard {
				// Nothing was said on the socket: only the resync can tell.
				td.rec.waitFor(t, "pbx restarted", isType(pbx.EventPBXRestarted))
			} else {
				// The graceful stop hangs the call up on the socket first
				// (SYSTEM_SHUTDOWN, recording g_shutdown_fsctl).
				e := td.rec.waitFor(t, "ended", is(pbx.EventEnded, leg))
				if e.CauseText != "SYSTEM_SHUTDOWN" {
					t.Errorf("graceful restart: %+v", e)
				}
			}
			td.rec.waitFor(t, "link down", isType(pbx.EventLinkDown))
			deadline := time.Now().Add(10 * time.Second)
			for td.rec.count(isType(pbx.EventLinkUp)) < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no reconnect: %s", describeEvents(td.rec.all()))
				}
				time.Sleep(10 * time.Millisecond)
			}
			td.waitReady(t)
			snapshotMatchesEmulator(t, td, emu)
		})
	}
}

// A new convoice process (a new driver) finds the calls of the previous one
// by their node tag, reports them in its Snapshot and handles their events.
func TestGivenCallsOfAPreviousProcessWhenANewDriverStartsThenItAdoptsThem(t *testing.T) {
	emu := startEmu(t, nil)
	first := startDriver(t, emu.Addr(), true, nil)
	leg := first.dial(t, "conf-adopt", "+12025550101")
	first.rec.waitFor(t, "connected", is(pbx.EventConnected, leg))
	first.cancel()
	<-first.done
	first.done <- nil // for the cleanup

	second := startDriver(t, emu.Addr(), true, nil)
	snap := snapshotMatchesEmulator(t, second, emu)
	if len(snap.Legs) != 1 || snap.Legs[0].ConferenceID != "conf-adopt" {
		t.Fatalf("snapshot of the new driver: %+v", snap)
	}
	if err := second.Dial(ctxT(t), pbx.DialRequest{LegID: leg, ConferenceID: "conf-adopt", Number: "+12025550101"}); !errors.Is(err, pbx.ErrExists) {
		t.Errorf("dialing an existing leg again = %v, want ErrExists", err)
	}
	if err := second.SetMute(ctxT(t), "conf-adopt", leg, true); err != nil {
		t.Errorf("mute an adopted leg: %v", err)
	}
	if err := emu.FarEndHangup(leg); err != nil {
		t.Fatal(err)
	}
	second.rec.waitFor(t, "end of the adopted leg", is(pbx.EventEnded, leg))
}

func TestGivenNoConnectionThenOperationsAreUnavailable(t *testing.T) {
	td := startDriver(t, "127.0.0.1:1", false, nil)
	ctx := ctxT(t)
	if err := td.Dial(ctx, pbx.DialRequest{LegID: newID(), ConferenceID: "c", Number: "+12025550101"}); !errors.Is(err, pbx.ErrUnavailable) {
		t.Errorf("Dial = %v", err)
	}
	if _, err := td.Snapshot(ctx); !errors.Is(err, pbx.ErrUnavailable) {
		t.Errorf("Snapshot = %v", err)
	}
	if err := td.Hangup(ctx, newID()); !errors.Is(err, pbx.ErrUnavailable) {
		t.Errorf("Hangup = %v", err)
	}
	if st := td.Status(); st.Ready || st.Detail == "" {
		t.Errorf("status %+v", st)
	}
}

func TestNewValidatesTheConfiguration(t *testing.T) {
	sofia, _ := pbx.ParseRoutes(".*=sofia/gateway/pbx/{e164}")
	asterisk, _ := pbx.ParseRoutes(pbx.DefaultRoutes)
	for name, cfg := range map[string]Config{
		"no password":       {Addr: "127.0.0.1:8021", Routes: sofia},
		"bad address":       {Addr: "nowhere", Password: "x", Routes: sofia},
		"bad profile":       {Password: "x", Profile: "a b", Routes: sofia},
		"bad node tag":      {Password: "x", Node: "x,y", Routes: sofia},
		"no routes":         {Password: "x"},
		"an Asterisk route": {Password: "x", Routes: asterisk},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	d, err := New(Config{Password: "x", Routes: sofia})
	if err != nil {
		t.Fatal(err)
	}
	if d.cfg.Addr != DefaultAddr || d.cfg.Profile != "default" || d.Kind() != "freeswitch" {
		t.Errorf("defaults: %+v", d.cfg)
	}
}
