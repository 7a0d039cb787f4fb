package controller

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convoice/convoice/storage"
)

// openIdemController opens (or reopens) the database file at path with a
// controller whose dead-attempt bound is attempt.
func openIdemController(t *testing.T, path string, attempt, retention time.Duration) (*Controller, *storage.Store) {
	t.Helper()
	st, err := storage.Open(context.Background(), path, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := New(Config{Region: "US", IdempotencyAttempt: attempt, IdempotencyRetention: retention}, st, NewHub(),
		[]*Node{{Name: "pbx", Weight: 1, Driver: &recordingPBX{}}}, nil)
	return c, st
}

// Given a process killed between reserving an Idempotency-Key and storing
// its answer, then after a restart the same key is refused as "in
// progress" (never run twice) until the attempt bound has passed, and
// works again after it: run once, its answer replayed from then on.
func TestIdempotency_KeyOfAnAttemptThatDiedWorksAgainAfterTheBound(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "idem.db")
	const bound = 400 * time.Millisecond
	c1, st1 := openIdemController(t, path, bound, time.Hour)
	req := []byte(`{"number":"+12025550123"}`)

	// The first attempt dies half-way: its reservation is written, its
	// answer never is (a panic stands for the kill: nothing after it runs).
	func() {
		defer func() { _ = recover() }()
		_, _ = c1.Idempotent(ctx, "user:u1", "key-1", req, func() Answer { panic("killed") })
	}()
	st1.Close()

	c2, st2 := openIdemController(t, path, bound, time.Hour) // the restart
	defer st2.Close()
	var runs atomic.Int32
	do := func() Answer { runs.Add(1); return Answer{Status: 201, Body: []byte(`{"leg":"l1"}`)} }

	// Within the bound the dead attempt still counts as running.
	short, cancel := context.WithTimeout(ctx, bound/4)
	_, err := c2.Idempotent(short, "user:u1", "key-1", req, do)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || runs.Load() != 0 {
		t.Fatalf("within the bound: err %v, runs %d; want a wait and no run", err, runs.Load())
	}

	// After the bound the key works again, once.
	ans, err := c2.Idempotent(ctx, "user:u1", "key-1", req, do)
	if err != nil || ans.Status != 201 || runs.Load() != 1 {
		t.Fatalf("after the bound: %+v %v, runs %d", ans, err, runs.Load())
	}
	again, err := c2.Idempotent(ctx, "user:u1", "key-1", req, do)
	if err != nil || string(again.Body) != `{"leg":"l1"}` || runs.Load() != 1 {
		t.Fatalf("repeat: %+v %v, runs %d; want the stored answer", again, err, runs.Load())
	}
	if _, err := c2.Idempotent(ctx, "user:u1", "key-1", []byte(`{"number":"+12025550999"}`), do); err == nil {
		t.Fatal("the key reused for another request was accepted")
	} else if e, ok := AsError(err); !ok || e.Code != "idempotency_key_reused" {
		t.Fatalf("reused key: %v", err)
	}
}

// Keys older than the retention are purged in the background; younger
// ones stay.
func TestIdempotency_KeysOlderThanTheRetentionArePurged(t *testing.T) {
	ctx := context.Background()
	c, st := openIdemController(t, filepath.Join(t.TempDir(), "idem.db"), time.Minute, 2*time.Second)
	defer st.Close()
	now := time.Now().UTC()
	for key, at := range map[string]time.Time{"old": now.Add(-time.Hour), "young": now} {
		rec := &storage.IdempotencyRecord{Scope: "s", Key: key, RequestHash: "h", Status: 201, Body: "{}", CreatedAt: at}
		if err := st.InTx(ctx, func(tx *storage.Store) error { return tx.PutIdempotency(ctx, rec) }); err != nil {
			t.Fatal(err)
		}
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(rctx) }()
	defer func() { stop(); <-done }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := st.GetIdempotency(ctx, "s", "old")
		if errors.Is(err, storage.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the key older than the retention is still there: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := st.GetIdempotency(ctx, "s", "young"); err != nil {
		t.Fatalf("a young key was purged: %v", err)
	}
}
