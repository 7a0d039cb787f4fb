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
	"strings"
	"sync"
	"time"

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
)

// Store is the database. Its methods run on the root connection; InTx gives
// a Store whose methods run in one transaction.
type Store struct {
	db      *gorm.DB
	dialect string // "sqlite" or "postgres"
	// dsn is the PostgreSQL DSN, for the dedicated connections of leases
	// (lease.go); empty on SQLite.
	dsn string
	log *slog.Logger

	// writes feeds the SQLite writer goroutine (nil on PostgreSQL, where
	// transactions run concurrently). With one writer, concurrent requests
	// never see "database is locked", and readers in WAL mode are not
	// blocked by it.
	writes chan *writeReq
	stopW  chan struct{}
	// closeOnce guards stopW (a pointer: transaction stores copy Store).
	closeOnce *sync.Once

	// afterCommit is called with the events appended by a transaction once
	// it has committed (the event hub publishes them). Durable before
	// announced.
	afterCommit func([]Event)

	// pending collects the events appended in this transaction (nil on the
	// root store, where AppendEvent commits at once).
	pending *[]Event

	// stmts are the prepared statements of the hot path (raw.go).
	stmts *stmtCache
}

// Options for Open.
type Options struct {
	Logger *slog.Logger
	// BusyTimeout for SQLite (default 10 s).
	BusyTimeout time.Duration
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
	s := &Store{log: lg, stopW: make(chan struct{}), closeOnce: &sync.Once{}}
	var err error
	if IsPostgres(dsn) {
		s.dialect = "postgres"
		s.dsn = dsn
		s.db, err = gorm.Open(postgres.Open(dsn), gcfg)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		sqlDB, _ := s.db.DB()
		sqlDB.SetMaxOpenConns(20)
		sqlDB.SetMaxIdleConns(10)
	} else {
		s.dialect = "sqlite"
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
		s.writes = make(chan *writeReq, 1024)
		go s.runWriter(s.stopW)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
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
	// FULL: a commit is on disk before it returns, so an event is durable
	// before anyone is told of it, even across a power cut. Group commit
	// makes that one fsync per batch of transactions.
	set("_synchronous", "FULL")
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
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Ping checks the database answers (readiness).
func (s *Store) Ping(ctx context.Context) error {
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

// InTx runs fn in one write transaction. Events appended inside are handed
// to the OnCommit function after the commit succeeds, in order.
//
// On SQLite the transactions of concurrent callers are grouped: one writer
// goroutine takes every request waiting, runs each in a SAVEPOINT of one
// transaction and commits once (group commit). SQLite has a single writer
// anyway; queueing requests in a mutex instead meant one lock hand-off,
// BEGIN and COMMIT per request, and a request that lost its core while
// holding the lock stalled all the others. A request whose fn fails is
// rolled back to its savepoint alone. fn must not call InTx on the root
// store (it would wait for the writer that is running it).
func (s *Store) InTx(ctx context.Context, fn func(tx *Store) error) error {
	if s.pending != nil { // already in a transaction: join it
		return fn(s)
	}
	if s.writes != nil {
		r := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
		select {
		case s.writes <- r:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopW:
			return ErrClosed
		}
		select {
		case err := <-r.done:
			return err
		case <-s.stopW:
			// Closing: the writer finishes the batch it is in.
			select {
			case err := <-r.done:
				return err
			case <-time.After(5 * time.Second):
				return ErrClosed
			}
		}
	}
	var events []Event
	err := s.db.WithContext(ctx).Transaction(func(gtx *gorm.DB) error {
		tx := *s
		tx.db = gtx
		tx.pending = &events
		return fn(&tx)
	})
	if err != nil {
		return err
	}
	if len(events) > 0 && s.afterCommit != nil {
		s.afterCommit(events)
	}
	return nil
}

// writeReq is one InTx call waiting for the SQLite writer.
type writeReq struct {
	ctx    context.Context
	fn     func(tx *Store) error
	events []Event
	err    error
	done   chan error
}

// maxBatch bounds how many transactions share one commit, so that one
// batch cannot hold the writer for long.
const maxBatch = 64

// runWriter is the SQLite writer: it runs waiting transactions in batches
// until stop is closed.
func (s *Store) runWriter(stop <-chan struct{}) {
	for {
		var first *writeReq
		select {
		case first = <-s.writes:
		case <-stop:
			return
		}
		batch := []*writeReq{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-s.writes:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.runBatch(batch)
	}
}

func (s *Store) runBatch(batch []*writeReq) {
	single := len(batch) == 1
	err := s.db.Transaction(func(gtx *gorm.DB) error {
		sqlTx, _ := gtx.Statement.ConnPool.(*sql.Tx)
		for _, r := range batch {
			// Statements run without the caller's cancellation: SQLite
			// answers an interrupted write by rolling back the whole
			// transaction, which would take the batch's others with it.
			ctx := context.WithoutCancel(r.ctx)
			if r.ctx.Err() != nil {
				r.err = r.ctx.Err()
				continue
			}
			if !single && sqlTx != nil {
				if _, err := sqlTx.ExecContext(ctx, `SAVEPOINT w`); err != nil {
					return err
				}
			}
			tx := *s
			tx.db = gtx.WithContext(ctx)
			tx.pending = &r.events
			r.err = runSafely(r.fn, &tx)
			if single {
				return r.err
			}
			if r.err != nil {
				r.events = nil
				if _, err := sqlTx.ExecContext(ctx, `ROLLBACK TO w`); err != nil {
					return err
				}
			}
			if _, err := sqlTx.ExecContext(ctx, `RELEASE w`); err != nil {
				return err
			}
		}
		return nil
	})
	for _, r := range batch {
		if r.err == nil && err != nil {
			r.err = err
		}
		if r.err == nil && len(r.events) > 0 && s.afterCommit != nil {
			s.afterCommit(r.events)
		}
		r.done <- r.err
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

func (s *Store) q(ctx context.Context) *gorm.DB { return s.db.WithContext(ctx) }

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
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if _, err := sqlDB.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
				s.log.Debug("wal checkpoint", "err", err)
			}
		}
	}
}
