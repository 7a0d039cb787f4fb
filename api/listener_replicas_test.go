package api_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convoice/convoice/api/apitest"
)

// A replica's NOTIFY listener loses its connection (the database
// restarted it, a proxy dropped it): what other replicas commit while it
// is gone is not notified to it again. Its streams must still get all of
// it, in order: on reconnecting, the replica has every stream re-read the
// stored log (ListenEvents' pokeAll).
func TestReplicas_AStreamGetsWhatWasCommittedWhileItsReplicasListenerWasGone(t *testing.T) {
	dsn := apitest.Postgres(t)
	r1, _, alice, conv, onR2 := followedOnReplica2(t, apitest.Options{DB: dsn, NoPBX: true})

	ctx := context.Background()
	admin := apitest.AdminConn(t, dsn)
	const listening = `FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'`
	listeners := func() []int32 {
		rows, err := admin.Query(ctx, `SELECT pid `+listening)
		if err != nil {
			t.Fatal(err)
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		return pids
	}
	r1.WaitFor("both replicas listening", 10*time.Second, func() bool { return len(listeners()) == 2 })
	gone := listeners()
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1)`, gone); err != nil {
		t.Fatal(err)
	}
	r1.WaitFor("the listeners' sessions gone", 10*time.Second, func() bool {
		return !slices.ContainsFunc(listeners(), func(pid int32) bool { return slices.Contains(gone, pid) })
	})
	// Committed through replica 1 while no listener is connected (they
	// reconnect after a 250 ms back-off): no NOTIFY of these reaches
	// replica 2.
	for i := 0; i < 3; i++ {
		r1.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", alice.Token, map[string]any{"text": "while gone " + strconv.Itoa(i)})
	}
	var committed time.Time
	if err := admin.QueryRow(ctx, `SELECT now()`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	var since time.Time
	if err := admin.QueryRow(ctx, `SELECT coalesce(min(backend_start), now() + interval '1 hour') `+listening).Scan(&since); err != nil {
		t.Fatal(err)
	}
	if !since.After(committed) {
		t.Fatalf("a listener was back (since %s) before the messages were committed (%s): the gap was not exercised", since, committed)
	}
	// Nothing else is committed until they have arrived: no later NOTIFY
	// makes replica 2 read up to them.
	for id := 2; id <= 4; id++ {
		if ev := onR2.Next(t, 10*time.Second, nil); ev.ID != strconv.Itoa(id) || ev.Type != "message.created" {
			t.Fatalf("replica 2's stream got %s %s, want message %d", ev.ID, ev.Type, id)
		}
	}
	// And the new listener carries what follows.
	r1.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", alice.Token, map[string]any{"text": "after"})
	if ev := onR2.Next(t, 10*time.Second, nil); ev.ID != "5" || ev.Type != "message.created" {
		t.Fatalf("replica 2's stream got %s %s after the listener came back, want message 5", ev.ID, ev.Type)
	}
}
