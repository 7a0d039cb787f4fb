package storage

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Lease timing. A replica that does not hold a lease tries to take it every
// LeaseRetry. The holder hears at once when the server ends its session (a
// restart, a failover, pg_terminate_backend) and checks a quiet session
// every LeaseCheck, within LeaseCheckTimeout. When its session fails it
// does not give the lease up at once: it tries to take it again on a new
// session every leaseRegainRetry for up to the store's regain window
// (Options.LeaseRegain, DefaultLeaseRegain unless set), and keeps acting as
// owner meanwhile. Handing a PBX node over is not free: until the next
// holder's event connection is up, Asterisk hangs up every call that
// answers (recording m), and a database restart would otherwise do that to
// a single replica for its whole yield. It gives the lease up when
// another session has taken it (the database is reachable again and
// someone else won) or when the database stayed out of reach for the
// regain window.
//
// The default window, 15 s, rides out a database switchover and a quick
// failover; where failover takes longer, set it above that time. What a
// longer window costs: a holder that vanishes without closing its
// connections (power lost) is replaced later (regain+6 s; meanwhile the
// calls that answer are not bridged — we assume, without a recording,
// that Asterisk, which still counts the dead websocket as the app's,
// keeps them in the app until the new holder's resync bridges them, as
// it does for a live one), and one cut off from the database alone
// holds its node that long, its calls bridged by its driver but not
// stored until the next holder's resync.
//
// When the holder dies, PostgreSQL ends its session (the TCP connection
// closes) and releases the lock at once, so another replica holds the lease
// within LeaseRetry plus a connection set-up. When the holder is cut off
// from PostgreSQL without dying, it stops acting as owner within
// LeaseCheck+LeaseCheckTimeout+regain (18 s by default), before
// PostgreSQL frees the lock for the others, when its TCP keepalives
// (leaseKeepalive: regain+6 s, 21 s by default) give up on the session:
// two replicas act as owner at once only in the moment between another
// replica taking a lock the server freed and the holder's next try
// finding it taken (leaseRegainRetry) — or, behind a
// proxy that closes its side to PostgreSQL as soon as the replica's side
// fails, for up to those 18 s (the README says what that costs).
const (
	LeaseRetry         = time.Second
	LeaseCheck         = time.Second
	LeaseCheckTimeout  = 2 * time.Second
	DefaultLeaseRegain = 15 * time.Second
	leaseRegainRetry   = 200 * time.Millisecond
)

// leaseKeepalive makes PostgreSQL notice a holder that vanished without a
// FIN (power loss, partition): after regain of silence, then three probes 2 s
// apart — regain+6 s, which is 3 s after a cut-off holder has stopped
// acting as owner (LeaseCheck+LeaseCheckTimeout+regain).
func leaseKeepalive(regain time.Duration) string {
	idle := int(math.Ceil(regain.Seconds()))
	return fmt.Sprintf("SET tcp_keepalives_idle = %d; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3", idle)
}

// LeaseRegain is how long a holder whose session failed tries to take its
// lease again before it gives it up (Options.LeaseRegain).
func (s *Store) LeaseRegain() time.Duration { return s.leaseRegain }

// Lease is one held lease. Lost is closed when it is lost (another session
// took it while ours was down, or the database stayed out of reach: see
// hold) or released; Release gives it up.
type Lease struct {
	name string
	// conn is the session holding the lock (nil on SQLite); a new one
	// when the lease was taken again (hold).
	conn   atomic.Pointer[pgx.Conn]
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
	c := l.conn.Load()
	if c == nil {
		return 0
	}
	return c.PgConn().PID()
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
			return s.hold(ctx, name, key, conn), nil
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
	conn, err := s.pgConnect(cctx)
	if err != nil {
		return nil, false, err
	}
	var got bool
	if _, err = conn.Exec(cctx, leaseKeepalive(s.leaseRegain)); err == nil {
		err = conn.QueryRow(cctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got)
	}
	if err != nil || !got {
		conn.Close(context.WithoutCancel(ctx))
		return nil, false, err
	}
	return conn, true, nil
}

// hold supervises a held lease: it watches the session (watchSession) and,
// when the session fails, takes the lease again on a new one (retake); the
// lease is lost when that fails.
func (s *Store) hold(ctx context.Context, name string, key int64, conn *pgx.Conn) *Lease {
	lctx, cancel := context.WithCancel(ctx)
	l := &Lease{name: name, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	l.conn.Store(conn)
	go func() {
		defer close(l.done)
		defer func() { l.conn.Load().Close(context.Background()) }()
		defer close(l.lost)
		for {
			err := watchSession(lctx, l.conn.Load())
			if lctx.Err() != nil {
				return
			}
			s.log.Warn("the lease's database session failed; taking the lease again on a new session", "lease", name, "err", err)
			// Closed first, briefly: a session that failed on our side
			// (a ping that timed out) may still hold the lock on the
			// server, which frees it when the connection closes.
			cctx, ccancel := context.WithTimeout(context.Background(), leaseRegainRetry)
			l.conn.Load().Close(cctx)
			ccancel()
			next, ok := s.retake(lctx, name, key)
			if !ok {
				return
			}
			l.conn.Store(next)
			s.log.Info("lease taken again on a new session", "lease", name)
		}
	}()
	return l
}

// watchSession returns when conn fails or ctx is done. A session the
// server ends says so at once (its FATAL arrives while we wait for a
// notification that never comes); a quiet one is pinged every LeaseCheck,
// which a cut-off session fails within LeaseCheckTimeout.
func watchSession(ctx context.Context, conn *pgx.Conn) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, LeaseCheck)
		err := conn.PgConn().WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !pgconn.Timeout(err) {
			return err
		}
		pctx, pcancel := context.WithTimeout(ctx, LeaseCheckTimeout)
		err = conn.Ping(pctx)
		pcancel()
		if err != nil {
			return err
		}
	}
}

// retake tries to take the lease again for up to the regain window (see
// Lease timing): the new session, or false when another session holds the lock
// or the database stayed out of reach.
func (s *Store) retake(ctx context.Context, name string, key int64) (*pgx.Conn, bool) {
	rctx, cancel := context.WithTimeout(ctx, s.leaseRegain)
	defer cancel()
	for {
		conn, ok, err := s.tryLease(rctx, key)
		switch {
		case ok:
			return conn, true
		case err == nil:
			s.log.Warn("lease lost: another session holds it (another replica took it while ours was down)", "lease", name)
			return nil, false
		}
		select {
		case <-rctx.Done():
			if ctx.Err() == nil {
				s.log.Warn("lease lost: the database stayed out of reach", "lease", name, "for", s.leaseRegain, "err", err)
			}
			return nil, false
		case <-time.After(leaseRegainRetry):
		}
	}
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
