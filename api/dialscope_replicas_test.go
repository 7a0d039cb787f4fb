package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/storage"
)

// The dial policy on PostgreSQL locks per scope, not the cluster: while a
// dial's decision in conversation A is held open (the test holds A's scope
// lock, as a slow dial deciding there would), a dial in conversation B
// through the other replica completes; a second dial in A waits for the
// lock, and goes through once it is let go.
func TestReplicas_DialsInDifferentConversationsDoNotWaitForEachOther(t *testing.T) {
	dsn, r1, r2 := policyReplicas(t)
	alice := r1.AddUser("Alice", num("work", "+12025550101"))
	bob := r1.AddUser("Bob", num("work", "+12025550111"))
	carol := r1.AddUser("Carol", num("work", "+12025550121"))
	convA := jlConv(t, r1, alice, "A", carol)
	convB := jlConv(t, r1, bob, "B")

	ctx := context.Background()
	holder, tx := holdLock(t, dsn, `SELECT pg_advisory_xact_lock($1)`, storage.ScopeLockID("dial:conv:"+convA))
	// A's dial is in its decision's transaction, waiting for the lock.
	done := joinWaiting(t, r1, holder, "advisory", convA, alice.Token)
	start := time.Now()
	r := r2.Do("POST", "/api/v1/conversations/"+convB+"/audio", bob.Token, map[string]any{"published": "work"})
	if r.Status != 201 {
		t.Fatalf("dial in B through replica 2: %d %s", r.Status, r.Body)
	}
	t.Logf("dial in B answered in %s while A's scope was held", time.Since(start))
	// A second dial in A, through replica 2, waits like the first.
	other := make(chan apitest.Response, 1)
	go func() {
		other <- r2.Do("POST", "/api/v1/conversations/"+convA+"/audio", carol.Token, map[string]any{"published": "work"})
	}()
	select {
	case r := <-done:
		t.Fatalf("the dial in A did not wait for its scope: %d %s", r.Status, r.Body)
	case r := <-other:
		t.Fatalf("the second dial in A did not wait for its scope: %d %s", r.Status, r.Body)
	case <-time.After(500 * time.Millisecond):
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan apitest.Response{done, other} {
		expectJoined(t, ch, "a dial in A once its scope was let go")
	}
}

// A join waiting for its conversation (another transaction holds it: a
// batch of call progress, another join) holds none of its dial scopes:
// the same person's join into another conversation, through the other
// replica, goes through meanwhile. (The scopes were once taken first, and
// a person's joins then queued behind one that waited for a conversation.)
func TestReplicas_AJoinWaitingForItsConversationHoldsNoScope(t *testing.T) {
	dsn, r1, r2 := policyReplicas(t)
	alice := r1.AddUser("Alice", num("work", "+12025550101"))
	convA := jlConv(t, r1, alice, "A")
	convB := jlConv(t, r1, alice, "B")

	ctx := context.Background()
	holder, tx := holdLock(t, dsn, `SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE`, convA)
	// A row lock waited for is a wait for its holder's transaction id.
	done := joinWaiting(t, r1, holder, "transactionid", convA, alice.Token)
	answered := make(chan apitest.Response, 1)
	go func() {
		answered <- r2.Do("POST", "/api/v1/conversations/"+convB+"/audio", alice.Token, map[string]any{"published": "work"})
	}()
	expectJoined(t, answered, "the join in B through replica 2, while the join in A waits for its conversation")
	select {
	case r := <-done:
		t.Fatalf("the join in A did not wait for its conversation: %d %s", r.Status, r.Body)
	default:
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	expectJoined(t, done, "the join in A once its conversation was let go")
}

// holdLock takes a lock (query) in a PostgreSQL transaction of its own,
// held until the test rolls tx back (or ends); holder is its connection,
// for looking at pg_locks.
func holdLock(t *testing.T, dsn, query string, args ...any) (holder *pgx.Conn, tx pgx.Tx) {
	t.Helper()
	ctx := context.Background()
	holder, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close(ctx) })
	tx, err = holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, query, args...); err != nil {
		t.Fatal(err)
	}
	return holder, tx
}

// joinWaiting has token's user join conv through r (their "work" number)
// and returns once the join waits for a lock of locktype (pg_locks, as
// holder sees it); the join's answer comes on the channel.
func joinWaiting(t *testing.T, r *apitest.Env, holder *pgx.Conn, locktype, conv, token string) chan apitest.Response {
	t.Helper()
	done := make(chan apitest.Response, 1)
	go func() {
		done <- r.Do("POST", "/api/v1/conversations/"+conv+"/audio", token, map[string]any{"published": "work"})
	}()
	r.WaitFor("the join waiting for a "+locktype+" lock", 10*time.Second, func() bool {
		var n int
		err := holder.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = $1 AND NOT granted`, locktype).Scan(&n)
		return err == nil && n == 1
	})
	return done
}

// expectJoined waits (10 s at most) for a join's answer on ch: 201.
func expectJoined(t *testing.T, ch chan apitest.Response, what string) {
	t.Helper()
	select {
	case r := <-ch:
		if r.Status != 201 {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still waiting after 10 s", what)
	}
}

// policyReplicas are two replicas on one PostgreSQL database (dsn) and one
// emulator, with every limit of the dial policy on (production defaults),
// so that every dial takes the policy's locks.
func policyReplicas(t *testing.T) (dsn string, r1, r2 *apitest.Env) {
	dsn = apitest.Postgres(t)
	policy := &controller.PolicyConfig{}
	r1 = apitest.Start(t, apitest.Options{DB: dsn, Policy: policy})
	r2 = apitest.Start(t, apitest.Options{DB: dsn, Policy: policy, Emu: r1.Emu})
	return dsn, r1, r2
}
