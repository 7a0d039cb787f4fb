package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// Given calls ringing on PostgreSQL, when the database drops every
// connection of the replica (a restart, a failover, an administrator's
// pg_terminate_backend) just before the phones answer, then no answer is
// lost: the pool's dead connections fail the first transactions that take
// them, and a call's progress that failed on one is applied again, so the
// store says "connected" for every answered call within seconds — not at
// the next periodic resync, half a minute later, with the others not
// invited meanwhile — and the replica keeps its PBX node's event
// connection: the lease's session died with the others, and handing the
// node over (or dropping it for a few seconds) would have Asterisk hang up
// every call that answered in the gap.
func TestReliability_GivenCallsRinging_WhenPostgreSQLDropsEveryConnection_ThenNoAnswerIsLost(t *testing.T) {
	dsn := apitest.Postgres(t)
	env, _ := reliabEnv(t, "asterisk", func(o *apitest.Options) { o.DB = dsn })
	const callers = 8
	owner := env.AddUser("Owner")
	var others []apitest.User
	for i := 0; i < callers; i++ {
		others = append(others, env.AddUser("Caller"))
	}
	conv := newConversation(t, env, owner, others...)
	var legs []string
	for _, u := range others {
		// +1…9 rings 1.5 s, then answers (reliabRoutes' slow trunk).
		legs = append(legs, joinNumber(t, env, conv, u, "+12025551009"))
	}
	for _, id := range legs {
		waitLeg(t, env, id, "ringing", 10*time.Second, inState(storage.LegRinging))
	}

	reconnects := env.Driver.Status().Reconnects
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var dropped int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&dropped); err != nil {
		t.Fatal(err)
	}
	if dropped < 3 {
		t.Fatalf("dropped %d connections; the replica should have held its pool's, its listener's and its lease's", dropped)
	}

	// The phones answer about 1.5 s after their originates; the periodic
	// resync is 30 s away. (The test's own reads may meet a dropped
	// connection of the pool too: they are tried again.)
	for _, id := range legs {
		env.WaitFor("leg "+id+" connected", 8*time.Second, func() bool {
			l, err := env.Store.GetLeg(ctx, id)
			return err == nil && l.State == storage.LegConnected
		})
	}
	waitConverged(t, env, 5*time.Second)
	// The replica took its node's lease again on a new session and kept
	// the event connection all along: Asterisk hangs up a call that
	// answers while no connection is there for its app.
	if !env.Ctl.Owner("emulator") {
		t.Fatal("the replica no longer holds its PBX node")
	}
	if n := env.Driver.Status().Reconnects; n != reconnects {
		t.Fatalf("the event connection was dropped (%d reconnects)", n-reconnects)
	}
}
