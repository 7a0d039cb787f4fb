package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// dropSessions ends every session of the database but admin's (a
// restart, a failover, a proxy that drops its connections): the replica's
// pool, its NOTIFY listener and its node lease's session. It returns how
// many it ended.
func dropSessions(t *testing.T, admin *pgx.Conn) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// callsAnsweringOnPostgres starts one replica on a fresh PostgreSQL
// database with eight calls placed to a phone that rings 1.5 s and then
// answers; it returns the replica, an administrator's connection to the
// database, the legs and when they were placed.
func callsAnsweringOnPostgres(t *testing.T) (*apitest.Env, *pgx.Conn, []string, time.Time) {
	t.Helper()
	dsn := apitest.Postgres(t)
	env, _ := reliabEnv(t, "asterisk", func(o *apitest.Options) { o.DB = dsn })
	owner := env.AddUser("Owner")
	var others []apitest.User
	for i := 0; i < 8; i++ {
		others = append(others, env.AddUser("Caller"))
	}
	conv := newConversation(t, env, owner, others...)
	placed := time.Now()
	var legs []string
	for _, u := range others {
		// +1…9 rings 1.5 s, then answers (reliabRoutes' slow trunk).
		legs = append(legs, joinNumber(t, env, conv, u, "+12025551009"))
	}
	admin, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	return env, admin, legs, placed
}

// waitAllConnected waits until the store says every leg is connected; the
// test's own reads may meet a dropped connection of the pool too, and are
// tried again.
func waitAllConnected(t *testing.T, env *apitest.Env, legs []string, d time.Duration) {
	t.Helper()
	for _, id := range legs {
		env.WaitFor("leg "+id+" connected", d, func() bool {
			l, err := env.Store.GetLeg(context.Background(), id)
			return err == nil && l.State == storage.LegConnected
		})
	}
}

// Given calls ringing on PostgreSQL, when the database drops every
// connection of the replica just before the phones answer, then no
// answer is lost and the replica keeps its PBX node's event connection:
// the lease's session died with the others, and handing the node over (or
// dropping it for a few seconds) would have Asterisk hang up every call
// that answered in the gap.
func TestReliability_GivenCallsRinging_WhenPostgreSQLDropsEveryConnection_ThenNoAnswerIsLost(t *testing.T) {
	env, admin, legs, _ := callsAnsweringOnPostgres(t)
	for _, id := range legs {
		waitLeg(t, env, id, "ringing", 10*time.Second, inState(storage.LegRinging))
	}
	reconnects := env.Driver.Status().Reconnects
	if n := dropSessions(t, admin); n < 3 {
		t.Fatalf("dropped %d connections; the replica should have held its pool's, its listener's and its lease's", n)
	}
	// The phones answer about 1.5 s after their originates; the periodic
	// resync is 30 s away.
	waitAllConnected(t, env, legs, 8*time.Second)
	waitConverged(t, env, 5*time.Second)
	if !env.Ctl.Owner("emulator") {
		t.Fatal("the replica no longer holds its PBX node")
	}
	if n := env.Driver.Status().Reconnects; n != reconnects {
		t.Fatalf("the event connection was dropped (%d reconnects)", n-reconnects)
	}
}

// Given calls answering, when the database drops every connection again
// and again while the answers arrive (a flapping failover), then the
// answers whose transitions failed are not lost until the periodic resync,
// half a minute on (an answered call shown ringing, the others not invited
// meanwhile): the store being behind the PBX has the node resynced every
// second until a resync succeeds.
func TestReliability_GivenCallsAnswering_WhenPostgreSQLFlaps_ThenTheStoreCatchesUpWithinSeconds(t *testing.T) {
	env, admin, legs, placed := callsAnsweringOnPostgres(t)
	time.Sleep(time.Until(placed.Add(1300 * time.Millisecond)))
	for time.Since(placed) < 2200*time.Millisecond {
		dropSessions(t, admin)
		time.Sleep(20 * time.Millisecond)
	}
	settled := time.Now()
	waitAllConnected(t, env, legs, 6*time.Second)
	waitConverged(t, env, 5*time.Second)
	t.Logf("every answer in the store %s after the database settled", time.Since(settled).Round(10*time.Millisecond))
}
