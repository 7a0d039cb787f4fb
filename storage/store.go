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

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Errors the controller maps onto HTTP answers.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// Store is the database. Its methods run on the root connection; InTx gives
// a Store whose methods run in one transaction.
type Store struct {
	db      *gorm.DB
	dialect string // "sqlite" or "postgres"
	log     *slog.Logger

	// writeMu serialises write transactions on SQLite. SQLite has one writer
	// at a time anyway; queueing here (instead of in SQLite's busy handler)
	// means concurrent requests never see "database is locked", and readers
	// in WAL mode are not blocked by it.
	writeMu *sync.Mutex

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
	s := &Store{log: lg, writeMu: &sync.Mutex{}}
	var err error
	if IsPostgres(dsn) {
		s.dialect = "postgres"
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
		s.db, err = gorm.Open(sqlite.Open(sqliteDSN(dsn, bt)), gcfg)
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
func (s *Store) InTx(ctx context.Context, fn func(tx *Store) error) error {
	if s.pending != nil { // already in a transaction: join it
		return fn(s)
	}
	if s.dialect == "sqlite" {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
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
