package apitest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// AdminConn connects to the database dsn as an administrator would, beside
// the replicas under test, until the test ends.
func AdminConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	admin, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	return admin
}

// DropSessions ends every session of admin's database but admin's own (a
// restart, a failover, a proxy that drops its connections): the replicas'
// pools, their NOTIFY listeners and their node leases' sessions. It
// returns how many it ended.
func DropSessions(t testing.TB, admin *pgx.Conn) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// SeizeLeases takes every node lease (a session-level advisory lock) of
// admin's database from its holder the way another replica would win it:
// it ends the holder's session and, in the same statement, queues for the
// lock, which it so holds before the holder can take its lease again on a
// new session (the holder then finds it taken and gives it up). letGo
// releases the locks, for another replica to take. Call it while no dial is
// deciding (a dial's scope locks are advisory locks too).
func SeizeLeases(t testing.TB, admin *pgx.Conn) (letGo func()) {
	t.Helper()
	ctx := context.Background()
	rows, err := admin.Query(ctx, `SELECT pid, (classid::bigint << 32) | objid::bigint FROM pg_locks
 WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid <> pg_backend_pid()
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	if err != nil {
		t.Fatal(err)
	}
	type held struct {
		PID int32
		Key int64
	}
	leases, err := pgx.CollectRows(rows, pgx.RowToStructByPos[held])
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) == 0 {
		t.Fatal("no lease is held")
	}
	for _, l := range leases {
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1), pg_advisory_lock($2)`, l.PID, l.Key); err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		for _, l := range leases {
			if _, err := admin.Exec(ctx, `SELECT pg_advisory_unlock($1)`, l.Key); err != nil {
				t.Fatal(err)
			}
		}
	}
}
