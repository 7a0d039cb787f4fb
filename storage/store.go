// Package storage keeps convoice's state with gorm: SQLite (embedded default,
// one process) or PostgreSQL (scale-out). It knows nothing of HTTP or PBXs;
// the controller drives it through Store and its transactions.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/mattn/go-sqlite3"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Errors the controller maps onto HTTP answers.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrClosed   = errors.New("storage closed")
	// ErrLiveLeg: the person has a live call in the conference already
	// (the unique indexes of live legs refused a leg). It is an ErrConflict.
	ErrLiveLeg = fmt.Errorf("%w: a live call exists in the conference", ErrConflict)
)

// Store is the database. Its methods run on the root connection; InTx gives
// a Store whose methods run in one transaction.
type Store struct {
	db      *gorm.DB
	dialect string // "sqlite" or "postgres"
	// pgCfg is the PostgreSQL connection configuration (pgconn.go), parsed
	// once: the pool's, and a copy for each dedicated connection (leases,
	// the listener); nil on SQLite.
	pgCfg *pgx.ConnConfig
	// leaseRegain: how long a lease holder whose session failed tries to
	// take it again before it gives it up (Options.LeaseRegain).
	leaseRegain time.Duration
	log         *slog.Logger
	// full is set while writes fail for lack of room (full.go).
	full *fullness
	// writeFault is Options.WriteFault.
	writeFault func() error

	// writes feeds the SQLite writer goroutine (nil on PostgreSQL, where
	// transactions run concurrently). With one writer, concurrent requests
	// never see "database is locked", and readers in WAL mode are not
	// blocked by it.
	writes chan *writeReq
	// lowWrites are background transactions (LowPriority).
	lowWrites chan *writeReq
	// syncQ carries committed batches to the syncer; dur is how far it got;
	// walPath is the WAL it fsyncs ("" for an in-memory database).
	syncQ   chan syncTicket
	dur     *durability
	walPath string
	// synced is closed when the syncer has answered everything and the
	// writer has stopped (Close waits for it).
	synced chan struct{}
	// sync makes the committed batches durable: syncWAL (tests may
	// replace it to hold or fail the disk).
	sync  func() error
	stopW chan struct{}
	// closeOnce guards stopW (a pointer: transaction stores copy Store).
	closeOnce *sync.Once

	// afterCommit is called with the events appended by a transaction once
	// it has committed (the event hub publishes them). Durable before
	// announced.
	afterCommit func([]Event)
	// audience names the users each event concerns (fanout.go).
	audience EventAudience

	// pending collects the events appended in this transaction (nil on the
	// root store, where AppendEvent commits at once).
	pending *[]Event
	// deferred holds the events recorded in this PostgreSQL transaction
	// and not written yet (eventspg.go); nil elsewhere.
	deferred *[]Event

	// stmts are the prepared statements of the hot path (raw.go).
	stmts *stmtCache
	// wconn is the SQLite writer's connection, in the writer's
	// transactions (writer.go); nil elsewhere.
	wconn *writerConn

	// notify tells this replica's event notifications from the others'
	// (notify.go; PostgreSQL).
	notify *notifyState

	// pipe is the PostgreSQL transaction this store runs in (pgpipe.go).
	pipe *pgPipe
	// convsLocked: this PostgreSQL transaction locked every conversation
	// it touches when it began (a batch of call progress, progress.go), so
	// its recorded events may span conversations (eventspg.go).
	convsLocked bool
	// prefetch holds the legs a batch of call progress locked and read
	// at its start (progress.go); nil elsewhere.
	prefetch *legPrefetch
	// lanes apply the PBX's call progress in batches on PostgreSQL
	// (progress.go); nil on SQLite.
	lanes *progressLanes

	// req is the writer's request this transaction store runs (SQLite).
	req *writeReq

	// beforeCommit is Options.BeforeCommit (tests).
	beforeCommit func() error

	// svc is the last reading of the service-wide dial counts
	// (servicecounts.go).
	svc *serviceCounts

	// commitTime, when set, is told how long each write transaction took
	// from its start to its commit (on SQLite: each batch of the writer).
	commitTime func(time.Duration)
}

// OnCommitTime sets the function told each write transaction's time, from
// its start to its commit (on SQLite one batch of the writer, before the
// fsync); for the metrics. Set it before use.
func (s *Store) OnCommitTime(f func(time.Duration)) { s.commitTime = f }

