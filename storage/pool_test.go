package storage

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/convoice/convoice/storage/pgtest"
)

func TestPGPoolSize_ReadsAndRemovesPoolMaxConns(t *testing.T) {
	base := "postgres://convoice@127.0.0.1:5432/convoice?sslmode=disable"
	if dsn, n, err := pgPoolSize(base); err != nil || n != defaultPGPool || dsn != base {
		t.Errorf("no parameter: %q %d %v; want the DSN as given and %d", dsn, n, err, defaultPGPool)
	}
	dsn, n, err := pgPoolSize(base + "&pool_max_conns=7")
	if err != nil || n != 7 || strings.Contains(dsn, "pool_max_conns") || !strings.Contains(dsn, "sslmode=disable") {
		t.Errorf("pool_max_conns=7: %q %d %v; want 7 and the DSN without it", dsn, n, err)
	}
	if _, _, err := pgPoolSize("postgres://convoice:s3cret@127.0.0.1:port/x?pool_max_conns=3"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("a DSN that is no URL: %v; want an error without the password", err)
	}
	for _, bad := range []string{"0", "-1", "x", "1001", ""} {
		if _, _, err := pgPoolSize(base + "&pool_max_conns=" + bad); err == nil || !strings.Contains(err.Error(), "pool_max_conns") {
			t.Errorf("pool_max_conns=%q: %v; want an error naming the parameter", bad, err)
		}
	}
}

// A replica opened with pool_max_conns holds at most that many pooled
// connections, more transactions than that at once wait for one and all
// commit, and the connections outside the pool (NOTIFY, leases) use the
// DSN without the parameter, which the server would refuse.
func TestOpen_PoolMaxConnsBoundsThePool(t *testing.T) {
	dsn := pgtest.DSN(t, "")
	if !IsPostgres(dsn) {
		if _, err := Open(context.Background(), t.TempDir()+"/p.db?pool_max_conns=3", Options{}); err != nil {
			t.Fatalf("SQLite ignores what is not its own: %v", err)
		}
		return
	}
	ctx := context.Background()
	s, err := Open(ctx, pgtest.WithParam(dsn, "pool_max_conns=3"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.stmts.db.Stats().MaxOpenConnections; got != 3 {
		t.Fatalf("MaxOpenConnections = %d, want 3", got)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- s.InTx(ctx, func(tx *Store) error {
				return tx.CreateUser(ctx, &User{ID: fmt.Sprintf("pool-%d", i), DisplayName: "P", Email: fmt.Sprintf("pool-%d@x.com", i), Role: RoleUser})
			})
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := s.stmts.db.Stats().MaxOpenConnections; got != 3 {
		t.Fatalf("after the burst MaxOpenConnections = %d, want 3", got)
	}
	conn, err := s.pgConnect(ctx)
	if err != nil {
		t.Fatalf("a connection outside the pool: %v", err)
	}
	conn.Close(ctx)
}
