package storage

// The write path: one group-committing SQLite writer (batches what is
// waiting, interactive transactions before call progress) and the syncer
// that fdatasyncs the WAL behind it, so callers hear of a commit only once
// it is durable. PostgreSQL transactions do not pass through here.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
)

// lowPriorityKey marks a context whose transactions may wait behind
// interactive ones.
type lowPriorityKey struct{}

// LowPriority marks ctx's write transactions as background work (the
// PBX's call progress): the SQLite writer takes waiting interactive
// transactions (a request dialing out) first and bounds how long a batch
// of background ones may keep it, so that a burst of call events does not
// sit between a click and its phone ringing. Background transactions still
// run in every batch that has room, in arrival order.
func LowPriority(ctx context.Context) context.Context {
	return context.WithValue(ctx, lowPriorityKey{}, true)
}

func isLowPriority(ctx context.Context) bool {
	v, _ := ctx.Value(lowPriorityKey{}).(bool)
	return v
}

// writeReq is one InTx call waiting for the SQLite writer.
type writeReq struct {
	ctx    context.Context
	fn     func(tx *Store) error
	events []Event
	err    error
	low    bool // LowPriority: from lowWrites
	// then is InTxAsync's callback.
	then func(error)
	// committed, for InTxEarly, is closed once fn has run and its work is
	// part of the batch (or failed: commitErr is set first; the writer or
	// the syncer may still set err when the batch's commit or fsync fails).
	committed chan struct{}
	commitErr error
	signalled bool
	done      chan error
	stop      <-chan struct{}
}

// signalCommitted tells an InTxEarly caller (once) that fn has run: with
// r.err when it failed.
func (r *writeReq) signalCommitted() {
	if r.committed == nil || r.signalled {
		return
	}
	r.signalled = true
	r.commitErr = r.err
	close(r.committed)
	// The caller was made runnable on this goroutine's P, where it would
	// wait until the writer blocks (at the end of the batch: milliseconds
	// under load). It places a call: let it run now.
	runtime.Gosched()
}

// wait returns the request's final answer (it stays readable).
func (r *writeReq) wait() error {
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-r.stop:
		// Closing: the writer and the syncer finish what they hold.
		select {
		case err := <-r.done:
			r.done <- err
			return err
		case <-time.After(5 * time.Second):
			return ErrClosed
		}
	}
}

const (
	// maxBatch bounds how many transactions share one commit.
	maxBatch = 64
	// batchBudget is how long a batch keeps taking transactions; a dial
	// that arrives meanwhile joins the batch (or the next), so it waits at
	// most about this long for the writer.
	batchBudget = time.Millisecond
)

