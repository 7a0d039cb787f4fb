package directory

import (
	"testing"
	"time"
)

// A remote's failure count is read again once it is failuresFresh old,
// once its oldest failure has left the window (the throttle would end),
// and after this replica records a failure of that remote; other remotes
// are kept apart.
func TestFailureCounts_ReadAgainWhenStaleOutOfWindowOrAfterAFailure(t *testing.T) {
	var f failureCounts
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	window := time.Minute
	if _, _, ok := f.get("10.0.0.1", t0, window); ok {
		t.Fatal("a count nobody read was served")
	}
	f.put("10.0.0.1", 5, t0.Add(-window+100*time.Millisecond), t0)
	f.put("10.0.0.2", 0, time.Time{}, t0)
	if n, _, ok := f.get("10.0.0.1", t0.Add(50*time.Millisecond), window); !ok || n != 5 {
		t.Fatalf("fresh count: %d %v, want 5 served", n, ok)
	}
	if _, _, ok := f.get("10.0.0.1", t0.Add(150*time.Millisecond), window); ok {
		t.Fatal("served a count whose oldest failure left the window")
	}
	if n, _, ok := f.get("10.0.0.2", t0.Add(failuresFresh-time.Millisecond), window); !ok || n != 0 {
		t.Fatalf("another remote's fresh count: %d %v", n, ok)
	}
	if _, _, ok := f.get("10.0.0.2", t0.Add(failuresFresh), window); ok {
		t.Fatal("served a count failuresFresh old")
	}
	f.put("10.0.0.2", 0, time.Time{}, t0)
	f.forget("10.0.0.2")
	if _, _, ok := f.get("10.0.0.2", t0, window); ok {
		t.Fatal("served a count after a failure was recorded here")
	}
}
