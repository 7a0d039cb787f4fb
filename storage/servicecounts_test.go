package storage_test

import (
	"context"
	"errors"
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
//
// Both ways of deciding: alone (DecideDialIn outside a transaction makes
// its own) and in a dial's transaction (pipelined on PostgreSQL), as Dial
// does.
func TestDecideDial_ServiceCapEstimatedFarBelowAndCountedNearIt(t *testing.T) {
	for _, inTx := range []bool{false, true} {
		t.Run(fmt.Sprintf("in_transaction=%v", inTx), func(t *testing.T) { serviceCapEstimated(t, inTx) })
	}
}

func serviceCapEstimated(t *testing.T, inTx bool) {
	ctx := context.Background()
	_, a, b := twoReplicas(t)
	t0 := time.Now().UTC()
	limits := []storage.DialLimit{{Scope: storage.DialScope{}, Since: t0.Add(-time.Minute), Max: 100}}
	n := 0
	decide := func(s *storage.Store, at time.Duration) (int64, bool) {
		t.Helper()
		n++
		g := &storage.DialGrant{ID: fmt.Sprintf("g%03d", n), At: t0.Add(at), UserID: fmt.Sprintf("u%d", n), ConversationID: "c", Number: "0100"}
		keys := []string{"dial:conv:c" + g.ID}
		var d storage.DialDecision
		var err error
		if inTx {
			err = s.InTx(ctx, func(tx *storage.Store) error { return tx.DecideDialIn(ctx, keys, limits, g, &d) })
		} else {
			err = s.DecideDialIn(ctx, keys, limits, g, &d)
		}
		if err != nil {
			t.Fatal(err)
		}
		return d.Counts[0], d.Granted
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

// A decision made in a transaction that then fails leaves no grant: the
// dial it allowed never happened. Its outcome is known once the
// transaction's next statement has returned.
func TestDecideDialIn_AFailedTransactionKeepsNoGrant(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	_, c := seedConversation(t, s)
	limits := []storage.DialLimit{{Scope: storage.DialScope{ConversationID: c.ID}, Since: time.Now().Add(-time.Minute), Max: 1}}
	decide := func(id string, fail bool) storage.DialDecision {
		t.Helper()
		var d storage.DialDecision
		g := &storage.DialGrant{ID: id, At: time.Now(), UserID: "u", ConversationID: c.ID, Number: "0100"}
		errFail := errors.New("the dial failed")
		err := s.InTx(ctx, func(tx *storage.Store) error {
			if err := tx.DecideDialIn(ctx, []string{"dial:conv:" + c.ID}, limits, g, &d); err != nil {
				return err
			}
			if _, err := tx.GetConversation(ctx, c.ID); err != nil { // the next statement
				return err
			}
			if len(d.Counts) != 1 {
				t.Errorf("decision %s not known after the next statement: %+v", id, d)
			}
			if fail {
				return errFail
			}
			return nil
		})
		if fail != errors.Is(err, errFail) || (!fail && err != nil) {
			t.Fatalf("decision %s: %v", id, err)
		}
		return d
	}
	for i := 0; i < 3; i++ {
		if d := decide(fmt.Sprintf("failed-%d", i), true); !d.Granted {
			t.Fatalf("failed attempt %d refused (%v): a failed transaction's grant was kept", i, d.Counts)
		}
	}
	if d := decide("kept", false); !d.Granted {
		t.Fatalf("the first committed dial refused: %v", d.Counts)
	}
	if d := decide("over", false); d.Granted || d.Counts[0] != 1 {
		t.Fatalf("a dial over the limit: %+v, want refused at 1", d)
	}
}
