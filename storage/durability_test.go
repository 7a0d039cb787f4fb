package storage_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convoice/convoice/storage"
)

// The SQLite writer commits without waiting for the disk and a syncer
// fsyncs the WAL behind it (store.go). These tests hold or fail the "disk"
// to check the promises that rest on that: nobody is answered and no event
// is published before its fsync, InTxEarly's caller may act at the commit,
// a failed fsync stops all further writing, and call progress yields to
// dials.

func openSQLite(t *testing.T) *storage.Store {
	t.Helper()
	return openSQLiteAt(t, filepath.Join(t.TempDir(), "d.db"), storage.Options{})
}

// heldDisk is a sync function that blocks until released.
type heldDisk struct {
	release chan struct{}
	calls   atomic.Int64
}

func holdDisk(s *storage.Store) *heldDisk {
	h := &heldDisk{release: make(chan struct{})}
	storage.SetSyncForTest(s, func() error { h.calls.Add(1); <-h.release; return nil })
	return h
}

func TestHeldFsync_NothingIsAnsweredOrPublishedUntilItIsDone(t *testing.T) {
	s := openSQLite(t)
	_, c := seedConversation(t, s)
	ctx := context.Background()
	var published atomic.Int64
	s.OnCommit(func(evs []storage.Event) { published.Add(int64(len(evs))) })
	disk := holdDisk(s)

	answered := make(chan error, 1)
	go func() {
		answered <- s.InTx(ctx, func(tx *storage.Store) error {
			_, err := tx.AppendEvent(ctx, c.ID, "t", `{}`)
			return err
		})
	}()
	// The commit is done (another connection sees it) while the disk
	// still holds the fsync.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if seq, _ := s.LastEventSeq(ctx, c.ID); seq == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the transaction never committed")
		}
		time.Sleep(time.Millisecond)
	}
	// The stream's replay reads the log: it waits for the disk too.
	replayed := make(chan int, 1)
	go func() {
		evs, _ := s.EventsAfter(ctx, c.ID, 0, 10)
		replayed <- len(evs)
	}()
	select {
	case err := <-answered:
		t.Fatalf("answered before the fsync: %v", err)
	case n := <-replayed:
		t.Fatalf("replay handed out %d events before the fsync", n)
	case <-time.After(100 * time.Millisecond):
	}
	if n := published.Load(); n != 0 {
		t.Fatalf("%d events published before the fsync", n)
	}
	close(disk.release)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	if n := <-replayed; n != 1 {
		t.Fatalf("replay after the fsync: %d events, want 1", n)
	}
	if n := published.Load(); n != 1 {
		t.Fatalf("%d events published after the fsync, want 1", n)
	}
}

