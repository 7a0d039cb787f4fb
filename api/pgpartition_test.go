package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// ownership samples, every 5 ms until stop, which of two replicas hold
// the PBX node: when each last held it, when each first did, and how
// often both did at once.
type ownership struct {
	mu                sync.Mutex
	lastOne, firstTwo time.Time
	both              int
	done, finished    chan struct{}
}

func watchOwners(one, two *apitest.Env) *ownership {
	o := &ownership{done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(o.finished)
		for last := false; ; {
			a, b := one.Ctl.Owner("emulator"), two.Ctl.Owner("emulator")
			now := time.Now()
			o.mu.Lock()
			if a {
				o.lastOne = now
			}
			if b && o.firstTwo.IsZero() {
				o.firstTwo = now
			}
			if a && b {
				o.both++
			}
			o.mu.Unlock()
			if last {
				return
			}
			select {
			case <-o.done:
				last = true // one more sample: what the caller has just seen
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return o
}

func (o *ownership) stop() (lastOne, firstTwo time.Time, both int) {
	close(o.done)
	<-o.finished
	return o.lastOne, o.firstTwo, o.both
}

// Given two replicas and calls up, when the replica holding the PBX node
// is cut off from PostgreSQL by a network partition (no FIN, no RST: its
// packets and the server's stop), then it stops acting as the node's
// owner within LeaseCheck+LeaseCheckTimeout+LeaseRegain (18 s by default) of the cut —
// before the server, its keepalives unanswered, ends the lease's session
// and frees the lock — so the two never act as owner at once; the other
// replica takes the node once the lock is free; the calls stay up and
// the store, through the other replica, still has them connected; new
// calls go through the other replica; the cut-off replica says it is not
// ready while it cannot reach its database, answers a request 503
// database_unavailable within seconds and closes its event streams, and
// serves again, without the node, once the partition heals.
func TestReliability_GivenTwoReplicas_WhenTheOwnerIsPartitionedFromPostgreSQL_ThenItLetsGoBeforeTheOtherTakesOver(t *testing.T) {
	dsn := apitest.Postgres(t)
	route := apitest.Partition(t, dsn)
	t.Logf("partition by the kernel: %v", route.Real)
	one, _ := reliabEnv(t, "asterisk", func(o *apitest.Options) { o.DB = route.DSN })
	two, _ := reliabEnv(t, "asterisk", func(o *apitest.Options) { o.DB = dsn; o.Emu = one.Emu })
	owner, late, conv, legs := callsUpOnTheFirstOfTwo(t, one, two, "+1202555150")

	// A conversation's stream on the replica about to be cut off.
	stream := one.Subscribe(conv, owner.Token, "")
	defer stream.Close()
	streamEnded := make(chan time.Time, 1)
	go func() {
		for range stream.Events {
		}
		streamEnded <- time.Now()
	}()

	owners := watchOwners(one, two)
	cut := time.Now()
	route.Cut()
	healed := false
	defer func() {
		if !healed {
			route.Heal()
		}
	}()
	// A join sent to the cut-off replica (by a client that does not go
	// through the load balancer) fails within seconds, not when the
	// kernel gives up on the connection a quarter of an hour later.
	refused := make(chan string, 1)
	go func() {
		sent := time.Now()
		got := joinWhileCut(one, conv, late)
		t.Logf("a join on the cut-off replica answered %s after %s", got, time.Since(sent).Round(time.Millisecond))
		refused <- got
	}()

	// The cut-off replica knows it cannot reach its database: a load
	// balancer takes it out.
	one.WaitFor("replica 1 unready", 5*time.Second, func() bool {
		return readyStatus(t, one) == http.StatusServiceUnavailable
	})
	two.WaitFor("replica 2 holding the node", one.Store.LeaseRegain()+15*time.Second, func() bool { return two.Ctl.Owner("emulator") })
	lastOne, firstTwo, both := owners.stop()
	t.Logf("replica 1 last acted as owner %s after the cut, replica 2 first %s after it",
		lastOne.Sub(cut).Round(10*time.Millisecond), firstTwo.Sub(cut).Round(10*time.Millisecond))
	if both > 0 {
		t.Fatalf("both replicas acted as the node's owner at once, in %d samples of 5 ms", both)
	}
	if bound := storage.LeaseCheck + storage.LeaseCheckTimeout + one.Store.LeaseRegain() + time.Second; lastOne.Sub(cut) > bound {
		t.Fatalf("replica 1 acted as owner %s after the cut; it should stop within %s", lastOne.Sub(cut), bound)
	}
	if got := <-refused; got != "503 database_unavailable" {
		t.Fatalf("a join on the cut-off replica: %s; want 503 database_unavailable", got)
	}
	if !firstTwo.After(lastOne) {
		t.Fatalf("replica 2 took the node (%s) before replica 1 let it go (%s)", firstTwo, lastOne)
	}

	// The stream on the cut-off replica, which can read nothing more,
	// is closed (at a heartbeat whose membership check fails), so that
	// the client's EventSource comes back through the load balancer to a
	// replica that can serve it.
	select {
	case at := <-streamEnded:
		t.Logf("the stream on the cut-off replica ended %s after the cut", at.Sub(cut).Round(10*time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the stream on the cut-off replica is still open, silent, long into the partition")
	}

	// The calls went on without convoice's hands on them, and the new
	// owner's resync finds them as the store has them.
	waitAllConnected(t, two, legs, 5*time.Second)
	waitConverged(t, two, 5*time.Second)
	lateLeg := joinNumber(t, two, conv, late, "+12025551509")
	waitLeg(t, two, lateLeg, "connected", 10*time.Second, inState(storage.LegConnected))

	route.Heal()
	healed = true
	one.WaitFor("replica 1 ready again", 10*time.Second, func() bool {
		return readyStatus(t, one) == http.StatusOK
	})
	au := one.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", owner.Token, nil).Map(t)
	if n := len(au["legs"].([]any)); n != 5 {
		t.Fatalf("replica 1 after the partition sees %d legs, want 5", n)
	}
	// Replica 1 yields, so the node stays where it is.
	time.Sleep(2 * storage.LeaseRetry)
	if one.Ctl.Owner("emulator") || !two.Ctl.Owner("emulator") {
		t.Fatalf("after the partition: replica 1 owner %v, replica 2 owner %v; want only replica 2",
			one.Ctl.Owner("emulator"), two.Ctl.Owner("emulator"))
	}
	for _, id := range append(legs, lateLeg) {
		if l, err := two.Store.GetLeg(context.Background(), id); err != nil || l.State != storage.LegConnected {
			t.Fatalf("leg %s after the partition: %+v, %v", id, l, err)
		}
	}
}

// callsUpOnTheFirstOfTwo checks that replica one, started first, holds
// the node and not two, and has four callers of a conversation (of owner,
// with late in it too, who has not joined) join its audio on numbers
// prefix+"1"…"4" through one; it returns once their calls are connected.
func callsUpOnTheFirstOfTwo(t *testing.T, one, two *apitest.Env, prefix string) (owner, late apitest.User, conv string, legs []string) {
	t.Helper()
	if !one.Ctl.Owner("emulator") || two.Ctl.Owner("emulator") {
		t.Fatal("replica 1, started first, should hold the node")
	}
	owner = one.AddUser("Owner")
	var callers []apitest.User
	for i := 0; i < 4; i++ {
		callers = append(callers, one.AddUser("Caller"))
	}
	late = one.AddUser("Late")
	conv = newConversation(t, one, owner, append(callers, late)...)
	for i, u := range callers {
		legs = append(legs, joinNumber(t, one, conv, u, prefix+string(rune('1'+i))))
	}
	waitAllConnected(t, one, legs, 10*time.Second)
	return owner, late, conv, legs
}

// readyStatus is the status of env's /readyz, or 0 when it did not answer
// within 3 s.
func readyStatus(t *testing.T, env *apitest.Env) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.URL+"/readyz", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// joinWhileCut has u join conv's audio through env, which is cut off from
// its database, and says how it answered and when.
func joinWhileCut(env *apitest.Env, conv string, u apitest.User) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", env.URL+"/api/v1/conversations/"+conv+"/audio",
		strings.NewReader(`{"number":"+12025551509"}`))
	req.Header.Set("Authorization", "Bearer "+u.Token)
	req.Header.Set("Content-Type", "application/json")
	sent := time.Now()
	res, err := http.DefaultClient.Do(req)
	took := time.Since(sent).Round(time.Millisecond)
	if err != nil {
		return fmt.Sprintf("no answer after %s: %v", took, err)
	}
	defer res.Body.Close()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return fmt.Sprintf("%d with a body that is not JSON (%v)", res.StatusCode, err)
	}
	if body.Error.Code != "database_unavailable" {
		return fmt.Sprintf("%d %s after %s: %s", res.StatusCode, body.Error.Code, took, body.Error.Message)
	}
	return fmt.Sprintf("%d %s", res.StatusCode, body.Error.Code)
}