// runWriter is the SQLite writer: it runs waiting transactions in batches
// until stop is closed, then lets the syncer finish.
//
// It keeps one connection for itself. SQLite drops a connection's page
// cache whenever another connection has written since its last
// transaction; batches taking whichever pooled connection was free thus
// read every b-tree page again from the OS (measured: an insert into the
// audit log took 250 µs instead of 15). With one connection doing all the
// writing its cache stays warm.
func (s *Store) runWriter(stop <-chan struct{}) {
	defer close(s.syncQ)
	for {
		err := s.db.Connection(func(conn *gorm.DB) error {
			wc := newWriterConn(conn)
			defer wc.close()
			// Each transaction of a batch runs in a savepoint, and SQLite
			// copies every page the transaction changes that was there
			// before it into the savepoint's sub-journal first. Past
			// 64 KiB that sub-journal spills into a temporary file: in
			// BenchmarkDialOut (strace, 10 s) 52 such files took 56,000
			// pwrite calls, 3.5 times the WAL's own. In memory it costs
			// a few MiB at most, for one batch.
			if err := wc.exec(context.Background(), `PRAGMA temp_store = MEMORY`); err != nil {
				return err
			}
			return s.writeLoop(wc, stop)
		})
		if err == nil {
			return // stopped
		}
		s.log.Warn("SQLite writer connection failed; taking another", "err", err)
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeLoop runs batches on conn until stop (nil) or until the connection
// fails (its error).
func (s *Store) writeLoop(wc *writerConn, stop <-chan struct{}) error {
	for {
		var first *writeReq
		select {
		case first = <-s.writes: // a waiting dial goes first
		default:
			select {
			case first = <-s.writes:
			case first = <-s.lowWrites:
			case <-stop:
				return nil
			}
		}
		if err := s.runBatch(wc, first); errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) {
			return err
		}
	}
}

// next returns the next request for batch, which started at start, or nil
// when the batch should commit. A batch takes every request that was
// already waiting when it started (they would wait for its commit anyway;
// one commit for all of them is what keeps the writer ahead under load),
// then whatever arrives during batchBudget, up to maxBatch. While both
// queues have requests it alternates between them, a dial first: call
// progress cannot be starved by a stream of dials (it would arrive late on
// every screen), and a dial that arrives at a quiet moment waits behind at
// most the rest of one short batch.
func (s *Store) next(batch []*writeReq, waiting int, start time.Time) *writeReq {
	if len(batch) >= maxBatch || (len(batch) > waiting && time.Since(start) >= batchBudget) {
		return nil
	}
	if !batch[len(batch)-1].low {
		select {
		case r := <-s.lowWrites:
			return r
		default:
		}
	}
	select {
	case r := <-s.writes:
		return r
	default:
	}
	select {
	case r := <-s.lowWrites:
		return r
	default:
		return nil
	}
}

// runBatch runs first and whatever next gives in one transaction on wc
// and hands the batch to the syncer; it returns the transaction's error.
func (s *Store) runBatch(wc *writerConn, first *writeReq) error {
	start := time.Now()
	batch := []*writeReq{first}
	waiting := len(s.writes) + len(s.lowWrites)
	// The batch's number is taken before anything is written, so that a
	// reader that sees its rows also sees a number at least this one
	// (awaitDurable).
	seq := s.dur.committing.Add(1)
	err := wc.transaction(func() error {
		if s.writeFault != nil {
			if err := s.writeFault(); err != nil {
				return err
			}
		}
		if err := wc.seqs.checkFile(context.Background(), wc); err != nil {
			return err
		}
		for r := first; r != nil; r = s.next(batch, waiting, start) {
			if r != first {
				batch = append(batch, r)
			}
			if r.ctx.Err() != nil {
				r.err = r.ctx.Err()
				r.signalCommitted()
				continue
			}
			// Statements run without the caller's cancellation: SQLite
			// answers an interrupted write by rolling back the whole
			// transaction, which would take the batch's others with it.
			ctx := context.WithoutCancel(r.ctx)
			if err := wc.exec(ctx, `SAVEPOINT w`); err != nil {
				return err
			}
			tx := *s
			tx.db = wc.gorm // q(ctx) adds the context where gorm is used
			tx.pending = &r.events
			tx.req = r
			tx.wconn = wc
			wc.seqs.beginRequest()
			r.err = runSafely(r.fn, &tx)
			if r.err != nil {
				r.events = nil
				if err := wc.exec(ctx, `ROLLBACK TO w`); err != nil {
					return err
				}
				wc.seqs.rollbackRequest()
			}
			if err := wc.exec(ctx, `RELEASE w`); err != nil {
				return err
			}
			// fn's work is now part of the batch: an InTxEarly caller may
			// act on it (see there) without waiting for the rest of the
			// batch and its commit.
			r.signalCommitted()
		}
		if err := wc.seqs.writeBack(context.Background(), wc); err != nil {
			return err
		}
		// The user streams' index and the webhook outbox of every
		// transaction of the batch, in a few statements; should they fail
		// the batch is rolled back with them, as a failed commit would.
		lists := make([]*[]Event, 0, len(batch))
		for _, r := range batch {
			if r.err == nil {
				lists = append(lists, &r.events)
			}
		}
		tx := *s
		tx.db = wc.gorm
		tx.pending = new([]Event)
		tx.wconn = wc
		if err := tx.fanOut(context.Background(), lists...); err != nil {
			return err
		}
		if s.beforeCommit != nil {
			return s.beforeCommit()
		}
		return nil
	})
	if err != nil {
		wc.seqs.forget()
	} else {
		wc.seqs.committed()
	}
	if s.commitTime != nil {
		s.commitTime(time.Since(start))
	}
	for _, r := range batch {
		if r.err == nil && err != nil {
			r.err = err
			r.events = nil
		}
		r.err = s.noteWrite(r.err)
		r.signalCommitted() // the skipped, and those of a failed batch
	}
	// To the syncer even when the commit failed: it answers in order and
	// moves the durable mark past this batch's number.
	s.syncQ <- syncTicket{seq: seq, batch: batch, committed: err == nil}
	return err
}

// writerConn is the SQLite writer's connection (see runWriter) with the
// statements prepared on it. Its transactions are BEGIN IMMEDIATE and
// COMMIT sent as statements, not database/sql's *sql.Tx: a statement run
// in a *sql.Tx is bound to it afresh (an allocation and two locked map
// updates), and each query in one starts a goroutine to watch the
// transaction's context and a context to stop it; on the writer's own
// *sql.Conn a statement is prepared once for the connection's life and a
// query with an uncancellable context starts nothing. Nothing else uses
// the connection, so database/sql not knowing of the transaction loses
// nothing.
type writerConn struct {
	conn  *sql.Conn
	gorm  *gorm.DB // on conn
	stmts map[string]*sql.Stmt
	seqs  eventSeqs
}

func newWriterConn(conn *gorm.DB) *writerConn {
	c, _ := conn.Statement.ConnPool.(*sql.Conn)
	// A new-statement session: every chain on it starts from a fresh
	// statement on c, as the handle of gorm's Transaction did. Connection's
	// own handle shares one statement among all its chains.
	return &writerConn{conn: c, gorm: conn.Session(&gorm.Session{NewDB: true}), stmts: map[string]*sql.Stmt{}, seqs: newEventSeqs()}
}

// stmt is query prepared on the writer's connection (once).
func (wc *writerConn) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := wc.stmts[query]; ok {
		return st, nil
	}
	st, err := wc.conn.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", query, err)
	}
	wc.stmts[query] = st
	return st, nil
}

