package storage

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A PostgreSQL connection whose peer has gone silent — a partition, a
// host that lost power — shows no error by itself: the kernel resends for
// about a quarter of an hour, and a request waiting on it waits that long.
// Every connection to PostgreSQL (the pool's, the listener's, the
// leases') is therefore dialled so that it fails within seconds:
//
//   - pgDeadAfter: data the server has not acknowledged for this long
//     fails the connection (TCP_USER_TIMEOUT, on Linux);
//   - keepalive probes after pgKeepaliveIdle of silence, every
//     pgKeepaliveInterval, pgKeepaliveCount of them (about 11 s): an idle
//     connection — the listener waiting for a notification, a pooled one —
//     finds out too;
//   - pgConnectTimeout bounds a new connection unless the DSN says
//     (connect_timeout).
//
// The kernel acknowledges what the server's process has not read yet, so a
// busy server or a long statement does not trip any of these.
const (
	pgDeadAfter         = 10 * time.Second
	pgKeepaliveIdle     = 5 * time.Second
	pgKeepaliveInterval = 2 * time.Second
	pgKeepaliveCount    = 3
	pgConnectTimeout    = 5 * time.Second
)

// pgConfig parses a DSN into a connection configuration with the dialler
// above.
func pgConfig(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// Not err's text: it may quote the DSN, password and all.
		return nil, errors.New("CONVOICE_DB: the PostgreSQL DSN cannot be parsed")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
	d := &net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: pgKeepaliveIdle,
			Interval: pgKeepaliveInterval, Count: pgKeepaliveCount},
		Control: setUserTimeout(pgDeadAfter),
	}
	cfg.DialFunc = d.DialContext
	return cfg, nil
}

// pgConnect opens one connection of its own (a listener's, a lease's).
func (s *Store) pgConnect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, s.pgCfg.Copy())
}

// IsUnreachable reports whether err is the database being out of reach
// (the API answers 503 database_unavailable), not a statement's failure: a
// network error, a connection that could not be made or was lost, or the
// server shutting down. An HTTP client's error (*url.Error) is never the
// database's.
func IsUnreachable(err error) bool {
	if err == nil {
		return false
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return false // an HTTP call's (an identity provider, a webhook)
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ne) || errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 08: connection exception; 57P01–57P03: admin or crash
		// shutdown, cannot connect now.
		return pe.Code[:2] == "08" || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	return false
}