// Options for Open.
type Options struct {
	Logger *slog.Logger
	// LeaseRegain is how long the holder of a lease whose database
	// session failed keeps acting as its holder while it tries to take it
	// again (default DefaultLeaseRegain; see lease.go). Longer rides out a
	// longer database outage, such as a failover, without handing a PBX
	// node over; the server then waits longer before it frees the lock of
	// a holder that vanished (its keepalives follow: LeaseRegain+6 s).
	LeaseRegain time.Duration
	// BusyTimeout for SQLite (default 10 s).
	BusyTimeout time.Duration
	// SyncWAL, when set, replaces the fsync of the SQLite WAL (given its
	// path): tests use it to make the disk fail. Leave it nil.
	SyncWAL func(walPath string) error
	// WriteFault, when set, is asked before each SQLite write batch; an
	// error it returns fails the batch as the disk would (tests use it to
	// fill the disk where they cannot mount a small one). Leave it nil.
	WriteFault func() error
	// BeforeCommit, when set, is called by the SQLite writer after a
	// batch's transactions have run and before it commits: tests block in
	// it to widen the window in which an InTxEarly caller acts on work
	// that other connections cannot see yet, or fail the batch with the
	// error it returns, as a failed COMMIT would. Leave it nil.
	BeforeCommit func() error
}

// Open opens (and creates) the database named by dsn: a postgres:// or
// postgresql:// URL selects PostgreSQL, anything else is a SQLite file path
// (or "file:…" URI). Migrations run before Open returns.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	gcfg := &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
		TranslateError:         true,
	}
	s := &Store{log: lg, stopW: make(chan struct{}), closeOnce: &sync.Once{}, full: &fullness{}, svc: &serviceCounts{}, beforeCommit: opts.BeforeCommit,
		leaseRegain: opts.LeaseRegain}
	if s.leaseRegain <= 0 {
		s.leaseRegain = DefaultLeaseRegain
	}
	var err error
	if IsPostgres(dsn) {
		s.dialect = "postgres"
		pool := 0
		if dsn, pool, err = pgPoolSize(dsn); err != nil {
			return nil, err
		}
		s.notify = &notifyState{}
		if s.pgCfg, err = pgConfig(dsn); err != nil {
			return nil, err
		}
		s.db, err = gorm.Open(postgres.New(postgres.Config{Conn: stdlib.OpenDB(*s.pgCfg.Copy())}), gcfg)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		sqlDB, _ := s.db.DB()
		sqlDB.SetMaxOpenConns(pool)
		sqlDB.SetMaxIdleConns(pool)
	} else {
		s.dialect = "sqlite"
		setSQLiteCHeap(lg)
		bt := opts.BusyTimeout
		if bt <= 0 {
			bt = 10 * time.Second
		}
		s.db, err = gorm.Open(sqlite.New(sqlite.Config{DriverName: sqliteDriver, DSN: sqliteDSN(dsn, bt)}), gcfg)
		if err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", dsn, err)
		}
		sqlDB, _ := s.db.DB()
		// WAL: many readers alongside the one writer.
		sqlDB.SetMaxOpenConns(8)
		sqlDB.SetMaxIdleConns(8)
		sqlDB.SetConnMaxLifetime(0)
	}
	sqlDB, err := s.db.DB()
	if err != nil {
		return nil, err
	}
	s.stmts = &stmtCache{db: sqlDB, stmts: map[string]*sql.Stmt{}}
	if s.dialect == "sqlite" {
		go s.checkpointer(s.stopW)
		s.walPath = sqliteWALPath(dsn)
		s.sync = s.syncWAL
		s.writeFault = opts.WriteFault
		if opts.SyncWAL != nil {
			s.sync = func() error { return opts.SyncWAL(s.walPath) }
		}
		s.writes = make(chan *writeReq, 1024)
		s.lowWrites = make(chan *writeReq, 1024)
		s.syncQ = make(chan syncTicket, 256)
		s.dur = newDurability()
		s.synced = make(chan struct{})
		go s.syncer()
		go s.runWriter(s.stopW)
	}
	if s.dialect == "postgres" {
		s.startProgressLanes()
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// defaultPGPool is how many pooled connections a replica opens to
// PostgreSQL unless its DSN says otherwise (pool_max_conns).
const defaultPGPool = 20

// pgPoolSize takes pool_max_conns (the name pgx's own pool gives it) out
// of a PostgreSQL DSN: the size of the replica's pool, defaultPGPool when
// absent. Each replica also holds one connection for NOTIFYs and one per
// PBX node lease it holds, so N replicas need N × (pool + 1 + their
// leases) of the server's max_connections (100 by default): the
// default pool suits up to four replicas. The parameter must not reach
// the server, which would refuse it as an unknown setting.
func pgPoolSize(dsn string) (string, int, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		// Not err's text: it quotes the DSN, password and all.
		return "", 0, errors.New("CONVOICE_DB: the PostgreSQL DSN is not a valid URL")
	}
	q := u.Query()
	if !q.Has("pool_max_conns") {
		return dsn, defaultPGPool, nil
	}
	n, err := strconv.Atoi(q.Get("pool_max_conns"))
	if err != nil || n < 1 || n > 1000 {
		return "", 0, fmt.Errorf("CONVOICE_DB: pool_max_conns=%q: want a whole number from 1 to 1000", q.Get("pool_max_conns"))
	}
	q.Del("pool_max_conns")
	u.RawQuery = q.Encode()
	return u.String(), n, nil
}

