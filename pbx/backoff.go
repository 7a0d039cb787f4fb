package pbx

import (
	"context"
	"math/rand/v2"
	"time"
)

// firstBackoff is the wait after the first failure: short enough that a
// PBX restarting quickly is picked up at once, long enough not to spin.
const firstBackoff = 250 * time.Millisecond

// Backoff spaces a driver's reconnection attempts: the wait doubles from
// 250 ms up to Max, with ±20 % jitter, and starts over after Reset (call it
// once a session came up, so that a link that drops after hours of work
// is retried after the shortest wait, not the longest). The zero value
// is not usable: Max must be positive. A Backoff is not safe for
// concurrent use; each reconnect loop owns its own.
type Backoff struct {
	// Max caps the wait before jitter, so one wait is at most 1.2×Max.
	Max time.Duration

	last time.Duration // the previous wait; zero before the first
}

// Next returns the wait before the next attempt and remembers it.
func (b *Backoff) Next() time.Duration {
	b.last = nextBackoff(b.last, b.Max)
	return b.last
}

// Reset makes the next wait the shortest again.
func (b *Backoff) Reset() { b.last = 0 }

// Wait sleeps for Next() and reports whether it did; it returns false as
// soon as ctx is done, so that a stopping driver does not sit out a wait.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// nextBackoff is the arithmetic behind Backoff: twice prev, at least
// 250 ms and at most maxWait, then ±20 % jitter. The jittered value is what
// comes back as prev, so the growth is not exactly 2× per step.
func nextBackoff(prev, maxWait time.Duration) time.Duration {
	next := prev * 2
	if next < firstBackoff {
		next = firstBackoff
	}
	if next > maxWait {
		next = maxWait
	}
	// ±20 % jitter so that many drivers (or replicas) restarted together
	// do not reconnect in step.
	j := time.Duration(rand.Int64N(int64(next)/5*2+1)) - next/5
	return next + j
}
