package storage_test

import (
	"context"
	"testing"
	"time"
)

// A replica publishes the events it commits itself, at commit; its
// listener is poked only for the events of other replicas. Notifications
// arrive in commit order, so had A's own been passed on, it would have
// come before B's.
func TestListenEvents_PokedForOtherReplicasEventsNotItsOwn(t *testing.T) {
	_, a, b := twoReplicas(t)
	_, c := seedConversation(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pokes := make(chan int64, 16)
	listening := make(chan struct{}, 4)
	go a.ListenEvents(ctx, func(conv string, seq int64) {
		if conv == c.ID {
			pokes <- seq
		}
	}, func() { listening <- struct{}{} })
	select {
	case <-listening:
	case <-time.After(10 * time.Second):
		t.Fatal("A's listener did not connect")
	}
	own, err := a.AppendEvent(ctx, c.ID, "own", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	other, err := b.AppendEvent(ctx, c.ID, "other", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-pokes:
		if seq != other.Seq {
			t.Fatalf("A was poked for seq %d; want only B's %d (A's own is %d)", seq, other.Seq, own.Seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("A was not poked for B's event %d", other.Seq)
	}
}
