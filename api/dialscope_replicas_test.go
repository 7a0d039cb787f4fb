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
	dsn := apitest.Postgres(t)
	// Every limit on (production defaults), so every dial takes the
	// policy's locks.
	policy := &controller.PolicyConfig{}
	r1 := apitest.Start(t, apitest.Options{DB: dsn, Policy: policy})
	r2 := apitest.Start(t, apitest.Options{DB: dsn, Policy: policy, Emu: r1.Emu})
	alice := r1.AddUser("Alice", num("work", "+12025550101"))
	bob := r1.AddUser("Bob", num("work", "+12025550111"))
	carol := r1.AddUser("Carol", num("work", "+12025550121"))
	convA := jlConv(t, r1, alice, "A", carol)
	convB := jlConv(t, r1, bob, "B")

	ctx := context.Background()
	holder, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, storage.ScopeLockID("dial:conv:"+convA)); err != nil {
		t.Fatal(err)
	}

	done := make(chan apitest.Response, 1)
	go func() {
		done <- r1.Do("POST", "/api/v1/conversations/"+convA+"/audio", alice.Token, map[string]any{"published": "work"})
	}()
	// A's dial is in its decision's transaction, waiting for the lock.
	r1.WaitFor("the dial in A waiting for its scope", 10*time.Second, func() bool {
		var n int
		err := holder.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&n)
		return err == nil && n == 1
	})
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
		select {
		case r := <-ch:
			if r.Status != 201 {
				t.Fatalf("dial in A once let go: %d %s", r.Status, r.Body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a dial in A still waits after its scope was let go")
		}
	}
}
