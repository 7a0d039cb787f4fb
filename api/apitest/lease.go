package apitest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

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
