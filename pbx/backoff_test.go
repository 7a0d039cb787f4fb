package pbx

import (
	"context"
	"testing"
	"time"
)

// within reports whether got is nominal ±20 %, the jitter Backoff adds.
func within(got, nominal time.Duration) bool {
	return got >= nominal-nominal/5 && got <= nominal+nominal/5
}

func TestBackoffGrowsToCap(t *testing.T) {
	const maxWait = 5 * time.Second
	b := Backoff{Max: maxWait}
	prev := time.Duration(0)
	capped := 0
	for i := range 40 {
		got := b.Next()
		nominal := min(max(2*prev, firstBackoff), maxWait)
		if !within(got, nominal) {
			t.Fatalf("wait %d = %v, want %v ±20%% (previous %v)", i, got, nominal, prev)
		}
		if nominal < maxWait && got <= prev {
			t.Fatalf("wait %d = %v did not grow from %v below the cap", i, got, prev)
		}
		if got > maxWait+maxWait/5 {
			t.Fatalf("wait %d = %v exceeds the cap 1.2×%v", i, got, maxWait)
		}
		if nominal == maxWait {
			capped++
		}
		prev = got
	}
	// 250 ms doubling (at worst ×1.6 with jitter) reaches 5 s within 8
	// steps, so most of the 40 waits must sit at the cap.
	if capped < 30 {
		t.Fatalf("only %d of 40 waits reached the cap", capped)
	}
}

func TestBackoffJitterAtCap(t *testing.T) {
	const maxWait = time.Second
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 1000 {
		got := nextBackoff(maxWait, maxWait)
		if !within(got, maxWait) {
			t.Fatalf("wait at cap = %v, want %v ±20%%", got, maxWait)
		}
		lo, hi = min(lo, got), max(hi, got)
	}
	// Without jitter every driver restarted together would redial in step.
	if lo >= maxWait || hi <= maxWait {
		t.Fatalf("1000 waits at the cap spread only over [%v, %v]; want both sides of %v", lo, hi, maxWait)
	}
}

func TestBackoffCapBelowFirstWait(t *testing.T) {
	const maxWait = 100 * time.Millisecond
	for range 100 {
		if got := nextBackoff(0, maxWait); !within(got, maxWait) {
			t.Fatalf("first wait with cap %v = %v, want the cap ±20%%", maxWait, got)
		}
	}
}

func TestBackoffReset(t *testing.T) {
	b := Backoff{Max: 5 * time.Second}
	for range 20 {
		b.Next()
	}
	if got := b.Next(); !within(got, b.Max) {
		t.Fatalf("wait after 20 failures = %v, want the cap %v ±20%%", got, b.Max)
	}
	b.Reset()
	first := b.Next()
	if !within(first, firstBackoff) {
		t.Fatalf("wait after Reset = %v, want %v ±20%%", first, firstBackoff)
	}
	// Growth restarts from the short wait, not from the cap.
	if got := b.Next(); !within(got, 2*first) {
		t.Fatalf("second wait after Reset = %v, want %v ±20%%", got, 2*first)
	}
}

func TestBackoffWaitSleeps(t *testing.T) {
	b := Backoff{Max: 5 * time.Second}
	start := time.Now()
	if !b.Wait(context.Background()) {
		t.Fatal("Wait with a live context returned false")
	}
	// The first wait is 250 ms -20 % at least.
	if took := time.Since(start); took < firstBackoff-firstBackoff/5 {
		t.Fatalf("Wait returned after %v, before the shortest wait", took)
	}
}

// waitOrFail runs b.Wait(ctx) and fails the test if it has not returned
// within limit, so that a Wait deaf to ctx fails fast instead of hanging.
func waitOrFail(t *testing.T, b *Backoff, ctx context.Context, limit time.Duration) bool {
	t.Helper()
	done := make(chan bool, 1)
	go func() { done <- b.Wait(ctx) }()
	select {
	case ok := <-done:
		return ok
	case <-time.After(limit):
		t.Fatalf("Wait did not return within %v of a cancelled context", limit)
		return false
	}
}

func TestBackoffWaitCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// With an hour's cap, only the context can end the wait in time (the
	// first wait alone, 200 ms at least, exceeds the limit).
	b := Backoff{Max: time.Hour}
	if waitOrFail(t, &b, ctx, 150*time.Millisecond) {
		t.Fatal("Wait with a done context returned true")
	}
}

func TestBackoffWaitCancelledMidway(t *testing.T) {
	b := Backoff{Max: time.Hour}
	for range 20 {
		b.Next() // the next wait is now about an hour
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if waitOrFail(t, &b, ctx, 10*time.Second) {
		t.Fatal("Wait returned true although ctx was cancelled during an hour's wait")
	}
}
