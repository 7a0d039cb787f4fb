package freeswitch

import (
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/eslemu"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// snapshotMatchesEmulator compares the driver's Snapshot with the
// emulator's own state, leg by leg.
func snapshotMatchesEmulator(t *testing.T, td *testDriver, emu *eslemu.Server) pbx.Snapshot {
	t.Helper()
	snap, err := td.Snapshot(pbxtest.Ctx(t))
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
	if err := td.Dial(pbxtest.Ctx(t), pbx.DialRequest{LegID: s, ConferenceID: "conf-cut", Number: "+12025550480",
		RingTimeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{a, b, n, s} {
		td.rec.WaitFirst(t, "ringing", pbxtest.Is(pbx.EventRinging, l))
	}

	emu.SetRudeRejection(true) // reconnect attempts fail meanwhile
	emu.DropConnections()
	pbxtest.WaitNotReady(t, td)
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
	missedBefore := td.rec.Count(pbxtest.Is(pbx.EventConnected, a)) + td.rec.Count(pbxtest.Is(pbx.EventConnected, b))
	if missedBefore != 0 {
		t.Fatalf("connected reported while the link was down")
	}
	emu.SetRudeRejection(false)
	pbxtest.WaitReady(t, td)

	td.rec.WaitFirst(t, "connected a (missed)", pbxtest.Is(pbx.EventConnected, a))
	td.rec.WaitFirst(t, "connected b (missed)", pbxtest.Is(pbx.EventConnected, b))
	e := td.rec.WaitFirst(t, "end of n (missed)", pbxtest.Is(pbx.EventEnded, n))
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
	if n := td.rec.Count(pbxtest.Is(pbx.EventEnded, s)) + td.rec.Count(pbxtest.Is(pbx.EventConnected, s)); n != 0 {
		t.Errorf("the still ringing leg was reported ended or connected")
	}
	// Mute works on a leg that joined while we were away (member id from
	// the resync).
	if err := td.SetMute(pbxtest.Ctx(t), "conf-cut", a, true); err != nil {
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
			td.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
			if hard {
				emu.RestartHard()
			} else {
				emu.Restart()
			}
			td.rec.WaitFirst(t, "pbx restarted or ended", func(e pbx.Event) bool {
				return e.Type == pbx.EventPBXRestarted || pbxtest.Is(pbx.EventEnded, leg)(e)
			})
			if hard {
				// Nothing was said on the socket: only the resync can tell.
				td.rec.WaitFirst(t, "pbx restarted", pbxtest.IsType(pbx.EventPBXRestarted))
			} else {
				// The graceful stop hangs the call up on the socket first
				// (SYSTEM_SHUTDOWN, recording g_shutdown_fsctl).
				e := td.rec.WaitFirst(t, "ended", pbxtest.Is(pbx.EventEnded, leg))
				if e.CauseText != "SYSTEM_SHUTDOWN" {
					t.Errorf("graceful restart: %+v", e)
				}
			}
			td.rec.WaitFirst(t, "link down", pbxtest.IsType(pbx.EventLinkDown))
			deadline := time.Now().Add(10 * time.Second)
			for td.rec.Count(pbxtest.IsType(pbx.EventLinkUp)) < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no reconnect: %s", pbxtest.Dump(td.rec.All()))
				}
				time.Sleep(10 * time.Millisecond)
			}
			pbxtest.WaitReady(t, td)
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
	first.rec.WaitFirst(t, "connected", pbxtest.Is(pbx.EventConnected, leg))
	first.stop()

	second := startDriver(t, emu.Addr(), true, nil)
	snap := snapshotMatchesEmulator(t, second, emu)
	if len(snap.Legs) != 1 || snap.Legs[0].ConferenceID != "conf-adopt" {
		t.Fatalf("snapshot of the new driver: %+v", snap)
	}
	if err := second.Dial(pbxtest.Ctx(t), pbx.DialRequest{LegID: leg, ConferenceID: "conf-adopt", Number: "+12025550101"}); !errors.Is(err, pbx.ErrExists) {
		t.Errorf("dialing an existing leg again = %v, want ErrExists", err)
	}
	if err := second.SetMute(pbxtest.Ctx(t), "conf-adopt", leg, true); err != nil {
		t.Errorf("mute an adopted leg: %v", err)
	}
	if err := emu.FarEndHangup(leg); err != nil {
		t.Fatal(err)
	}
	second.rec.WaitFirst(t, "end of the adopted leg", pbxtest.Is(pbx.EventEnded, leg))
}

func TestGivenNoConnectionThenOperationsAreUnavailable(t *testing.T) {
	td := startDriver(t, "127.0.0.1:1", false, nil)
	ctx := pbxtest.Ctx(t)
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
