package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/convoice/convoice/storage"
)

// userOf is a test audience: the user_id of the payload.
func userOf(ev storage.Event) []string {
	var d struct {
		UserID string `json:"user_id"`
	}
	if json.Unmarshal([]byte(ev.Data), &d) != nil || d.UserID == "" {
		return nil
	}
	return []string{d.UserID}
}

// Recorded events (written at commit on PostgreSQL) and appended ones
// (written at once) of one transaction keep the order they were made in,
// numbered after the log, across two conversations; every one is
// published once, and the user streams index them in the same order.
func TestRecordEvent_KeepsTheTransactionsOrderAcrossAppendsAndConversations(t *testing.T) {
	s := openTest(t)
	s.SetEventAudience(userOf)
	u, c := seedConversation(t, s)
	_, c2 := seedConversation(t, s)
	ctx := context.Background()
	if _, err := s.AppendEvent(ctx, c.ID, "before", `{}`); err != nil {
		t.Fatal(err)
	}
	var published []storage.Event
	var mu sync.Mutex
	s.OnCommit(func(evs []storage.Event) { mu.Lock(); published = append(published, evs...); mu.Unlock() })
	mine := fmt.Sprintf(`{"user_id":%q}`, u.ID)
	err := s.InTx(ctx, func(tx *storage.Store) error {
		steps := []func() error{
			func() error { return tx.RecordEvent(ctx, c.ID, "a", mine) },
			func() error { _, err := tx.AppendEvent(ctx, c.ID, "b", `{}`); return err },
			func() error { return tx.RecordEvent(ctx, c.ID, "c", mine) },
			func() error { return tx.RecordEvents(ctx, c.ID, "d", []string{`{}`, mine}) },
			func() error { return tx.RecordEvent(ctx, c2.ID, "x", mine) },
			func() error { return tx.RecordEvent(ctx, c.ID, "e", `{}`) },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.EventsAfter(ctx, c.ID, 0, 100)
	if got := gapFreeTypes(t, "conversation log", evs, err); got != "[before a b c d d e]" {
		t.Fatalf("conversation log %v, want [before a b c d d e]", got)
	}
	evs, err = s.EventsAfter(ctx, c2.ID, 0, 100)
	if got := gapFreeTypes(t, "other conversation's log", evs, err); got != "[x]" {
		t.Fatalf("the other conversation's log %v, want [x]", got)
	}
	evs, err = s.UserEventsAfter(ctx, u.ID, 0, 100)
	if got := gapFreeTypes(t, "user stream", evs, err); got != "[a c d x]" {
		t.Fatalf("user stream %v, want [a c d x]", got)
	}
	mu.Lock()
	defer mu.Unlock()
	convSeqs, userSeqs := map[string]int64{}, []int64{}
	for _, ev := range published {
		if ev.ForUser != "" {
			userSeqs = append(userSeqs, ev.Seq)
			continue
		}
		key := fmt.Sprintf("%s/%d", ev.ConversationID, ev.Seq)
		if convSeqs[key]++; convSeqs[key] > 1 {
			t.Fatalf("%s published twice", key)
		}
	}
	if len(convSeqs) != 7 || fmt.Sprint(userSeqs) != "[1 2 3 4]" {
		t.Fatalf("published %d conversation events and user seqs %v; want 7 and [1 2 3 4]", len(convSeqs), userSeqs)
	}
}

// A recorded event of a conversation that does not exist fails the
// transaction (at commit on PostgreSQL): nothing of it is kept.
func TestRecordEvent_UnknownConversationFailsTheTransaction(t *testing.T) {
	s := openTest(t)
	_, c := seedConversation(t, s)
	ctx := context.Background()
	err := s.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.RecordEvent(ctx, c.ID, "kept?", `{}`); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, "no-such-conversation", "t", `{}`)
	})
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("transaction: %v, want ErrNotFound", err)
	}
	if evs, err := s.EventsAfter(ctx, c.ID, 0, 10); err != nil || len(evs) != 0 {
		t.Fatalf("events after the failed transaction: %+v %v", evs, err)
	}
}

// Concurrent transactions recording to one conversation and one user's
// stream: both logs gap-free, each transaction's events consecutive.
func TestRecordEvent_ConcurrentTransactionsGetGapFreeSeqs(t *testing.T) {
	s := openTest(t)
	s.SetEventAudience(userOf)
	u, c := seedConversation(t, s)
	_, c2 := seedConversation(t, s)
	ctx := context.Background()
	mine := fmt.Sprintf(`{"user_id":%q}`, u.ID)
	const txs = 100
	var wg sync.WaitGroup
	errs := make(chan error, txs)
	for i := 0; i < txs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conv := []string{c.ID, c2.ID}[i%2]
			errs <- s.InTx(ctx, func(tx *storage.Store) error {
				for j := 0; j < 3; j++ {
					if err := tx.RecordEvent(ctx, conv, fmt.Sprintf("t%d", i), mine); err != nil {
						return err
					}
				}
				return nil
			})
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, conv := range []string{c.ID, c2.ID} {
		evs, err := s.EventsAfter(ctx, conv, 0, 1000)
		if err != nil || len(evs) != 3*txs/2 {
			t.Fatalf("%d events, %v", len(evs), err)
		}
		for i, ev := range evs {
			if ev.Seq != int64(i+1) || ev.Type != evs[i-i%3].Type {
				t.Fatalf("event %d: seq %d type %s (its transaction's first: %s)", i, ev.Seq, ev.Type, evs[i-i%3].Type)
			}
		}
	}
	stream, err := s.UserEventsAfter(ctx, u.ID, 0, 1000)
	if err != nil || len(stream) != 3*txs {
		t.Fatalf("user stream: %d entries, %v", len(stream), err)
	}
	for i, ev := range stream {
		if ev.Seq != int64(i+1) {
			t.Fatalf("user stream entry %d has seq %d", i, ev.Seq)
		}
	}
}

// gapFreeTypes checks that evs are numbered 1, 2, … and lists their types.
func gapFreeTypes(t *testing.T, what string, evs []storage.Event, err error) string {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var types []string
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("%s: entry %d has seq %d", what, i, ev.Seq)
		}
		types = append(types, ev.Type)
	}
	return fmt.Sprint(types)
}
