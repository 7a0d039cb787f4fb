package storage_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
// the holder's session dies (a killed replica: PostgreSQL ends its
// backend), a waiter holds it within LeaseRetry plus a connect, and the
// former holder learns that its lease is lost.
func TestLease_PostgresOneHolderAndTakeoverWhenItsSessionDies(t *testing.T) {
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

	// Kill a's session from outside, the way PostgreSQL ends the backend
	// of a replica that died.
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	killed := time.Now()
	var ok bool
	if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", int64(la.SessionPID())).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate the holder's session: %v %v", ok, err)
	}
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.l.Release()
		if d := r.at.Sub(killed); d > 2*storage.LeaseRetry+time.Second {
			t.Fatalf("takeover took %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nobody took the lease within 5 s of its holder's death")
	}
	select {
	case <-la.Lost():
	case <-time.After(storage.LeaseCheck + storage.LeaseCheckTimeout + time.Second):
		t.Fatal("the former holder did not notice that its lease was lost")
	}
	la.Release()
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