// exec runs one of the writer's own statements (transactions, savepoints).
func (wc *writerConn) exec(ctx context.Context, query string) error {
	st, err := wc.stmt(ctx, query)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx)
	return err
}

// transaction runs fn between BEGIN IMMEDIATE and COMMIT, and rolls back
// when fn fails or panics, or the COMMIT fails (SQLite may leave the
// transaction open then; a ROLLBACK it did not need does no harm).
func (wc *writerConn) transaction(fn func() error) error {
	ctx := context.Background()
	if err := wc.exec(ctx, `BEGIN IMMEDIATE`); err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			wc.exec(ctx, `ROLLBACK`)
		}
	}()
	if err := fn(); err != nil {
		return err
	}
	if err := wc.exec(ctx, `COMMIT`); err != nil {
		return err
	}
	done = true
	return nil
}

// close closes the prepared statements (the connection goes back to the
// pool after).
func (wc *writerConn) close() {
	for _, st := range wc.stmts {
		st.Close()
	}
}

// syncTicket is a batch handed from the writer to the syncer.
type syncTicket struct {
	seq       uint64
	batch     []*writeReq
	committed bool
}

// syncer makes committed batches durable and then answers them: it takes
// every batch committed since its last fsync, fsyncs the WAL once for all
// of them (group commit), and answers and publishes them in commit order.
// The writer runs on meanwhile; syncQ's capacity bounds how far it may run
// ahead of the disk.
func (s *Store) syncer() {
	defer close(s.synced)
	for t := range s.syncQ {
		tickets := []syncTicket{t}
	more:
		for {
			select {
			case t, ok := <-s.syncQ:
				if !ok {
					break more
				}
				tickets = append(tickets, t)
			default:
				break more
			}
		}
		var err error
		for _, t := range tickets {
			if t.committed {
				err = s.sync()
				break
			}
		}
		if err != nil {
			err = s.dur.fail(fmt.Errorf("storage: writing to disk failed, the last changes may be lost; restart convoice once the disk is fixed: %w", err))
			s.log.Error("fsync of the SQLite WAL failed: refusing further writes", "err", err)
		}
		s.dur.advance(tickets[len(tickets)-1].seq)
		for _, t := range tickets {
			for _, r := range t.batch {
				if r.err == nil && err != nil {
					r.err = err
				}
				if r.err == nil && len(r.events) > 0 && s.afterCommit != nil {
					s.afterCommit(r.events)
				}
				r.done <- r.err
				if r.then != nil {
					r.then(r.err)
				}
			}
		}
	}
}

// syncWAL fsyncs the WAL file. It is opened by name each time: a WAL that
// SQLite removed (its last connection closed after a full checkpoint) has
// nothing left to sync.
func (s *Store) syncWAL() error {
	if s.walPath == "" {
		return nil
	}
	f, err := os.Open(s.walPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return datasync(f)
}

// durability tracks how far the syncer got.
type durability struct {
	committing atomic.Uint64 // the number of the newest batch begun

	mu      sync.Mutex
	durable uint64        // every batch up to this number is on disk
	changed chan struct{} // closed when durable moves or err is set
	err     error
}

func newDurability() *durability { return &durability{changed: make(chan struct{})} }

func (d *durability) advance(seq uint64) {
	d.mu.Lock()
	if seq > d.durable {
		d.durable = seq
	}
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// fail records the first fsync error and returns it.
func (d *durability) fail(err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == nil {
		d.err = err
	}
	return d.err
}

func (d *durability) failed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// awaitDurable waits until every batch begun so far is on disk. A reader
// calls it after a query whose rows it is about to announce (the event
// stream's replay), so that nothing reaches a client before it is durable.
func (s *Store) awaitDurable(ctx context.Context) error {
	if s.writes == nil || s.pending != nil { // inside a transaction nothing is announced
		return nil
	}
	target := s.dur.committing.Load()
	for {
		s.dur.mu.Lock()
		if s.dur.err != nil {
			err := s.dur.err
			s.dur.mu.Unlock()
			return err
		}
		if s.dur.durable >= target {
			s.dur.mu.Unlock()
			return nil
		}
		ch := s.dur.changed
		s.dur.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopW:
			return ErrClosed
		}
	}
}

// runSafely turns a panic in fn into an error, so one bad request cannot
// take the writer (and every later write) down.
func runSafely(fn func(tx *Store) error, tx *Store) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in transaction: %v", p)
		}
	}()
	return fn(tx)
}