// IsPostgres reports whether dsn selects PostgreSQL.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// sqliteDSN adds the pragmas every connection needs: WAL, foreign keys, a
// busy timeout, and BEGIN IMMEDIATE for transactions so that a transaction
// that will write takes the write lock up front instead of failing to
// upgrade a read lock halfway ("database is locked").
func sqliteDSN(path string, busy time.Duration) string {
	base, rawq, _ := strings.Cut(path, "?")
	q, _ := url.ParseQuery(rawq)
	set := func(k, v string) {
		if q.Get(k) == "" {
			q.Set(k, v)
		}
	}
	set("_journal_mode", "WAL")
	set("_foreign_keys", "on")
	set("_busy_timeout", fmt.Sprint(busy.Milliseconds()))
	set("_txlock", "immediate")
	// NORMAL: a commit does not wait for the disk; the syncer fsyncs the
	// WAL after each group of commits and only then answers and publishes
	// them, so what anyone is told is durable even across a power cut. An
	// in-memory database has nothing to sync.
	set("_synchronous", "NORMAL")
	if !strings.HasPrefix(base, "file:") {
		base = "file:" + base
	}
	return base + "?" + q.Encode()
}

// Dialect is "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.dialect }

// Close closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.stopW) })
	if s.synced != nil {
		// The writer finishes its batch and lets go of its connection,
		// the syncer answers what it holds: then the files are final once
		// the pool is closed (SQLite checkpoints and removes the WAL when
		// its last connection closes).
		select {
		case <-s.synced:
		case <-time.After(10 * time.Second):
			s.log.Warn("closing the store: the writer did not stop within 10 s")
		}
	}
	if s.lanes != nil {
		// The call progress still queued is applied before the pool
		// closes.
		select {
		case <-s.lanes.done:
		case <-time.After(10 * time.Second):
			s.log.Warn("closing the store: the call progress was not applied within 10 s")
		}
	}
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Ping checks the database answers (readiness): a store whose disk
// refused an fsync is not ready.
func (s *Store) Ping(ctx context.Context) error {
	if s.dur != nil {
		if err := s.dur.failed(); err != nil {
			return err
		}
	}
	if err := s.fullErr(); err != nil {
		return err
	}
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// OnCommit sets the function told about committed events.
func (s *Store) OnCommit(f func([]Event)) { s.afterCommit = f }

// DB exposes the gorm handle for tests and for packages that need raw
// queries (LISTEN/NOTIFY). Prefer the methods.
func (s *Store) DB() *gorm.DB { return s.db }

// InTx runs fn in one write transaction and returns once it is durable.
// Events appended inside are handed to the OnCommit function after that,
// in commit order.
//
// On SQLite the transactions of concurrent callers are grouped: one writer
// goroutine runs each waiting request in a SAVEPOINT of one transaction and
// commits once (group commit). SQLite has a single writer anyway; queueing
// requests in a mutex instead meant one lock hand-off, BEGIN and COMMIT per
// request, and a request that lost its core while holding the lock stalled
// all the others. A request whose fn fails is rolled back to its savepoint
// alone. fn must not call InTx on the root store (it would wait for the
// writer that is running it).
//
// Durability is pipelined (see syncer): the writer commits without waiting
// for the disk and goes on with the next batch while another goroutine
// fsyncs the WAL; a transaction's caller is answered, and its events
// published, only after the fsync that covers it. A slow or stalled fsync
// (ext4 journal commits of 40–150 ms were measured on a busy disk) then
// delays the answers of one batch instead of stopping every write behind
// it.
func (s *Store) InTx(ctx context.Context, fn func(tx *Store) error) error {
	c, err := s.inTx(ctx, fn, false)
	if err != nil {
		return err
	}
	return c.Durable()
}

// Commit is a committed transaction whose durability may still be pending.
type Commit struct {
	r *writeReq // nil: durable already (PostgreSQL, nested, in-memory)
}

// Durable waits until the transaction is on disk: nil, or the error that
// ended it (an fsync that failed: the store then refuses further writes).
func (c Commit) Durable() error {
	if c.r == nil {
		return nil
	}
	return c.r.wait()
}

// InTxEarly is InTx for a caller that acts on its transaction before it is
// committed and on disk: on SQLite it returns as soon as fn has run (or has
// called tx.Proceed) and its work is part of the writer's current batch;
// Commit.Durable says when the batch is committed and fsynced, or that it
// failed. The dial path uses it to place the call meanwhile, and waits for
// Durable before telling anyone the outcome; when Durable fails it hangs
// the call up. Should the process die in between, the call's record is
// lost with the last commits and the PBX's orphan call is hung up by the
// resync after restart. Other connections see the work once it is
// committed; the writer's later transactions see it at once.
func (s *Store) InTxEarly(ctx context.Context, fn func(tx *Store) error) (Commit, error) {
	return s.inTx(ctx, fn, true)
}

// InTxAsync queues fn as a write transaction and returns without waiting
// for it; then, when not nil, is called with its outcome once it is durable
// (or failed), on the goroutine that answers transactions: it must not
// block (start a goroutine for PBX work). Transactions of one priority
// queued one after the other by one goroutine run in that order. The PBX's
// call progress uses it: a channel's events are applied in order without
// the channel's worker waiting for each commit and fsync. When the queue is full it waits
// (back-pressure). On PostgreSQL it runs fn at once, like InTx.
func (s *Store) InTxAsync(ctx context.Context, fn func(tx *Store) error, then func(error)) {
	if s.writes == nil || s.pending != nil {
		err := s.InTx(ctx, fn)
		if then != nil {
			then(err)
		}
		return
	}
	r := s.newWriteReq(ctx, fn)
	r.then = then
	if err := s.enqueue(ctx, r); err != nil && then != nil {
		then(err)
	}
}

// newWriteReq is a request for the SQLite writer, of ctx's priority.
func (s *Store) newWriteReq(ctx context.Context, fn func(tx *Store) error) *writeReq {
	return &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1), stop: s.stopW, low: isLowPriority(ctx)}
}

