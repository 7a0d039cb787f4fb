package asterisk

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
)

// startPassive runs a driver in passive mode (no websocket) against url and
// waits until its ping probe says ready.
func startPassive(t *testing.T, url string) *Driver {
	t.Helper()
	d, err := New(Config{URL: url, User: emuUser, Password: emuPass, Routes: emuRoutes(t),
		RingTimeout: 20 * time.Second, RequestTimeout: time.Second,
		PingInterval: 100 * time.Millisecond, Logger: testLogger(t).With("side", "passive")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.RunPassive(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunPassive: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("RunPassive did not return after cancel")
		}
	})
	eventually(t, "passive driver ready", func() bool { return d.Status().Ready })
	return d
}

// A replica without the event websocket places, mutes and hangs up calls;
// the replica holding the websocket hears every outcome and bridges the
// answered call. Only one websocket of the app is ever connected.
func TestPassive_givenCommandsFromTheReplicaWithoutTheLink_thenTheOwnerHearsThem(t *testing.T) {
	emu := startEmu(t, nil)
	_, rec := runDriver(t, emu.URL(), true, nil)
	p := startPassive(t, emu.URL())
	if !strings.Contains(p.Status().Detail, "passive") {
		t.Errorf("passive detail = %q", p.Status().Detail)
	}
	if err := p.Run(context.Background(), rec); err == nil {
		t.Fatal("Run while RunPassive runs: want an error")
	}

	createConf(t, p, "conf-p")
	if err := dial(t, p, "leg-p1", "conf-p", numAnswer, 0); err != nil {
		t.Fatal(err)
	}
	rec.waitEvent(t, "leg-p1", pbx.EventConnected)
	if ch, ok := emuChannel(emu, "leg-p1"); !ok || ch.BridgeID != "conf-p" {
		t.Fatalf("channel %+v (found %v): want in bridge conf-p", ch, ok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.SetMute(ctx, "conf-p", "leg-p1", true); err != nil {
		t.Fatalf("mute through the passive driver: %v", err)
	}
	if ch, _ := emuChannel(emu, "leg-p1"); !ch.MutedIn {
		t.Fatalf("not muted on the PBX: %+v", ch)
	}
	if err := p.Hangup(ctx, "leg-p1"); err != nil {
		t.Fatal(err)
	}
	rec.waitEvent(t, "leg-p1", pbx.EventEnded)
	if err := p.EndConference(ctx, "conf-p"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bridge gone", func() bool { return len(emu.Bridges()) == 0 })
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.legs) > 1 || len(p.confs) > 1 {
		t.Errorf("a passive driver keeps no tables: %d legs, %d conferences", len(p.legs), len(p.confs))
	}
}

// Readiness of a passive driver follows the ping probe.
func TestPassive_givenTheNodeStopsAnswering_thenNotReadyAndDialRefused(t *testing.T) {
	emu := startEmu(t, nil)
	p := startPassive(t, emu.URL())
	emu.SetUnresponsive(true)
	eventually(t, "not ready", func() bool { return !p.Status().Ready })
	if err := dial(t, p, "leg-x", "conf-x", numAnswer, 0); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("dial while not ready: %v", err)
	}
	emu.SetUnresponsive(false)
	eventually(t, "ready again", func() bool { return p.Status().Ready })
}
