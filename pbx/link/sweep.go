package link

import (
	"context"
	"time"
)

// TombstoneAge is how long a driver remembers an ended leg (or room): long
// enough to ignore the PBX's late events for it and to answer a repeated
// Dial with pbx.ErrExists, short enough that the tables do not grow.
const TombstoneAge = 10 * time.Minute

// sweepEvery is how often Sweep runs.
const sweepEvery = time.Minute

// Sweep calls forget with the cut (now - TombstoneAge) every minute until
// ctx is done.
func Sweep(ctx context.Context, forget func(cut time.Time)) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			forget(time.Now().Add(-TombstoneAge))
		}
	}
}

// Forget deletes the tombstones of m that ended before cut. ended says
// whether an entry is a tombstone and since when. The caller holds the
// lock that guards m.
func Forget[K comparable, V any](m map[K]V, cut time.Time, ended func(V) (time.Time, bool)) {
	for k, v := range m {
		if at, ok := ended(v); ok && at.Before(cut) {
			delete(m, k)
		}
	}
}