// enqueue hands r to the writer, on the queue of its priority, waiting for
// room; it refuses when the disk has failed or the store is closing.
func (s *Store) enqueue(ctx context.Context, r *writeReq) error {
	if err := s.dur.failed(); err != nil {
		return err
	}
	q := s.writes
	if r.low {
		q = s.lowWrites
	}
	select {
	case q <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopW:
		return ErrClosed
	}
}

func (s *Store) inTx(ctx context.Context, fn func(tx *Store) error, early bool) (Commit, error) {
	if s.pending != nil { // already in a transaction: join it
		return Commit{}, fn(s)
	}
	if s.writes != nil {
		r := s.newWriteReq(ctx, fn)
		if early {
			r.committed = make(chan struct{})
		}
		if err := s.enqueue(ctx, r); err != nil {
			return Commit{}, err
		}
		if !early {
			return Commit{r: r}, nil
		}
		select {
		case <-r.committed:
			if r.commitErr != nil {
				return Commit{}, r.commitErr
			}
			return Commit{r: r}, nil
		case <-s.stopW:
			return Commit{r: r}, r.wait()
		}
	}
	var events []Event
	start := time.Now()
	err := s.inTxPG(ctx, fn, &events)
	if s.commitTime != nil {
		s.commitTime(time.Since(start))
	}
	if err := s.noteWrite(err); err != nil {
		return Commit{}, err
	}
	if len(events) > 0 && s.afterCommit != nil {
		s.afterCommit(events)
	}
	return Commit{}, nil
}

