package storage

import (
	"context"
	"errors"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Lease timing. A replica that does not hold a lease tries to take it every
// LeaseRetry; the holder checks its connection every LeaseCheck and gives
// the lease up when that check fails or takes longer than LeaseCheckTimeout.
// When the holder dies, PostgreSQL ends its session (the TCP connection
// closes) and releases the lock at once, so another replica holds the lease
// within LeaseRetry plus a connection set-up. When the holder is cut off
// from PostgreSQL without dying, it stops acting as owner within
// LeaseCheck+LeaseCheckTimeout, and PostgreSQL frees the lock when its TCP
// keepalives (leaseKeepalive) give up on the session.
const (
	LeaseRetry        = time.Second
	LeaseCheck        = time.Second
	LeaseCheckTimeout = 2 * time.Second
)

// leaseKeepalive makes PostgreSQL notice a holder that vanished without a
// FIN (power loss, partition) within about 5+2×3 = 11 s.
const leaseKeepalive = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3"

// Lease is one held lease. Lost is closed when it is lost (connection
// gone) or released; Release gives it up.
type Lease struct {
	name   string
	conn   *pgx.Conn // nil on SQLite
	lost   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// Lost is closed once the lease is no longer held.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release gives the lease up (closing the session releases the lock) and
// waits until that is done. Safe to call more than once.
func (l *Lease) Release() {
	l.cancel()
	<-l.done
}

// SessionPID is the PostgreSQL backend pid of the session holding the lease
// (0 on SQLite), for diagnostics and tests.
func (l *Lease) SessionPID() uint32 {
	if l.conn == nil {
		return 0
	}
	return l.conn.PgConn().PID()
}

// leaseKey is the advisory-lock key of a lease name: the first 64 bits of
// its FNV-1a hash, the same in every replica and every Go version.
func leaseKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("convoice.lease." + name))
	return int64(h.Sum64())
}

// AcquireLease blocks until this process holds the lease called name, or
// ctx is done. On PostgreSQL the lease is a session-level advisory lock
// (pg_try_advisory_lock) held on a dedicated connection kept open for as
// long as the lease: exactly one session in the cluster holds it, and
// losing the connection loses it. On SQLite there is one process: the
// lease is granted at once and lost only on Release.
func (s *Store) AcquireLease(ctx context.Context, name string) (*Lease, error) {
	if s.dialect != "postgres" {
		lctx, cancel := context.WithCancel(ctx)
		l := &Lease{name: name, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
		go func() {
			<-lctx.Done()
			close(l.lost)
			close(l.done)
		}()
		return l, nil
	}
	key := leaseKey(name)
	warned := false
	for {
		conn, ok, err := s.tryLease(ctx, key)
		if ok {
			return s.hold(ctx, name, conn), nil
		}
		if err != nil && ctx.Err() == nil && !warned {
			s.log.Warn("cannot try the lease; retrying", "lease", name, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(LeaseRetry):
		}
	}
}

// tryLease opens a dedicated session and tries the lock once; on success the
// session is kept (it holds the lock), else closed.
func (s *Store) tryLease(ctx context.Context, key int64) (*pgx.Conn, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.dsn)
	if err != nil {
		return nil, false, err
	}
	var got bool
	if _, err = conn.Exec(cctx, leaseKeepalive); err == nil {
		err = conn.QueryRow(cctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got)
	}
	if err != nil || !got {
		conn.Close(context.WithoutCancel(ctx))
		return nil, false, err
	}
	return conn, true, nil
}

// hold supervises a held lease: it checks the session every LeaseCheck and
// declares the lease lost when the check fails.
func (s *Store) hold(ctx context.Context, name string, conn *pgx.Conn) *Lease {
	lctx, cancel := context.WithCancel(ctx)
	l := &Lease{name: name, conn: conn, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer conn.Close(context.Background())
		defer close(l.lost)
		t := time.NewTicker(LeaseCheck)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			cctx, ccancel := context.WithTimeout(lctx, LeaseCheckTimeout)
			err := conn.Ping(cctx)
			ccancel()
			if err != nil {
				if lctx.Err() == nil {
					s.log.Warn("lease lost: its database session failed", "lease", name, "err", err)
				}
				return
			}
		}
	}()
	return l
}

// ErrLeaseNotPostgres: a lease query that only means something on
// PostgreSQL.
var ErrLeaseNotPostgres = errors.New("leases are PostgreSQL advisory locks")

// LeaseHeld reports, for a lease name, whether some session of the
// cluster holds it now (for tests and diagnostics).
func (s *Store) LeaseHeld(ctx context.Context, name string) (bool, error) {
	if s.dialect != "postgres" {
		return false, ErrLeaseNotPostgres
	}
	k := uint64(leaseKey(name))
	var n int64
	err := s.db.WithContext(ctx).Raw(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid = ? AND objid = ? AND objsubid = 1`, int64(k>>32), int64(k&0xffffffff)).Scan(&n).Error
	return n > 0, err
}
