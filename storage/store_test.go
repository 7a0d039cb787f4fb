package storage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convoice/convoice/storage"
	"github.com/convoice/convoice/storage/pgtest"
)

// testDSN is a new SQLite file, or CONVOICE_TEST_POSTGRES (a DSN to a
// throw-away database) when set, so the same tests run on both engines.
func openTest(t *testing.T) *storage.Store {
	t.Helper()
	dsn := pgtest.DSN(t, filepath.Join(t.TempDir(), "t.db"))
	s, err := storage.Open(context.Background(), dsn, storage.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openSQLiteAt opens the SQLite file path with opts, also when the suite
// runs on PostgreSQL: for the tests of the SQLite writer.
func openSQLiteAt(t *testing.T, path string, opts storage.Options) *storage.Store {
	t.Helper()
	s, err := storage.Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpen_RunsVersionedMigrationsOnceAndRecordsThem(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	s, err := storage.Open(ctx, path, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.SchemaVersion(ctx)
	if err != nil || v < 1 {
		t.Fatalf("schema version %d, %v", v, err)
	}
	// Versions come in ranges per line of work (1–4, 5–9, …, 20–29), so
	// they need not be contiguous: each is recorded once, and a reopen
	// applies none again.
	var first int64
	s.DB().Table("schema_migrations").Count(&first)
	s.Close()
	s2, err := storage.Open(ctx, path, storage.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	var n, distinct int64
	s2.DB().Table("schema_migrations").Count(&n)
	s2.DB().Raw("SELECT COUNT(DISTINCT version) FROM schema_migrations").Scan(&distinct)
	if n != first || n != distinct {
		t.Fatalf("migrations recorded %d rows after reopening (%d before, %d versions; highest %d)", n, first, distinct, v)
	}
	var mode string
	s2.DB().Raw("PRAGMA journal_mode").Scan(&mode)
	if mode != "wal" {
		t.Fatalf("journal_mode %q, want wal", mode)
	}
	var fk int
	s2.DB().Raw("PRAGMA foreign_keys").Scan(&fk)
	if fk != 1 {
		t.Fatalf("foreign_keys off")
	}
}

func seedConversation(t *testing.T, s *storage.Store) (*storage.User, *storage.Conversation) {
	t.Helper()
	ctx := context.Background()
	u := &storage.User{ID: fmt.Sprint("u-", time.Now().UnixNano()), DisplayName: "A", Email: fmt.Sprint(time.Now().UnixNano(), "@x.com"), Role: storage.RoleUser}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	c := &storage.Conversation{ID: fmt.Sprint("c-", time.Now().UnixNano()), Kind: storage.KindIM, CreatorID: u.ID}
	if err := s.CreateConversation(ctx, c, []storage.Participant{{ConversationID: c.ID, UserID: u.ID, Role: storage.RoleOrganizer}}); err != nil {
		t.Fatal(err)
	}
	return u, c
}

func TestAppendEvent_ConcurrentWritersGetGapFreeSeqsAndNoLockErrors(t *testing.T) {
	s := openTest(t)
	_, c := seedConversation(t, s)
	ctx := context.Background()
	var published []storage.Event
	var mu sync.Mutex
	s.OnCommit(func(evs []storage.Event) { mu.Lock(); published = append(published, evs...); mu.Unlock() })
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := s.InTx(ctx, func(tx *storage.Store) error {
				if _, err := tx.AppendEvent(ctx, c.ID, "t", fmt.Sprintf(`{"i":%d}`, i)); err != nil {
					return err
				}
				_, err := tx.AppendEvent(ctx, c.ID, "t", fmt.Sprintf(`{"i":%d}`, i))
				return err
			})
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent append failed: %v", err)
	}
	evs, err := s.EventsAfter(ctx, c.ID, 0, 1000)
	if err != nil || len(evs) != 400 {
		t.Fatalf("%d events, %v", len(evs), err)
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("seq %d at %d", ev.Seq, i)
		}
	}
	// Every event is published once, after its commit. On SQLite (one
	// writer) also in seq order; on PostgreSQL concurrent commits may
	// announce out of order, which the stream repairs from the log.
	seen := map[int64]int{}
	for i, ev := range published {
		seen[ev.Seq]++
		if s.Dialect() == "sqlite" && ev.Seq != int64(i+1) {
			t.Fatalf("published seq %d at %d", ev.Seq, i)
		}
	}
	if len(seen) != 400 || len(published) != 400 {
		t.Fatalf("published %d events, %d distinct; want 400", len(published), len(seen))
	}
}

func TestRolledBackTransactionPublishesNothing(t *testing.T) {
	s := openTest(t)
	_, c := seedConversation(t, s)
	ctx := context.Background()
	called := false
	s.OnCommit(func([]storage.Event) { called = true })
	boom := errors.New("boom")
	err := s.InTx(ctx, func(tx *storage.Store) error {
		if _, err := tx.AppendEvent(ctx, c.ID, "t", "{}"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || called {
		t.Fatalf("err %v, published %v", err, called)
	}
	if seq, _ := s.LastEventSeq(ctx, c.ID); seq != 0 {
		t.Fatalf("seq moved to %d by a rolled-back transaction", seq)
	}
}

func TestAtMostOneActiveConferencePerConversation(t *testing.T) {
	s := openTest(t)
	u, c := seedConversation(t, s)
	ctx := context.Background()
	first := &storage.Conference{ID: "cf1-" + c.ID, ConversationID: c.ID, State: storage.ConferenceActive, CreatedBy: u.ID}
	if err := s.CreateConference(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := &storage.Conference{ID: "cf2-" + c.ID, ConversationID: c.ID, State: storage.ConferenceActive, CreatedBy: u.ID}
	if err := s.CreateConference(ctx, second); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("second active conference: %v, want ErrConflict", err)
	}
	if ok, err := s.EndConference(ctx, first.ID, "done", time.Now()); !ok || err != nil {
		t.Fatalf("end: %v %v", ok, err)
	}
	if err := s.CreateConference(ctx, second); err != nil {
		t.Fatalf("a new conference after the first ended: %v", err)
	}
}

func TestIdempotencyRecordIsFirstWriterWins(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	r := &storage.IdempotencyRecord{Scope: "u", Key: "k", RequestHash: "h", Body: ""}
	if err := s.PutIdempotency(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.PutIdempotency(ctx, &storage.IdempotencyRecord{Scope: "u", Key: "k", RequestHash: "h2"}); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("second put: %v", err)
	}
	if err := s.FinishIdempotency(ctx, "u", "k", 201, `{"ok":true}`); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetIdempotency(ctx, "u", "k")
	if err != nil || got.Status != 201 || got.RequestHash != "h" {
		t.Fatalf("got %+v %v", got, err)
	}
}

func TestAppendEvents_OneBumpGivesConsecutiveSeqsAfterTheLog(t *testing.T) {
	s := openTest(t)
	_, c := seedConversation(t, s)
	ctx := context.Background()
	var published []storage.Event
	s.OnCommit(func(evs []storage.Event) { published = append(published, evs...) })
	err := s.InTx(ctx, func(tx *storage.Store) error {
		if _, err := tx.AppendEvent(ctx, c.ID, "first", `{}`); err != nil {
			return err
		}
		_, err := tx.AppendEvents(ctx, c.ID, "many", []string{`{"i":1}`, `{"i":2}`, `{"i":3}`})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.EventsAfter(ctx, c.ID, 0, 10)
	if err != nil || len(evs) != 4 {
		t.Fatalf("%d events, %v", len(evs), err)
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) || (i > 0 && (ev.Type != "many" || ev.Data != fmt.Sprintf(`{"i":%d}`, i))) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	if len(published) != 4 || published[3].Seq != 4 {
		t.Fatalf("published %+v", published)
	}
	if seq, _ := s.LastEventSeq(ctx, c.ID); seq != 4 {
		t.Fatalf("event_seq %d", seq)
	}
}

// GetUser reads a user and their published numbers in their order, a user
// without numbers, and no one; MembershipWithUser reads the same user with
// what Membership reads, and nothing for someone not in the conversation.
func TestGetUser_NumbersInOrderNoneAndUnknown(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	u, conv := seedConversation(t, s)
	sameAsApart := func(what string) {
		t.Helper()
		c, p, mu, err := s.MembershipWithUser(ctx, conv.ID, u.ID)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		wc, wp, err := s.Membership(ctx, conv.ID, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		wu, err := s.GetUser(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%+v %+v %+v", *c, *p, *mu) != fmt.Sprintf("%+v %+v %+v", *wc, *wp, *wu) {
			t.Fatalf("%s: MembershipWithUser read\n%+v %+v %+v\napart:\n%+v %+v %+v", what, *c, *p, *mu, *wc, *wp, *wu)
		}
	}
	sameAsApart("no numbers")
	other, _ := seedConversation(t, s)
	if _, _, _, err := s.MembershipWithUser(ctx, conv.ID, other.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("someone not in the conversation: %v, want ErrNotFound", err)
	}
	nums := []storage.PublishedNumber{{Label: "work", Number: "+12025550101", IsDefault: true},
		{Label: "mobile", Number: "+12025550102"}, {Label: "home", Number: "+12025550103"}}
	if err := s.ReplaceNumbers(ctx, u.ID, nums); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for i, n := range got.Numbers {
		if n.Position != i || n.UserID != u.ID || n.ID == 0 {
			t.Fatalf("number %d: %+v", i, n)
		}
		labels = append(labels, n.Label)
	}
	if got.ID != u.ID || got.Email != u.Email || got.Role != u.Role || fmt.Sprint(labels) != "[work mobile home]" ||
		!got.Numbers[0].IsDefault || got.Numbers[1].IsDefault || got.Numbers[2].Number != "+12025550103" {
		t.Fatalf("GetUser: %+v", got)
	}
	sameAsApart("three numbers")
	if err := s.ReplaceNumbers(ctx, u.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetUser(ctx, u.ID); err != nil || got.ID != u.ID || len(got.Numbers) != 0 {
		t.Fatalf("a user without numbers: %+v %v", got, err)
	}
	if _, err := s.GetUser(ctx, "no-such-user"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("an unknown user: %v, want ErrNotFound", err)
	}
}

// heldWriter opens a store with a conversation whose SQLite writer is held
// at a commit (of one event, "hold") until release is called, so that the
// transactions a test queues meanwhile run as one batch after it; holding
// is the number of events held (0 on PostgreSQL, which has no writer to
// hold, and where release does nothing).
func heldWriter(t *testing.T) (s *storage.Store, c *storage.Conversation, holding int, release func()) {
	t.Helper()
	held, released := make(chan struct{}), make(chan struct{})
	// armed: the next commit holds the writer (not the seed's writes).
	var armed atomic.Bool
	dsn := pgtest.DSN(t, filepath.Join(t.TempDir(), "t.db"))
	s, err := storage.Open(context.Background(), dsn, storage.Options{BeforeCommit: func() error {
		if armed.CompareAndSwap(true, false) {
			close(held)
			<-released
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	_, c = seedConversation(t, s)
	release = func() { close(released) }
	if s.Dialect() != "sqlite" {
		return s, c, 0, release
	}
	armed.Store(true)
	ctx := context.Background()
	go s.InTx(ctx, func(tx *storage.Store) error {
		_, err := tx.AppendEvent(ctx, c.ID, "hold", "{}")
		return err
	})
	<-held
	return s, c, 1, release
}

// TestWriterBatch_AFailedTransactionIsRolledBackAlone: transactions that
// fail after writing are undone alone, and the others — running the same
// statements before and after them, in one batch of the SQLite writer
// (the writer held at the commit before it until all are queued) — commit
// with gap-free seqs.
func TestWriterBatch_AFailedTransactionIsRolledBackAlone(t *testing.T) {
	s, c, holding, release := heldWriter(t)
	ctx := context.Background()
	boom := errors.New("boom")
	const n = 30
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.InTx(ctx, func(tx *storage.Store) error {
				if _, err := tx.AppendEvent(ctx, c.ID, "t", fmt.Sprintf(`{"i":%d}`, i)); err != nil {
					return err
				}
				if i%3 == 1 {
					return boom
				}
				_, err := tx.AppendEvent(ctx, c.ID, "t", fmt.Sprintf(`{"i":%d}`, i))
				return err
			})
		}()
	}
	time.Sleep(100 * time.Millisecond) // let them queue behind the held commit
	release()
	wg.Wait()
	failed := 0
	for i, err := range errs {
		switch {
		case i%3 == 1 && errors.Is(err, boom):
			failed++
		case i%3 != 1 && err == nil:
		default:
			t.Fatalf("transaction %d: %v", i, err)
		}
	}
	evs, err := s.EventsAfter(ctx, c.ID, 0, 1000)
	if want := holding + 2*(n-failed); err != nil || len(evs) != want {
		t.Fatalf("%d events after %d failed of %d, want %d: %v", len(evs), failed, n, want, err)
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("seq %d at %d", ev.Seq, i)
		}
	}
}

// TestWriterBatch_ACallerGoneMidStatementUndoesOnlyItsOwnWork: a caller
// whose context ends while its transaction's statement runs (a client
// that hangs up during a long write) must not take the others of its
// batch with it. SQLite answers an interrupted write inside a transaction
// by rolling the whole transaction back — every transaction of the
// writer's batch — so the writer's statements run without the callers'
// cancellation; the caller's transaction is rolled back alone when it
// returns the error.
func TestWriterBatch_ACallerGoneMidStatementUndoesOnlyItsOwnWork(t *testing.T) {
	// On SQLite the two below run as one batch after the held commit, the
	// kept one first.
	s, c, holding, release := heldWriter(t)
	ctx := context.Background()
	keptErr := make(chan error, 1)
	go func() {
		keptErr <- s.InTx(ctx, func(tx *storage.Store) error {
			_, err := tx.AppendEvent(ctx, c.ID, "kept", "{}")
			return err
		})
	}()
	time.Sleep(50 * time.Millisecond)
	goneCtx, hangUp := context.WithCancel(ctx)
	defer hangUp()
	goneErr := make(chan error, 1)
	go func() {
		goneErr <- s.InTx(goneCtx, func(tx *storage.Store) error {
			if _, err := tx.AppendEvent(goneCtx, c.ID, "gone", "{}"); err != nil {
				return err
			}
			time.AfterFunc(50*time.Millisecond, hangUp)
			// A write that runs for about a second.
			if err := storage.ExecForTest(goneCtx, tx, `UPDATE conversations SET subject = CAST((WITH RECURSIVE r(n) AS
 (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 2000000) SELECT count(*) FROM r) AS TEXT) WHERE id = ?`, c.ID); err != nil {
				return err
			}
			return goneCtx.Err()
		})
	}()
	time.Sleep(50 * time.Millisecond)
	release()
	if err := <-keptErr; err != nil {
		t.Fatalf("the transaction batched before the one whose caller went: %v", err)
	}
	if err := <-goneErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the transaction whose caller went: %v, want context.Canceled", err)
	}
	evs, err := s.EventsAfter(ctx, c.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if want := holding + 1; len(evs) != want || evs[len(evs)-1].Type != "kept" {
		t.Fatalf("events %v, want the held one (SQLite) and kept", types)
	}
	got, err := s.GetConversation(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != c.Subject {
		t.Fatalf("subject %q: the gone caller's write was kept", got.Subject)
	}
}

// TestWriterBatch_AFailedCommitLeavesTheEventCountersAsTheFileHasThem: the
// SQLite writer keeps the conversations' event counters in memory
// (eventSeqs) and writes them back before each commit. A batch whose
// commit fails must leave that copy as the file has it, so that the next
// events follow on from the file's counter: no gap, no seq taken twice.
func TestWriterBatch_AFailedCommitLeavesTheEventCountersAsTheFileHasThem(t *testing.T) {
	ctx := context.Background()
	var failCommit atomic.Bool
	refused := errors.New("commit refused by the test")
	s := openSQLiteAt(t, filepath.Join(t.TempDir(), "seqs.db"), storage.Options{BeforeCommit: func() error {
		if failCommit.Load() {
			return refused
		}
		return nil
	}})
	// c's counter is in the writer's copy before the failed batch; d's is
	// first read in it.
	_, c := seedConversation(t, s)
	_, d := seedConversation(t, s)
	if _, err := s.AppendEvent(ctx, c.ID, "before", "{}"); err != nil {
		t.Fatal(err)
	}
	failCommit.Store(true)
	err := s.InTx(ctx, func(tx *storage.Store) error {
		if _, err := tx.AppendEvents(ctx, c.ID, "lost", []string{"{}", "{}"}); err != nil {
			return err
		}
		_, err := tx.AppendEvent(ctx, d.ID, "lost", "{}")
		return err
	})
	if !errors.Is(err, refused) {
		t.Fatalf("the batch whose commit failed: %v", err)
	}
	failCommit.Store(false)
	for _, conv := range []*storage.Conversation{c, d} {
		err := s.InTx(ctx, func(tx *storage.Store) error {
			_, err := tx.AppendEvent(ctx, conv.ID, "after", "{}")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for conv, want := range map[*storage.Conversation][]string{c: {"before", "after"}, d: {"after"}} {
		evs, err := s.EventsAfter(ctx, conv.ID, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i, ev := range evs {
			if ev.Seq != int64(i+1) {
				t.Fatalf("%s: event %d (%s) has seq %d", conv.ID, i, ev.Type, ev.Seq)
			}
			got = append(got, ev.Type)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: events %v, want %v", conv.ID, got, want)
		}
		// Read on another connection than the writer's: what was
		// written back.
		stored, err := s.GetConversation(ctx, conv.ID)
		if err != nil || stored.EventSeq != int64(len(want)) {
			t.Fatalf("%s: stored counter %v (%v), want %d", conv.ID, stored, err, len(want))
		}
	}
}

// TestWriterBatch_EventsAppendedByAnotherProcessAreFollowedOn: the
// writer's copy of the event counters (eventSeqs) must not outlive a
// write by another connection to the same file — `convoice directory
// sync` run beside the server hangs up the calls of people it
// deactivates, appending to their conversations' logs. The next event the
// server appends follows on from the file's counter.
func TestWriterBatch_EventsAppendedByAnotherProcessAreFollowedOn(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "shared.db")
	server := openSQLiteAt(t, path, storage.Options{})
	_, c := seedConversation(t, server)
	if _, err := server.AppendEvent(ctx, c.ID, "server", "{}"); err != nil {
		t.Fatal(err)
	}
	cli, err := storage.Open(ctx, path, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AppendEvents(ctx, c.ID, "cli", []string{"{}", "{}"}); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	ev, err := server.AppendEvent(ctx, c.ID, "server", "{}")
	if err != nil {
		t.Fatalf("the server's event after the other process's: %v", err)
	}
	if ev.Seq != 4 {
		t.Fatalf("the server's event after the other process's two has seq %d, want 4", ev.Seq)
	}
	if seq, err := server.LastEventSeq(ctx, c.ID); err != nil || seq != 4 {
		t.Fatalf("stored counter %d (%v), want 4", seq, err)
	}
}

// TestWriterBatch_ABigTransactionWritesNoTemporaryFile: each transaction
// of the SQLite writer runs in a savepoint, into whose sub-journal SQLite
// copies every page the transaction changes that was there before it.
// That journal must not spill into a temporary file (SQLite's default past
// 64 KiB), which costs a write call per page for the rest of the batch.
// SQLite makes its temporary files in SQLITE_TMPDIR and removes them at
// once, so the directory's modification time is what shows one was made.
func TestWriterBatch_ABigTransactionWritesNoTemporaryFile(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("SQLITE_TMPDIR", tmp)
	// SQLite's writer, also when the suite runs on PostgreSQL.
	s := openSQLiteAt(t, filepath.Join(t.TempDir(), "t.db"), storage.Options{})
	_, c := seedConversation(t, s)
	ctx := context.Background()
	// About 100 pages of events, committed.
	big := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 2000))
	datas := make([]string, 200)
	for i := range datas {
		datas[i] = big
	}
	if _, err := s.AppendEvents(ctx, c.ID, "t", datas); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(tmp)
	if err != nil {
		t.Fatal(err)
	}
	// One transaction that changes every one of those pages again.
	err = s.InTx(ctx, func(tx *storage.Store) error {
		return storage.ExecForTest(ctx, tx, `UPDATE events SET type = 'u' WHERE conversation_id = ?`, c.ID)
	})
	if err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("the transaction made a temporary file in %s (modified %v, was %v)", tmp, after.ModTime(), before.ModTime())
	}
}
