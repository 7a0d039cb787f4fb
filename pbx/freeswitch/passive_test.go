package freeswitch

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
)

// startPassive runs a driver in passive mode (commands only) against addr
// and waits until it is ready.
func startPassive(t *testing.T, addr string) *Driver {
	t.Helper()
	routes, err := pbx.ParseRoutes(`^\+1555=sofia/gateway/nosuchgw/{e164};.*=sofia/gateway/pbx/{e164}`)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Addr: addr, Password: testPassword, Routes: routes, RingTimeout: 5 * time.Second,
		RequestTimeout: 500 * time.Millisecond, PingInterval: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
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
			t.Error("RunPassive did not return after its context was cancelled")
		}
	})
	(&testDriver{Driver: d}).waitReady(t)
	return d
}

// A replica without the event connection dials, mutes and hangs up on the
// node; the replica with it hears every outcome, a failed originate
// included (its BACKGROUND_JOB names our node).
func TestGivenPassiveDriverWhenItRunsCommandsThenTheOwnerHearsTheOutcome(t *testing.T) {
	emu := startEmu(t, nil)
	owner := startDriver(t, emu.Addr(), true, nil)
	passive := startPassive(t, emu.Addr())
	if st := passive.Status(); !strings.Contains(st.Detail, "passive") {
		t.Errorf("passive status detail = %q", st.Detail)
	}
	if err := passive.Run(context.Background(), owner.rec); err == nil {
		t.Fatal("Run while RunPassive runs: want an error")
	}
	ctx := ctxT(t)

	leg := (&testDriver{Driver: passive}).dial(t, "conf-p", "+12025550101")
	owner.rec.waitFor(t, "connected", is(pbx.EventConnected, leg))
	if err := passive.SetMute(ctx, "conf-p", leg, true); err != nil {
		t.Fatalf("mute through the passive driver: %v", err)
	}
	if ch, _ := emuChannel(emu, leg); !ch.Muted {
		t.Fatalf("emulator member not muted: %+v", ch)
	}
	if err := passive.Hangup(ctx, leg); err != nil {
		t.Fatalf("hangup through the passive driver: %v", err)
	}
	owner.rec.waitFor(t, "ended", is(pbx.EventEnded, leg))

	bad := (&testDriver{Driver: passive}).dial(t, "conf-p", "+15550000001")
	e := owner.rec.waitFor(t, "failed originate ended", is(pbx.EventEnded, bad))
	if e.Cause == 0 || e.ConferenceID != "conf-p" {
		t.Errorf("failed originate: %+v", e)
	}
}

// The passive driver's readiness follows the node: not ready when it goes
// away, ready again when it is back.
func TestGivenPassiveDriverWhenTheNodeGoesAwayThenNotReady(t *testing.T) {
	emu := startEmu(t, nil)
	passive := startPassive(t, emu.Addr())
	emu.SetUnresponsive(true)
	(&testDriver{Driver: passive}).waitNotReady(t)
	emu.SetUnresponsive(false)
	(&testDriver{Driver: passive}).waitReady(t)
	if _, err := passive.Snapshot(ctxT(t)); err != nil {
		t.Fatalf("snapshot through the passive driver: %v", err)
	}
}
