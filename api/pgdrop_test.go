package api_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// callsAnswering starts one replica on the PostgreSQL database dsn (its
// options changed by mod, when not nil; then those of more, before any
// call) with eight calls placed to a phone that rings 1.5 s (the slow
// ring) and then answers; it returns the replica, the legs and when they
// were placed.
func callsAnswering(t *testing.T, kind, dsn string, mod func(*apitest.Options), more ...func(first *apitest.Env)) (*apitest.Env, []string, time.Time) {
	t.Helper()
	env, _ := reliabEnv(t, kind, func(o *apitest.Options) {
		o.DB = dsn
		if mod != nil {
			mod(o)
		}
	})
	for _, start := range more {
		start(env)
	}
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
	return env, legs, placed
}

// holdsItsNode watches, every 5 ms until the returned stop, whether env
// holds its PBX node (and so its event connection: Asterisk hangs up a
// call that answers while no connection of its app is there); stop fails
// the test if it ever did not.
func holdsItsNode(t *testing.T, env *apitest.Env) (stop func()) {
	t.Helper()
	var lapses atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			if !env.Ctl.Owner("emulator") {
				lapses.Add(1)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() {
		t.Helper()
		close(done)
		<-finished
		if n := lapses.Load(); n > 0 {
			t.Fatalf("the replica let its PBX node go (seen %d times in 5 ms samples)", n)
		}
	}
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
// On both PBXs: FreeSWITCH keeps its calls when the event socket drops,
// but a node handed over still loses its answers' writes meanwhile.
func TestReliability_GivenCallsRinging_WhenPostgreSQLDropsEveryConnection_ThenNoAnswerIsLost(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		dsn := apitest.Postgres(t)
		env, legs, _ := callsAnswering(t, kind, dsn, nil)
		admin := apitest.AdminConn(t, dsn)
		for _, id := range legs {
			waitLeg(t, env, id, "ringing", 10*time.Second, inState(storage.LegRinging))
		}
		held := holdsItsNode(t, env)
		if n := apitest.DropSessions(t, admin); n < 3 {
			t.Fatalf("dropped %d connections; the replica should have held its pool's, its listener's and its lease's", n)
		}
		// The phones answer about 1.5 s after their originates; the
		// periodic resync is 30 s away.
		waitAllConnected(t, env, legs, 8*time.Second)
		waitConverged(t, env, 5*time.Second)
		held()
	})
}

// Given calls ringing, when PostgreSQL itself restarts while the phones
// answer (a fast shutdown ends every session, the server refuses
// connections for a moment, then starts again), then every answer is in
// the store within seconds of the server being back, and the replica
// keeps its PBX node and event connection throughout: nobody else could
// take the lease while the server was down.
func TestReliability_GivenCallsRinging_WhenPostgreSQLRestarts_ThenNoAnswerIsLostAndTheNodeStays(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		dsn, restart := apitest.PrivatePostgres(t)
		env, legs, placed := callsAnswering(t, kind, dsn, nil)
		for _, id := range legs {
			waitLeg(t, env, id, "ringing", 10*time.Second, inState(storage.LegRinging))
		}
		held := holdsItsNode(t, env)
		// Down from just before the first answers (1.5 s after the
		// originates) for the restart's half a second or so.
		time.Sleep(time.Until(placed.Add(1300 * time.Millisecond)))
		began := time.Now()
		restart(0)
		back := time.Now()
		t.Logf("PostgreSQL restarted in %s", back.Sub(began).Round(10*time.Millisecond))
		waitAllConnected(t, env, legs, 8*time.Second)
		waitConverged(t, env, 5*time.Second)
		t.Logf("every answer in the store %s after the server was back", time.Since(back).Round(10*time.Millisecond))
		held()
	})
}