func TestInTxEarly_ReturnsAtTheCommitAndDurableWaitsForTheDisk(t *testing.T) {
	s := openSQLite(t)
	_, c := seedConversation(t, s)
	ctx := context.Background()
	disk := holdDisk(s)
	commit, err := s.InTxEarly(ctx, func(tx *storage.Store) error {
		_, err := tx.AppendEvent(ctx, c.ID, "t", `{}`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	durable := make(chan error, 1)
	go func() { durable <- commit.Durable() }()
	select {
	case <-durable:
		t.Fatal("durable before the fsync")
	case <-time.After(50 * time.Millisecond):
	}
	close(disk.release)
	if err := <-durable; err != nil {
		t.Fatal(err)
	}
	// Durable may be asked again.
	if err := commit.Durable(); err != nil {
		t.Fatal(err)
	}

	// A transaction that fails reports it at once, not at Durable.
	boom := errors.New("boom")
	if _, err := s.InTxEarly(ctx, func(tx *storage.Store) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed early transaction: %v", err)
	}
}

func TestFailedFsync_FailsTheBatchAndRefusesFurtherWrites(t *testing.T) {
	s := openSQLite(t)
	_, c := seedConversation(t, s)
	ctx := context.Background()
	var published atomic.Int64
	s.OnCommit(func(evs []storage.Event) { published.Add(int64(len(evs))) })
	eio := errors.New("input/output error")
	storage.SetSyncForTest(s, func() error { return eio })
	err := s.InTx(ctx, func(tx *storage.Store) error {
		_, err := tx.AppendEvent(ctx, c.ID, "t", `{}`)
		return err
	})
	if !errors.Is(err, eio) {
		t.Fatalf("InTx after a failed fsync: %v", err)
	}
	if published.Load() != 0 {
		t.Fatal("an event whose fsync failed was published")
	}
	if err := s.Ping(ctx); !errors.Is(err, eio) {
		t.Fatalf("Ping (readiness) after a failed fsync: %v", err)
	}
	// Later writes are refused without running, even once the disk
	// answers again: what the failed fsync covered may be lost, and only a
	// restart (SQLite's recovery from the WAL) says what is on disk.
	storage.SetSyncForTest(s, nil)
	ran := false
	err = s.InTx(ctx, func(tx *storage.Store) error { ran = true; return nil })
	if !errors.Is(err, eio) || ran {
		t.Fatalf("write after a failed fsync: ran %v, err %v", ran, err)
	}
}

func TestLowPriority_DialsGoBeforeWaitingCallProgress(t *testing.T) {
	s := openSQLite(t)
	ctx := context.Background()
	// Hold the writer inside a transaction while the others queue.
	inside, release := make(chan struct{}), make(chan struct{})
	go s.InTx(ctx, func(tx *storage.Store) error { close(inside); <-release; return nil })
	<-inside

	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	run := func(ctx context.Context, name string) {
		defer wg.Done()
		s.InTx(ctx, func(tx *storage.Store) error { mu.Lock(); order = append(order, name); mu.Unlock(); return nil })
	}
	low := storage.LowPriority(ctx)
	for _, name := range []string{"ringing", "connected", "talking"} {
		wg.Add(1)
		go run(low, name)
		time.Sleep(20 * time.Millisecond) // queued in this order
	}
	wg.Add(1)
	go run(ctx, "dial")
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	want := []string{"dial", "ringing", "connected", "talking"}
	if len(order) != len(want) {
		t.Fatalf("ran %v", order)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %v, want %v (the dial first, call progress in arrival order)", order, want)
		}
	}
}

func TestProceed_LetsTheCallerGoOnAndALaterFailureReachesDurable(t *testing.T) {
	s := openSQLite(t)
	_, c := seedConversation(t, s)
	ctx := context.Background()
	finish := make(chan error)
	returned := make(chan struct{})
	var commit storage.Commit
	var err error
	go func() {
		commit, err = s.InTxEarly(ctx, func(tx *storage.Store) error {
			if _, err := tx.AppendEvent(ctx, c.ID, "leg.updated", `{}`); err != nil {
				return err
			}
			tx.Proceed()
			return <-finish // the rest of the transaction
		})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("InTxEarly did not return at Proceed")
	}
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("audit insert failed")
	finish <- boom
	if err := commit.Durable(); !errors.Is(err, boom) {
		t.Fatalf("Durable after the transaction failed past Proceed: %v", err)
	}
	if seq, _ := s.LastEventSeq(ctx, c.ID); seq != 0 {
		t.Fatalf("the failed transaction left seq %d", seq)
	}
}

func TestInTxAsync_RunsInQueueOrderAndReportsAfterTheDisk(t *testing.T) {
	s := openSQLite(t)
	_, c := seedConversation(t, s)
	ctx := storage.LowPriority(context.Background())
	disk := holdDisk(s)
	var mu sync.Mutex
	var ran, reported []int
	for i := 0; i < 20; i++ {
		s.InTxAsync(ctx, func(tx *storage.Store) error {
			mu.Lock()
			ran = append(ran, i)
			mu.Unlock()
			_, err := tx.AppendEvent(ctx, c.ID, "t", `{}`)
			return err
		}, func(err error) {
			if err != nil {
				t.Errorf("transaction %d: %v", i, err)
			}
			mu.Lock()
			reported = append(reported, i)
			mu.Unlock()
		})
	}
	// waitAll waits until list holds all 20.
	deadline := time.Now().Add(5 * time.Second)
	waitAll := func(what string, list *[]int) {
		for {
			mu.Lock()
			n := len(*list)
			mu.Unlock()
			if n == 20 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of 20 queued transactions %s", n, what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitAll("ran", &ran)
	mu.Lock()
	if len(reported) != 0 {
		t.Errorf("%d reported before the fsync", len(reported))
	}
	mu.Unlock()
	close(disk.release)
	waitAll("were reported", &reported)
	for i := range 20 {
		if ran[i] != i || reported[i] != i {
			t.Fatalf("ran %v, reported %v: want queue order", ran, reported)
		}
	}
}
