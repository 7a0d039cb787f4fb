package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"
)

// ErrStorageFull: the database's disk has no room left (SQLite's
// SQLITE_FULL or ENOSPC, PostgreSQL's disk_full). Nothing of the failed
// transaction was kept; the same request succeeds once there is room. The
// API answers 507 storage_full, and readiness says so.
var ErrStorageFull = errors.New("storage full")

// fullness remembers that writes are failing for lack of room: since
// (unix ns) is 0 while there is room.
type fullness struct {
	since atomic.Int64
}

// isFull reports whether err says the disk has no room.
func isFull(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrFull {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "53100" { // disk_full
		return true
	}
	if errors.Is(err, syscall.ENOSPC) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "database or disk is full") || strings.Contains(msg, "no space left on device")
}

// noteWrite looks at the outcome of one write transaction: a failure for
// lack of room is returned as ErrStorageFull, and the first of a run of
// them is logged at ERROR and starts watchRoom. Other outcomes pass
// through unchanged. A success does not clear the state: a transaction
// that wrote nothing commits on a full disk too; watchRoom's probe does.
func (s *Store) noteWrite(err error) error {
	if err == nil || errors.Is(err, ErrStorageFull) || !isFull(err) {
		return err
	}
	if s.full.since.CompareAndSwap(0, time.Now().UnixNano()) {
		s.log.Error("storage full: writes are refused until the disk has room again", "err", err)
		go s.watchRoom()
	}
	return fmt.Errorf("%w: %v", ErrStorageFull, err)
}

// roomProbeEvery is how often a full store tries a small write.
const roomProbeEvery = time.Second

// watchRoom tries one small real write every roomProbeEvery while the
// store is full, and clears the state (readiness comes back) when one goes
// through: recovery needs no request, nor a restart.
func (s *Store) watchRoom() {
	t := time.NewTicker(roomProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopW:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.InTx(ctx, func(tx *Store) error {
			return tx.q(ctx).Exec(`UPDATE schema_migrations SET applied_at = applied_at
 WHERE version = (SELECT MAX(version) FROM schema_migrations)`).Error
		})
		cancel()
		if err == nil {
			since := s.full.since.Swap(0)
			s.log.Warn("storage has room again: writes work", "full_for", time.Since(time.Unix(0, since)).Round(time.Second))
			return
		}
	}
}

// fullErr is readiness's view: ErrStorageFull while writes fail for lack
// of room.
func (s *Store) fullErr() error {
	if since := s.full.since.Load(); since != 0 {
		return fmt.Errorf("%w since %s: writes are refused until the disk has room again", ErrStorageFull,
			time.Unix(0, since).UTC().Format(time.RFC3339))
	}
	return nil
}
