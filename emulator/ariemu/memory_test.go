package ariemu

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

// TestMemory10kChannels holds 10,000 answered channels in Stasis (the
// benchmark's load) with a websocket consuming their events, and measures
// what the emulator retains per channel; then hangs them all up and checks
// the memory comes back and no goroutine is left per channel. It measures
// allocations, not time.
func TestMemory10kChannels(t *testing.T) {
	const n = 10000
	s := startServer(t, Config{
		Logger:     slog.New(slog.DiscardHandler),
		EventQueue: 1 << 20,
		Timing:     emuphone.Timing{Ring: time.Millisecond},
	})
	// A consumer that reads and forgets, as a driver would.
	w, code, err := dialRawWS(s.Addr(), "app=convoice")
	if err != nil || code != 101 {
		t.Fatalf("websocket: %d %v", code, err)
	}
	go func() {
		for {
			if _, _, err := w.next(time.Minute); err != nil {
				return
			}
		}
	}()
	waitFor(t, func() bool { return socketCount(s) == 1 })

	heap := func() uint64 {
		var ms runtime.MemStats
		for range 2 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	inStasis := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		k := 0
		for _, ch := range s.channels {
			if ch.inStasis {
				k++
			}
		}
		return k
	}
	waitStasis := func(want int) {
		deadline := time.Now().Add(time.Minute)
		for inStasis() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d channels in Stasis, want %d", inStasis(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	goroutines0 := runtime.NumGoroutine()
	before := heap()
	// Originate through the emulator's own path with per-channel strings,
	// as HTTP requests would carry them (the request log is not per
	// channel and is left out of the measure).
	for i := range n {
		a := originateArgs{
			channelID: fmt.Sprintf("leg-%08d-0000-4000-8000-000000000000", i),
			endpoint:  fmt.Sprintf("PJSIP/+1202%07d@trunk", 5550000+i%9000+1000),
			app:       "convoice",
			appArgs:   fmt.Sprintf("leg,conf-%d", i/10),
			callerID:  fmt.Sprintf("Conference %d <+12025550100>", i/10),
			timeout:   30,
		}
		tech, resource := "PJSIP", a.endpoint[len("PJSIP/"):]
		s.mu.Lock()
		ch, status := s.originateLocked(a, tech, resource)
		if ch == nil {
			s.mu.Unlock()
			t.Fatalf("originate %d: %d", i, status)
		}
		s.startDialLocked(ch)
		s.mu.Unlock()
		if i%1000 == 999 {
			time.Sleep(10 * time.Millisecond) // let the consumer keep up
		}
	}
	// The numbers run …1000 to …9999, ordinary phones that answer and stay;
	// count them rather than assume it.
	time.Sleep(100 * time.Millisecond)
	live := 0
	s.mu.Lock()
	for _, ch := range s.channels {
		if ch.phone.Outcome == emuphone.Answer {
			live++
		}
	}
	s.mu.Unlock()
	waitStasis(live)
	if live < n*9/10 {
		t.Fatalf("only %d answering phones", live)
	}
	after := heap()
	per := float64(after-before) / float64(len(s.Channels()))
	t.Logf("%d live channels (%d in Stasis): heap %d → %d bytes, %.0f bytes per channel, %d goroutines (was %d)",
		len(s.Channels()), live, before, after, per, runtime.NumGoroutine(), goroutines0)
	if per > 3000 {
		t.Errorf("%.0f bytes per live channel; want well under 3 KB", per)
	}
	if g := runtime.NumGoroutine(); g > goroutines0+20 {
		t.Errorf("%d goroutines for %d channels: timers must not hold goroutines", g, n)
	}

	s.mu.Lock()
	for _, ch := range s.sortedChannels() {
		s.hangupByUsLocked(ch, 16)
	}
	s.mu.Unlock()
	time.Sleep(200 * time.Millisecond)
	final := heap()
	t.Logf("after hanging up: heap %d bytes", final)
	if final > before+4<<20 {
		t.Errorf("heap %d bytes after every channel ended, was %d before: leak", final, before)
	}
}
