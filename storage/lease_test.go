package storage_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// On SQLite one process is the only writer: the lease is granted at once
// and lost only when released.
func TestLease_SQLiteIsGrantedAtOnce(t *testing.T) {
	s, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "t.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l, err := s.AcquireLease(ctx, "pbx-node:a")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
		t.Fatal("lost before release")
	default:
	}
	l.Release()
	<-l.Lost()
}

// On PostgreSQL exactly one session holds a lease; the others wait. When
// another session wins the lock while the holder's session is down (here
// an administrator ends the session and takes the lock in one statement),
// the former holder learns at once that its lease is lost; once the lock
// is free, a waiter holds it within LeaseRetry plus a connect.
func TestLease_PostgresOneHolderAndTakeoverWhenAnotherSessionWinsIt(t *testing.T) {
	ctx := context.Background()
	dsn, a, b := twoReplicas(t)

	la, err := a.AcquireLease(ctx, "pbx-node:n1")
	if err != nil {
		t.Fatal(err)
	}
	// Another lease name is independent.
	other, err := b.AcquireLease(ctx, "pbx-node:n2")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release()
	if held, err := b.LeaseHeld(ctx, "pbx-node:n1"); err != nil || !held {
		t.Fatalf("LeaseHeld n1 = %v, %v", held, err)
	}
	if held, err := b.LeaseHeld(ctx, "pbx-node:nobody"); err != nil || held {
		t.Fatalf("LeaseHeld of a lease nobody took = %v, %v", held, err)
	}

	type result struct {
		l   *storage.Lease
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	bctx, bcancel := context.WithCancel(ctx)
	defer bcancel()
	go func() {
		l, err := b.AcquireLease(bctx, "pbx-node:n1")
		got <- result{l, err, time.Now()}
	}()
	// b keeps trying (every LeaseRetry) and does not get it while a holds it.
	select {
	case r := <-got:
		t.Fatalf("second holder while the first holds it: %+v", r)
	case <-time.After(3 * storage.LeaseRetry):
	}

	// a's session ends and another session holds the lock before a can
	// take it again.
	admin := apitest.AdminConn(t, dsn)
	letGo := apitest.SeizeLeases(t, admin)
	select {
	case <-la.Lost():
	case <-time.After(storage.LeaseCheck + storage.LeaseCheckTimeout + time.Second):
		t.Fatal("the former holder did not notice that its lease was taken")
	}
	la.Release()
	select {
	case r := <-got:
		t.Fatalf("b holds the lease while the administrator does: %+v", r)
	default:
	}
	freed := time.Now()
	letGo()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.l.Release()
		if d := r.at.Sub(freed); d > 2*storage.LeaseRetry+time.Second {
			t.Fatalf("takeover took %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nobody took the lease within 5 s of its being freed")
	}
}

// When the server ends the holder's session (a restart, a failover, an
// administrator) and nobody else takes the lock, the holder takes its lease
// again on a new session at once and never loses it: handing a PBX node
// over, or leaving it without an event connection for a while, would have
// Asterisk hang up every call that answers meanwhile.
func TestLease_PostgresAHolderWhoseSessionIsEndedTakesItAgain(t *testing.T) {
	ctx := context.Background()
	dsn, a, _ := twoReplicas(t)
	la, err := a.AcquireLease(ctx, "pbx-node:n1")
	if err != nil {
		t.Fatal(err)
	}
	defer la.Release()
	admin := apitest.AdminConn(t, dsn)
	// A quiet session is kept: checked every LeaseCheck, not replaced.
	first := la.SessionPID()
	time.Sleep(2*storage.LeaseCheck + storage.LeaseCheck/2)
	if pid := la.SessionPID(); pid != first {
		t.Fatalf("the lease moved from session %d to %d while nothing happened", first, pid)
	}
	for round := 0; round < 2; round++ {
		pid := la.SessionPID()
		var ok bool
		if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", int64(pid)).Scan(&ok); err != nil || !ok {
			t.Fatalf("terminate the holder's session: %v %v", ok, err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for la.SessionPID() == pid {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the holder is still on its ended session after 2 s", round)
			}
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case <-la.Lost():
			t.Fatalf("round %d: the lease was lost though nobody else took it", round)
		default:
		}
		if held, err := a.LeaseHeld(ctx, "pbx-node:n1"); err != nil || !held {
			t.Fatalf("round %d: LeaseHeld = %v, %v", round, held, err)
		}
	}
}

// twoReplicas opens two stores on one fresh PostgreSQL database (dsn), as
// two replicas of convoice would.
func twoReplicas(t *testing.T) (dsn string, a, b *storage.Store) {
	t.Helper()
	dsn = apitest.Postgres(t)
	open := func() *storage.Store {
		s, err := storage.Open(context.Background(), dsn, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return dsn, open(), open()
}
