package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/convoice/convoice/storage"
)

// Two replicas share a service-wide cap of 100 dials. Far below it a
// replica takes its last exact count (at most 100 ms old) plus its own
// grants since, and does not see the other replica's grants; within the
// margin (20 below the cap) it counts exactly, so the cap refuses exactly
// at 100 — a refusal never comes from an estimate.
func TestDecideDial_ServiceCapEstimatedFarBelowAndCountedNearIt(t *testing.T) {
	ctx := context.Background()
	_, a, b := twoReplicas(t)
	t0 := time.Now().UTC()
	limits := []storage.DialLimit{{Scope: storage.DialScope{}, Since: t0.Add(-time.Minute), Max: 100}}
	n := 0
	decide := func(s *storage.Store, at time.Duration) (int64, bool) {
		t.Helper()
		n++
		g := &storage.DialGrant{ID: fmt.Sprintf("g%03d", n), At: t0.Add(at), UserID: fmt.Sprintf("u%d", n), ConversationID: "c", Number: "0100"}
		counts, granted, err := s.DecideDial(ctx, []string{"dial:conv:c" + g.ID}, limits, g)
		if err != nil {
			t.Fatal(err)
		}
		return counts[0], granted
	}

	if c, ok := decide(a, 0); c != 0 || !ok {
		t.Fatalf("first decision of A: count %d granted %v, want 0 true (counted)", c, ok)
	}
	for i := 0; i < 70; i++ {
		if _, ok := decide(b, time.Duration(i)*time.Millisecond); !ok {
			t.Fatalf("B's dial %d refused", i)
		}
	}
	// 71 granted; A's reading (10 ms old) says 0, plus its own 1.
	if c, ok := decide(a, 10*time.Millisecond); c != 1 || !ok {
		t.Fatalf("A far below the cap with a fresh reading: count %d granted %v, want its estimate 1, granted", c, ok)
	}
	// 150 ms on the reading is stale: A counts again.
	if c, ok := decide(a, 150*time.Millisecond); c != 72 || !ok {
		t.Fatalf("A with a stale reading: count %d granted %v, want the exact 72, granted", c, ok)
	}
	for i := 0; i < 25; i++ {
		if _, ok := decide(b, 160*time.Millisecond); !ok {
			t.Fatalf("B's dial %d refused", 70+i)
		}
	}
	// 98 granted. A's reading of 72 (+1 own grant) is stale at 300 ms: it
	// counts 98, within 20 of the cap, so it goes on counting, each time,
	// up to the cap and not one past it.
	for i, want := range []int64{98, 99} {
		if c, ok := decide(a, 300*time.Millisecond+time.Duration(i)*time.Millisecond); c != want || !ok {
			t.Fatalf("A near the cap: count %d granted %v, want the exact %d, granted", c, ok, want)
		}
	}
	if c, ok := decide(a, 302*time.Millisecond); c != 100 || ok {
		t.Fatalf("A at the cap: count %d granted %v, want the exact 100, refused", c, ok)
	}
	// B's reading (from 160 ms) is fresh at 170 ms, but with its own grants
	// since it is within the margin: counted.
	if c, ok := decide(b, 170*time.Millisecond); c != 100 || ok {
		t.Fatalf("B at the cap: count %d granted %v, want the exact 100, refused", c, ok)
	}
}