// Given calls ringing and a lease regain window set above the database's
// failover time, when PostgreSQL is down for 9 s (a failover's gap, longer
// than the default window of 5 s) and the phones answer 6 s into it, then
// the replica keeps its PBX node throughout — had it given the node up,
// Asterisk would have hung up every call that answered with no connection
// of the app there — and every answer is in the store soon after the
// database is back (the driver put the calls in their conference; their
// transitions, which failed, are caught up by a resync).
func TestReliability_GivenALeaseRegainAboveTheGap_WhenPostgreSQLFailsOver_ThenTheNodeStaysAndNoAnswerIsLost(t *testing.T) {
	dsn, restart := apitest.PrivatePostgres(t)
	const down = 9 * time.Second
	env, legs, placed := callsAnswering(t, "asterisk", dsn, func(o *apitest.Options) {
		o.LeaseRegain = 12 * time.Second
		o.Timing.SlowRing = 7 * time.Second
	})
	for _, id := range legs {
		waitLeg(t, env, id, "ringing", 10*time.Second, inState(storage.LegRinging))
	}
	held := holdsItsNode(t, env)
	time.Sleep(time.Until(placed.Add(time.Second)))
	restart(down)
	back := time.Now()
	waitAllConnected(t, env, legs, 8*time.Second)
	waitConverged(t, env, 5*time.Second)
	t.Logf("every answer in the store %s after the server was back", time.Since(back).Round(10*time.Millisecond))
	held()
}

// Given calls answering, when the database drops every connection again
// and again while the answers arrive (a flapping failover), then the
// answers whose transitions failed are not lost until the periodic resync,
// half a minute on (an answered call shown ringing, the others not invited
// meanwhile): the store being behind the PBX has the node resynced every
// second until a resync succeeds.
// On both PBXs: FreeSWITCH keeps its calls when the event socket drops,
// but its answers are as easily lost in a failed write.
func TestReliability_GivenCallsAnswering_WhenPostgreSQLFlaps_ThenTheStoreCatchesUpWithinSeconds(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		dsn := apitest.Postgres(t)
		env, legs, placed := callsAnswering(t, kind, dsn, nil)
		admin := apitest.AdminConn(t, dsn)
		time.Sleep(time.Until(placed.Add(1300 * time.Millisecond)))
		for time.Since(placed) < 2200*time.Millisecond {
			apitest.DropSessions(t, admin)
			time.Sleep(20 * time.Millisecond)
		}
		settled := time.Now()
		waitAllConnected(t, env, legs, 6*time.Second)
		waitConverged(t, env, 5*time.Second)
		t.Logf("every answer in the store %s after the database settled", time.Since(settled).Round(10*time.Millisecond))
	})
}

// Given two replicas and calls ringing, when PostgreSQL restarts while the
// phones answer, then once it is back exactly one replica holds the node
// (the holder, retrying every 200 ms, takes its lease again before the
// other, retrying every second, as a rule; should the other win, the
// holder finds the lock taken and lets go), and every answer is in the
// store.
func TestReliability_GivenTwoReplicas_WhenPostgreSQLRestarts_ThenOneOwnerAndNoAnswerIsLost(t *testing.T) {
	dsn, restart := apitest.PrivatePostgres(t)
	var r2 *apitest.Env
	r1, legs, placed := callsAnswering(t, "asterisk", dsn, nil, func(first *apitest.Env) {
		r2, _ = reliabEnv(t, "asterisk", func(o *apitest.Options) { o.DB = dsn; o.Emu = first.Emu })
	})
	for _, id := range legs {
		waitLeg(t, r1, id, "ringing", 10*time.Second, inState(storage.LegRinging))
	}
	if !r1.Ctl.Owner("emulator") || r2.Ctl.Owner("emulator") {
		t.Fatal("replica 1, started first, should hold the node")
	}
	time.Sleep(time.Until(placed.Add(1300 * time.Millisecond)))
	restart(0)
	waitAllConnected(t, r1, legs, 8*time.Second)
	waitConverged(t, r1, 5*time.Second)
	// (Should replica 2 have won, the two overlap until replica 1's next
	// try, and neither holds the node while the lease changes hands.)
	r1.WaitFor("exactly one replica holding the node", r1.Store.LeaseRegain()+storage.LeaseRetry, func() bool {
		return r1.Ctl.Owner("emulator") != r2.Ctl.Owner("emulator")
	})
	t.Logf("replica 1 holds the node: %v", r1.Ctl.Owner("emulator"))
}
