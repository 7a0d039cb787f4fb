package storage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// progressLeg is a leg of its own conversation (or of conf's, when given)
// for the call progress tests.
func progressLeg(t *testing.T, s *Store, conf *Conference, id string) Leg {
	t.Helper()
	l := Leg{ID: id, ConferenceID: conf.ID, ConversationID: conf.ConversationID, Node: conf.Node,
		Number: "+12025550100", State: LegRinging, CreatedAt: conf.CreatedAt, UpdatedAt: conf.CreatedAt}
	if err := s.CreateLeg(context.Background(), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// countChange is a change of a leg as the call progress makes it: the leg
// locked, its row written, an event recorded. It counts in the leg's
// cause, and fails when the leg's last change was not want-1 (out of
// order).
func countChange(ctx context.Context, legID string, want int) func(tx *Store) error {
	return func(tx *Store) error {
		l, err := tx.LockLeg(ctx, legID)
		if err != nil {
			return err
		}
		if l.Cause != want-1 {
			return fmt.Errorf("leg %s: change %d applied after change %d", legID, want, l.Cause)
		}
		l.Cause = want
		if err := tx.SaveLeg(ctx, l); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, l.ConversationID, "leg.updated", legID+" "+strconv.Itoa(want))
	}
}

// holdLane queues a change that holds the lane of legID's changes until
// release is called (on SQLite: the one writer), so that the changes
// queued meanwhile wait together and go in one batch.
func holdLane(t *testing.T, s *Store, legID string) (release func()) {
	t.Helper()
	ch, held := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	s.InTxLeg(context.Background(), legID, func(tx *Store) error {
		close(held)
		<-ch
		return nil
	}, func(err error) { done <- err })
	<-held
	return func() {
		close(ch)
		if err := <-done; err != nil {
			t.Fatalf("the holding change: %v", err)
		}
	}
}

// idsOfLane are n leg ids of conf whose changes go to the lane of
// legID's (all of them on SQLite).
func idsOfLane(s *Store, conf *Conference, legID string, n int) []string {
	var ids []string
	for i := 0; len(ids) < n; i++ {
		if id := fmt.Sprintf("%s-%d", conf.ID, i); ProgressLaneOf(s, id) == ProgressLaneOf(s, legID) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Queued changes of many legs (two of them in one conversation) are all
// applied, each leg's in the order they were queued; each conversation's
// log is numbered without a gap; the events are announced once, after
// commit; and on PostgreSQL they went in batches.
func TestInTxLeg_AppliesEveryLegsChangesInOrder(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	var batched atomic.Int64 // changes committed in batches of more than one
	s.OnProgressBatch(func(n int) {
		if n > 1 {
			batched.Add(int64(n))
		}
	})
	var mu sync.Mutex
	announced := map[string][]int64{}
	s.OnCommit(func(evs []Event) {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range evs {
			if ev.ForUser == "" {
				announced[ev.ConversationID] = append(announced[ev.ConversationID], ev.Seq)
			}
		}
	})
	var legs []Leg
	for i := range 6 {
		_, conf := seedConference(t, s, fmt.Sprint("p", i))
		legs = append(legs, progressLeg(t, s, conf, conf.ID+"-a"))
		if i == 0 {
			legs = append(legs, progressLeg(t, s, conf, conf.ID+"-b"))
		}
	}
	const changes = 25
	var wg sync.WaitGroup
	errs := make(chan error, len(legs)*changes)
	for k := 1; k <= changes; k++ {
		for _, l := range legs {
			wg.Add(1)
			s.InTxLeg(ctx, l.ID, countChange(ctx, l.ID, k), func(err error) {
				if err != nil {
					errs <- err
				}
				wg.Done()
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	convs := map[string]int{}
	for _, l := range legs {
		got, err := s.GetLeg(ctx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Cause != changes {
			t.Errorf("leg %s: %d changes applied, want %d", l.ID, got.Cause, changes)
		}
		convs[l.ConversationID] += changes
	}
	for conv, n := range convs {
		evs, err := s.EventsAfter(ctx, conv, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		last := map[string]int{}
		var seqs []int64
		for i, ev := range evs {
			if ev.Seq != int64(i)+1 {
				t.Fatalf("conversation %s: event %d has seq %d; want a log without gaps", conv, i, ev.Seq)
			}
			var leg string
			var k int
			fmt.Sscanf(ev.Data, "%s %d", &leg, &k)
			if k != last[leg]+1 {
				t.Errorf("conversation %s: %s's change %d logged after its change %d", conv, leg, k, last[leg])
			}
			last[leg] = k
			seqs = append(seqs, ev.Seq)
		}
		if len(evs) != n {
			t.Errorf("conversation %s: %d events, want %d", conv, len(evs), n)
		}
		mu.Lock()
		got := fmt.Sprint(announced[conv])
		mu.Unlock()
		if got != fmt.Sprint(seqs) {
			t.Errorf("conversation %s: announced %s, want each event once, in order: %v", conv, got, seqs)
		}
	}
	if s.dialect == "postgres" && batched.Load() == 0 {
		t.Error("no change went in a batch: PostgreSQL applied them one per transaction")
	}
}

// A change that fails in a batch (its leg does not exist) is answered
// with its own error; the batch's other changes are applied once each,
// not lost with the batch and not twice.
func TestInTxLeg_AFailingChangeFailsAlone(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	_, conf := seedConference(t, s, "f")
	_, other := seedConference(t, s, "g")
	// Legs of one lane (PostgreSQL), so that they wait together behind
	// the change that holds it.
	ids := idsOfLane(s, conf, conf.ID+"-hold", 3)
	a := progressLeg(t, s, conf, ids[0])
	b := progressLeg(t, s, other, ids[1])
	missing := ids[2]
	release := holdLane(t, s, conf.ID+"-hold")
	answers := make([]chan error, 3)
	for i, id := range []string{a.ID, missing, b.ID} {
		answers[i] = make(chan error, 1)
		ch := answers[i]
		s.InTxLeg(ctx, id, countChange(ctx, id, 1), func(err error) { ch <- err })
	}
	release()
	for i, want := range []error{nil, ErrNotFound, nil} {
		select {
		case err := <-answers[i]:
			if !errors.Is(err, want) && err != want {
				t.Errorf("change %d: %v, want %v", i, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("change %d was never answered", i)
		}
	}
	for _, l := range []Leg{a, b} {
		got, err := s.GetLeg(ctx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := s.EventsAfter(ctx, l.ConversationID, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if got.Cause != 1 || len(evs) != 1 {
			t.Errorf("leg %s: cause %d, %d events; want its change applied once", l.ID, got.Cause, len(evs))
		}
	}
}

// In a transaction that locked its conversations first (a batch), events
// recorded for several conversations are numbered per conversation, also
// when an appended event (whose seq is needed at once) comes between
// them.
func TestRecordEvent_SpansConversationsInABatch(t *testing.T) {
	s := openLegTest(t, "")
	if s.dialect != "postgres" {
		// SQLite has no batches of this kind: one writer runs every
		// transaction, each of them appending at once.
		return
	}
	ctx := context.Background()
	_, c1 := seedConference(t, s, "s1")
	_, c2 := seedConference(t, s, "s2")
	if _, err := s.AppendEvent(ctx, c2.ConversationID, "x", "c2 before"); err != nil {
		t.Fatal(err)
	}
	var events []Event
	err := s.pgTx(ctx, &events, true, func(tx *Store) error {
		if err := tx.LockConversation(ctx, c1.ConversationID); err != nil {
			return err
		}
		if err := tx.LockConversation(ctx, c2.ConversationID); err != nil {
			return err
		}
		for _, st := range []struct{ conv, data string }{{c1.ConversationID, "c1 a"}, {c2.ConversationID, "c2 a"}, {c1.ConversationID, "c1 b"}} {
			if err := tx.RecordEvent(ctx, st.conv, "x", st.data); err != nil {
				return err
			}
		}
		ev, err := tx.AppendEvent(ctx, c2.ConversationID, "x", "c2 b")
		if err != nil {
			return err
		}
		if ev.Seq != 3 {
			t.Errorf("appended event of c2: seq %d, want 3", ev.Seq)
		}
		return tx.RecordEvent(ctx, c1.ConversationID, "x", "c1 c")
	})
	if err != nil {
		t.Fatal(err)
	}
	for conv, want := range map[string]string{
		c1.ConversationID: "[1:c1 a 2:c1 b 3:c1 c]",
		c2.ConversationID: "[1:c2 before 2:c2 a 3:c2 b]",
	} {
		evs, err := s.EventsAfter(ctx, conv, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ev := range evs {
			got = append(got, fmt.Sprintf("%d:%s", ev.Seq, ev.Data))
		}
		if fmt.Sprint(got) != want {
			t.Errorf("conversation %s: %v, want %s", conv, got, want)
		}
	}
	if len(events) != 5 {
		t.Errorf("the transaction's events: %d, want the 5 it wrote", len(events))
	}
}

// surroundingsAfter queues first, a change of legID, and behind it, in
// the same batch, a change that reads legID's surroundings: what that
// second change saw.
func surroundingsAfter(t *testing.T, s *Store, legID string, first func(tx *Store) error) LegSurroundings {
	t.Helper()
	ctx := context.Background()
	release := holdLane(t, s, legID)
	seen := make(chan LegSurroundings, 4)
	answers := make(chan error, 2)
	answer := func(err error) { answers <- err }
	s.InTxLeg(ctx, legID, first, answer)
	s.InTxLeg(ctx, legID, func(tx *Store) error {
		_, sur, err := lockWithSurroundings(ctx, tx, legID)
		if err != nil {
			return err
		}
		seen <- sur
		return nil
	}, answer)
	release()
	for range 2 {
		if err := <-answers; err != nil {
			t.Fatal(err)
		}
	}
	// A batch that failed and ran again has told more than once: the
	// last is what was committed.
	var sur LegSurroundings
	for len(seen) > 0 {
		sur = <-seen
	}
	return sur
}

// A change that writes more than its leg (here: it ends the conference)
// is seen by the next change of the same leg in the batch, which must
// not be answered from what the batch read at its start; also when the
// change locked a leg of another conference after its own (the
// conference it ended is the first it took, not the last).
func TestInTxLeg_AChangeThatWritesMoreIsSeenByTheNext(t *testing.T) {
	for _, alsoOther := range []bool{false, true} {
		t.Run(fmt.Sprint("another conference's leg locked too: ", alsoOther), func(t *testing.T) {
			s := openLegTest(t, "")
			ctx := context.Background()
			_, conf := seedConference(t, s, "w")
			_, other := seedConference(t, s, "x")
			a := progressLeg(t, s, conf, conf.ID+"-a")
			b := progressLeg(t, s, other, other.ID+"-b")
			sur := surroundingsAfter(t, s, a.ID, func(tx *Store) error {
				if _, err := tx.LockLeg(ctx, a.ID); err != nil {
					return err
				}
				if alsoOther {
					if _, err := tx.LockLeg(ctx, b.ID); err != nil {
						return err
					}
				}
				_, err := tx.EndConference(ctx, conf.ID, "test", time.Now())
				return err
			})
			if sur.ConferenceState != ConferenceEnded {
				t.Errorf("the conference, as the change after its end saw it: %q, want %q", sur.ConferenceState, ConferenceEnded)
			}
		})
	}
}

// A change of one leg that saves another leg of its conference (the end
// of the other call) is seen by the first leg's next change in the batch:
// the other call is not live any more.
func TestInTxLeg_AnotherLegSavedIsSeenByTheNext(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	_, conf := seedConference(t, s, "o")
	a := progressLeg(t, s, conf, conf.ID+"-a")
	b := progressLeg(t, s, conf, conf.ID+"-b")
	sur := surroundingsAfter(t, s, a.ID, func(tx *Store) error {
		if _, err := tx.LockLeg(ctx, a.ID); err != nil {
			return err
		}
		ended := b
		ended.State = LegEnded
		return tx.SaveLeg(ctx, &ended)
	})
	if sur.OtherLive {
		t.Error("after the other call's end, the next change saw it still live")
	}
}

// twoCallsInOneBatch makes two calls of one conference in state, and
// changes each by change in one batch (after reading its surroundings):
// what each change saw.
func twoCallsInOneBatch(t *testing.T, s *Store, state string, change func(l *Leg)) []LegSurroundings {
	t.Helper()
	ctx := context.Background()
	_, conf := seedConference(t, s, "two")
	var legs []Leg
	for _, id := range idsOfLane(s, conf, conf.ID+"-hold", 2) {
		l := progressLeg(t, s, conf, id)
		l.State = state
		if err := s.SaveLeg(ctx, &l); err != nil {
			t.Fatal(err)
		}
		legs = append(legs, l)
	}
	release := holdLane(t, s, conf.ID+"-hold")
	seen := make([]LegSurroundings, len(legs))
	var wg sync.WaitGroup
	for i, l := range legs {
		wg.Add(1)
		s.InTxLeg(ctx, l.ID, func(tx *Store) error {
			got, sur, err := lockWithSurroundings(ctx, tx, l.ID)
			if err != nil {
				return err
			}
			seen[i] = sur
			change(got)
			return tx.SaveLeg(ctx, got)
		}, func(err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	release()
	wg.Wait()
	return seen
}

// Two calls of one conference ending in one batch: the first sees the
// other still up, the second sees that it is the last (a batch reads its
// legs at its start; a change after another of the same conference must
// see that one's writes, or the conference would never end).
func TestInTxLeg_ASecondChangeOfAConferenceSeesTheFirst(t *testing.T) {
	seen := twoCallsInOneBatch(t, openLegTest(t, ""), LegConnected, func(l *Leg) { l.State = LegEnded })
	if !seen[0].OtherLive || seen[1].OtherLive {
		t.Errorf("other call live, as each end saw it: %v, %v; want true, false", seen[0].OtherLive, seen[1].OtherLive)
	}
}

// Two calls of one conference connected in one batch: the second sees
// that another call has been connected (the first one connected invites
// the others, the second must not invite them again).
func TestInTxLeg_TheSecondCallConnectedSeesTheFirst(t *testing.T) {
	seen := twoCallsInOneBatch(t, openLegTest(t, ""), LegRinging, func(l *Leg) {
		now := time.Now().UTC()
		l.State, l.ConnectedAt = LegConnected, &now
	})
	if seen[0].OtherConnected || !seen[1].OtherConnected {
		t.Errorf("another call connected, as each saw it: %v, %v; want false, true", seen[0].OtherConnected, seen[1].OtherConnected)
	}
}
