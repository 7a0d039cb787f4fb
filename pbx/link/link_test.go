package link

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
)

func TestState_givenSetTwiceWithTheSameReadiness_thenSinceMovesOnlyOnChange(t *testing.T) {
	s := NewState()
	if st := s.Status(); st.Ready || st.Detail != "not started" || st.Since.IsZero() {
		t.Fatalf("new state %+v", st)
	}
	s.Set(true, "connected")
	up := s.Status().Since
	time.Sleep(2 * time.Millisecond)
	s.Set(true, "connected again")
	if st := s.Status(); st.Since != up || st.Detail != "connected again" {
		t.Fatalf("same readiness moved Since or kept the old detail: %+v", st)
	}
	s.Set(false, "gone")
	if ok, detail := s.Ready(); ok || detail != "gone" || !s.Status().Since.After(up) {
		t.Fatalf("down: %v %q %+v", ok, detail, s.Status())
	}
	s.Reconnected()
	s.Lost()
	s.Lost()
	if st := s.Status(); st.Reconnects != 1 || st.LostEvents != 2 || s.Reconnects() != 1 || s.LostEvents() != 2 {
		t.Fatalf("counts %+v", st)
	}
}

// Sessions that fail are retried with backoff and counted as no connect;
// one that got up counts, so the next one is a reconnect; cancelling ends
// the loop with the state "stopped".
func TestKeeper_givenFailuresThenAnUpSession_thenConnectsCountedAndStoppedAtTheEnd(t *testing.T) {
	s := NewState()
	ctx, cancel := context.WithCancel(context.Background())
	var seen []int
	session := func(ctx context.Context, connects int) (bool, error) {
		seen = append(seen, connects)
		if ok, detail := s.Ready(); len(seen) == 1 && (ok || detail != "connecting") {
			t.Errorf("first session sees %v %q, want not ready, connecting", ok, detail)
		}
		switch len(seen) {
		case 1:
			return false, errors.New("refused")
		case 2:
			return true, errors.New("dropped after link up")
		default:
			cancel()
			return false, nil
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Keeper{State: s, MaxBackoff: 10 * time.Millisecond, Log: slog.New(slog.DiscardHandler),
			Failed: "retrying", Describe: func(err error) string { return err.Error() }}.Keep(ctx, session)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Keep did not return after cancel")
	}
	if len(seen) != 3 || seen[0] != 0 || seen[1] != 0 || seen[2] != 1 {
		t.Fatalf("connects seen by the sessions: %v, want [0 0 1]", seen)
	}
	if ok, detail := s.Ready(); ok || detail != "stopped" {
		t.Fatalf("after Keep: %v %q", ok, detail)
	}
}

func TestConn_givenBytesArrive_thenSinceSeesThemAndCloseIsIdempotent(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := Watch(a)
	asked := c.Now()
	if c.Since(asked) {
		t.Fatal("nothing read yet, but Since says yes")
	}
	go func() { _, _ = b.Write([]byte("pong")) }()
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if !c.Since(asked) {
		t.Fatal("bytes arrived after the question, but Since says no")
	}
	if c.Since(c.Now() + time.Hour) {
		t.Fatal("Since a later time says yes")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestClock_givenAWallTime_thenAtPutsItOnTheClock(t *testing.T) {
	c := NewClock()
	before := time.Now()
	c.Note()
	if !c.Since(c.At(before)) || c.Since(c.At(time.Now().Add(time.Second))) {
		t.Fatal("At does not line wall times up with Note")
	}
}

func TestForget_givenTombstonesOldAndNew_thenOnlyTheOldOnesGo(t *testing.T) {
	type entry struct {
		ended bool
		at    time.Time
	}
	now := time.Now()
	m := map[string]entry{
		"live":      {},
		"old":       {ended: true, at: now.Add(-2 * TombstoneAge)},
		"recent":    {ended: true, at: now.Add(-time.Minute)},
		"live-aged": {at: now.Add(-2 * TombstoneAge)},
	}
	Forget(m, now.Add(-TombstoneAge), func(e entry) (time.Time, bool) { return e.at, e.ended })
	if _, ok := m["old"]; ok || len(m) != 3 {
		t.Fatalf("after Forget: %v", m)
	}
}

func TestSweep_givenCancel_thenReturns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Sweep(ctx, func(time.Time) { t.Error("swept before a minute passed") })
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Sweep did not return after cancel")
	}
}

func TestHold_givenRunHolding_thenASecondRunOrRunPassiveIsRefusedUntilItReturns(t *testing.T) {
	s := NewState()
	if err := s.HoldRun("pbx", nil, func() { t.Error("ran without a handler") }); err == nil || err.Error() != "pbx: Run needs a handler" {
		t.Fatalf("Run without a handler: %v", err)
	}
	ran := false
	err := s.HoldRun("pbx", pbx.HandlerFunc(func(pbx.Event) {}), func() {
		ran = true
		if err := s.HoldPassive("pbx", func() { t.Error("RunPassive ran while Run runs") }); err == nil {
			t.Error("RunPassive while Run runs: want an error")
		}
	})
	if err != nil || !ran {
		t.Fatalf("Run: %v (ran %v)", err, ran)
	}
	ran = false
	if err := s.HoldPassive("pbx", func() { ran = true }); err != nil || !ran {
		t.Fatalf("RunPassive after Run returned: %v (ran %v)", err, ran)
	}
}

func TestDefaults_givenZeroAndSetValues_thenOnlyTheZeroOnesGetDefaults(t *testing.T) {
	ring, request, ping := time.Duration(0), -time.Second, 7*time.Second
	var log *slog.Logger
	Defaults(&ring, &request, &ping, &log)
	if ring != DefaultRingTimeout || request != DefaultRequestTimeout || ping != 7*time.Second || log == nil {
		t.Fatalf("ring %v request %v ping %v log %v", ring, request, ping, log)
	}
}
