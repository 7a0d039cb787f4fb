package guests

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/storage"
)

// The join-attempt limit is a sliding window: a burst just before a minute
// boundary is not forgiven just after it (a fixed window let 20 guesses
// through in 6.8 s across one), and the address is free again once the
// burst has left the window.
func TestJoinAttempts_SlidingWindowHoldsAcrossTheMinuteBoundary(t *testing.T) {
	ctx := context.Background()
	st, err := storage.Open(ctx, filepath.Join(t.TempDir(), "g.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := time.Date(2026, 12, 6, 12, 0, 50, 0, time.UTC)
	gu := New(st, slog.New(slog.DiscardHandler), policy.Numbers{}, nil, nil, nil)
	gu.now = func() time.Time { return clock }
	try := func() (time.Duration, bool) {
		err := gu.CountJoinAttempt(ctx, "192.0.2.7")
		var ra *RetryAfterError
		if errors.As(err, &ra) {
			return ra.After, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, true
	}
	for i := range JoinRateLimit {
		if _, ok := try(); !ok {
			t.Fatalf("attempt %d of %d refused", i+1, JoinRateLimit)
		}
		clock = clock.Add(500 * time.Millisecond)
	}
	after, ok := try() // 12:00:55
	if ok {
		t.Fatal("attempt past the limit allowed")
	}
	if after < 55*time.Second || after > 65*time.Second {
		t.Errorf("Retry-After %v: the burst leaves the window in about a minute", after)
	}
	clock = time.Date(2026, 12, 6, 12, 1, 5, 0, time.UTC) // across the minute boundary
	if _, ok := try(); ok {
		t.Fatal("the burst was forgiven at the minute boundary")
	}
	clock = clock.Add(55 * time.Second) // 12:02:00: the burst of 12:00:50–55 has left
	if _, ok := try(); !ok {
		t.Fatal("still refused after the burst left the window")
	}
	// The two refused attempts (12:00:55, 12:01:05) and these two are
	// what the window holds now: 4, under the limit.
	if _, ok := try(); !ok {
		t.Fatal("refused with four attempts in the window")
	}
}
