package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/convoice/convoice/storage/pgtest"
)

// BenchmarkLegChange is the store's side of a leg's change of state (a
// PBX event applied): the leg locked with its conversation, its row
// written, and its leg.updated event with the event's fan-out to the
// leg's user's own stream, by 16 goroutines, one leg and conversation
// each, as fast as they commit. "without-event" leaves the event out: the
// difference is what the event log, its fan-out and its NOTIFY cost. On
// PostgreSQL (CONVOICE_TEST_POSTGRES) each change is one transaction of
// two round trips.
//
//	CONVOICE_TEST_POSTGRES=<dsn> go test -run '^$' -bench LegChange -benchtime 4000x -count 4 ./storage/
//
// "queued" is "with-event" as the PBX's call progress applies it
// (InTxLeg): on PostgreSQL the changes waiting are applied in batches,
// several per transaction. As a call's progress comes, each goroutine
// queues two changes of its leg at once (ringing and connected, say) and
// waits for their answers before the next two; and here two legs share
// each conference.
func BenchmarkLegChange(b *testing.B) {
	for _, mode := range []string{"with-event", "without-event", "queued"} {
		b.Run(mode, func(b *testing.B) { benchLegChange(b, mode != "without-event", mode == "queued") })
	}
}

func benchLegChange(b *testing.B, withEvent, queued bool) {
	const workers = 16
	s, err := Open(context.Background(), pgtest.DSN(b, filepath.Join(b.TempDir(), "legs.db")), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	s.SetEventAudience(func(ev Event) []string { return []string{ev.Data} })
	type worker struct {
		leg  Leg
		user string
	}
	var ws []*worker
	for i := 0; i < workers; i++ {
		tag := fmt.Sprint("bench", i)
		u, conf := seedConference(b, s, tag)
		if queued && i%2 == 1 {
			conf = &Conference{ID: ws[i-1].leg.ConferenceID, ConversationID: ws[i-1].leg.ConversationID, Node: ws[i-1].leg.Node, CreatedAt: ws[i-1].leg.CreatedAt}
		}
		l := Leg{ID: fmt.Sprint(conf.ID, "-l", i), ConferenceID: conf.ID, ConversationID: conf.ConversationID, UserID: &u.ID, Node: conf.Node,
			Number: "+12025550100", State: LegConnected, CreatedAt: conf.CreatedAt, UpdatedAt: conf.CreatedAt}
		if err := s.CreateLeg(ctx, &l); err != nil {
			b.Fatal(err)
		}
		ws = append(ws, &worker{leg: l, user: u.ID})
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + workers - 1) / workers
	for _, w := range ws {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			step := 1
			if queued {
				step = 2
			}
			for i := 0; i < per; i += step {
				change := func(tx *Store) error {
					l, err := tx.LockLeg(ctx, w.leg.ID)
					if err != nil {
						return err
					}
					l.Talking = !l.Talking
					if err := tx.SaveLeg(ctx, l); err != nil {
						return err
					}
					if !withEvent {
						return nil
					}
					return tx.RecordEvent(ctx, l.ConversationID, "leg.updated", w.user)
				}
				var err error
				if queued {
					answer := make(chan error, 2)
					s.InTxLeg(ctx, w.leg.ID, change, func(err error) { answer <- err })
					s.InTxLeg(ctx, w.leg.ID, change, func(err error) { answer <- err })
					err = errors.Join(<-answer, <-answer)
				} else {
					err = s.InTx(ctx, change)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	b.ReportMetric(float64(per*workers)/b.Elapsed().Seconds(), "changes/s")
}
