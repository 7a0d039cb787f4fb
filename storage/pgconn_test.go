package storage_test

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/convoice/convoice/storage"
)

func TestIsUnreachable_TheDatabaseOutOfReachNotAStatementOrAnHTTPCall(t *testing.T) {
	timedOut := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ETIMEDOUT}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"a read that timed out, wrapped", fmt.Errorf("save leg: %w", timedOut), true},
		{"a connection database/sql found bad", driver.ErrBadConn, true},
		{"the server shutting down", &pgconn.PgError{Code: "57P01"}, true},
		{"a connection exception", &pgconn.PgError{Code: "08006"}, true},
		{"a unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"a row not found", storage.ErrNotFound, false},
		{"an identity provider out of reach", &url.Error{Op: "Get", URL: "https://idp.example/", Err: timedOut}, false},
		{"nothing", nil, false},
		{"anything else", errors.New("boom"), false},
	} {
		if got := storage.IsUnreachable(c.err); got != c.want {
			t.Errorf("%s: IsUnreachable = %v, want %v", c.name, got, c.want)
		}
	}
}