// inTxPG runs fn in a PostgreSQL transaction, pipelined (pgpipe.go): its
// events and their fan-out go out with the COMMIT.
func (s *Store) inTxPG(ctx context.Context, fn func(tx *Store) error, events *[]Event) error {
	return s.pgTx(ctx, events, false, fn)
}

// pgTx runs body in a PostgreSQL transaction (convsLocked: body locks
// every conversation it touches first, see Store.convsLocked) and
// commits.
func (s *Store) pgTx(ctx context.Context, events *[]Event, convsLocked bool, body func(tx *Store) error) error {
	p, err := s.newPGPipe(ctx)
	if err != nil {
		return s.translate(err)
	}
	defer p.release(ctx)
	tx := *s
	gtx := s.db.WithContext(ctx).Session(&gorm.Session{NewDB: true})
	gtx.Statement.ConnPool = p.conn
	tx.db = gtx
	tx.pipe = p
	tx.pending = events
	tx.convsLocked = convsLocked
	var recorded []Event
	tx.deferred = &recorded
	if err := body(&tx); err != nil {
		return err
	}
	last, read := tx.finishPG()
	if last == nil {
		return p.commit(ctx, nil, nil)
	}
	// Its NOTIFY is ours: this process publishes the events after COMMIT.
	s.notify.committing(p.pc.PgConn().PID())
	err = p.commit(ctx, last, read)
	if err != nil && p.commitSent && p.pc.IsClosed() {
		s.notify.unsure()
	}
	return err
}

// Proceed, called inside an InTxEarly transaction, lets its caller go on
// before fn has returned: fn has checked what it must and written what the
// caller acts on, and what it does after Proceed only records (events,
// audit). Should the rest of fn fail, the transaction is rolled back and
// the caller's Commit.Durable reports it. Elsewhere it does nothing.
func (s *Store) Proceed() {
	if s.req != nil {
		s.req.signalCommitted()
	}
}

// q is gorm on this store's connection: in the SQLite writer without the
// caller's cancellation (stmtCtx); in a pipelined PostgreSQL transaction
// after what the pipe holds has been sent.
func (s *Store) q(ctx context.Context) *gorm.DB {
	sctx, err := s.stmtCtx(ctx)
	if err != nil {
		db := s.db.WithContext(ctx)
		db.AddError(err)
		return db
	}
	db := s.db.WithContext(sctx)
	if s.pipe != nil {
		s.pipe.sent++
		if err := s.pipe.sync(ctx); err != nil {
			db.AddError(err)
		}
	}
	return db
}

// notFound turns gorm's record-not-found into ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}

// sqliteDriver is mattn/go-sqlite3 with automatic WAL checkpoints turned
// off on every connection: SQLite would otherwise run the checkpoint (copy
// the WAL into the database file and fsync it) inside the commit of
// whichever transaction crosses 1,000 pages, stalling that commit and every
// request queued behind the single writer (measured: 150 ms stalls).
// checkpointer does it in the background instead.
const sqliteDriver = "sqlite3_convoice"

func init() {
	sql.Register(sqliteDriver, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		_, err := c.Exec("PRAGMA wal_autocheckpoint = 0", nil)
		return err
	}})
}

// checkpointInterval is how often the WAL is copied back in the background.
const checkpointInterval = time.Second

// checkpointer runs PASSIVE checkpoints, which never wait for or block the
// writer or readers, until stop is closed.
func (s *Store) checkpointer(stop <-chan struct{}) {
	sqlDB, err := s.db.DB()
	if err != nil {
		return
	}
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	var lastCheckpointError time.Time
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			// A checkpoint that fails for lack of room leaves the WAL to
			// grow: that is an operator's problem, said at ERROR (once a
			// minute at most); being busy is routine.
			if _, err := sqlDB.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
				if isFull(err) && time.Since(lastCheckpointError) > time.Minute {
					lastCheckpointError = time.Now()
					s.log.Error("SQLite checkpoint failed: the disk is full", "err", err)
				} else {
					s.log.Debug("wal checkpoint", "err", err)
				}
			}
		}
	}
}

// sqliteWALPath is the WAL file of a SQLite DSN, or "" for an in-memory
// database.
func sqliteWALPath(dsn string) string {
	base, rawq, _ := strings.Cut(dsn, "?")
	q, _ := url.ParseQuery(rawq)
	base = strings.TrimPrefix(base, "file:")
	if base == "" || base == ":memory:" || q.Get("mode") == "memory" {
		return ""
	}
	return base + "-wal"
}
