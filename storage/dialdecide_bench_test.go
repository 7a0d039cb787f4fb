package storage

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/storage/pgtest"
)

// BenchmarkDialDecision is the store's side of a dial's decision as the
// dial policy makes it by default: eight counts (the user's, the
// conversation's, the account's and the service's calls up; their dials in
// the rate window) and the grant, each in a transaction of its own with
// the scopes' locks, by 16 goroutines, one user and conversation each.
// On PostgreSQL (CONVOICE_TEST_POSTGRES) each decision is one round trip
// and its COMMIT.
//
//	CONVOICE_TEST_POSTGRES=<dsn> go test -run '^$' -bench DialDecision -benchtime 4000x -count 4 ./storage/
func BenchmarkDialDecision(b *testing.B) {
	const workers = 16
	s, err := Open(context.Background(), pgtest.DSN(b, filepath.Join(b.TempDir(), "decide.db")), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	type worker struct{ user, conv string }
	var ws []worker
	for i := 0; i < workers; i++ {
		u, conf := seedConference(b, s, fmt.Sprint("decide", i))
		ws = append(ws, worker{user: u.ID, conv: conf.ConversationID})
	}
	limits := func(w worker, now time.Time) []DialLimit {
		since := now.Add(-time.Minute)
		return []DialLimit{
			{Scope: DialScope{UserID: w.user}, Live: true, Max: 1 << 30},
			{Scope: DialScope{ConversationID: w.conv}, Live: true, Max: 1 << 30},
			{Scope: DialScope{Account: w.user}, Live: true, Max: 1 << 30},
			{Live: true, Max: 1 << 30},
			{Scope: DialScope{UserID: w.user}, Since: since, Max: 1 << 30},
			{Scope: DialScope{ConversationID: w.conv}, Since: since, Max: 1 << 30},
			{Scope: DialScope{Account: w.user}, Since: since, Max: 1 << 30},
			{Since: since, Max: 1 << 30},
		}
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + workers - 1) / workers
	for wi, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				now := time.Now()
				g := &DialGrant{ID: fmt.Sprintf("g-%d-%d", wi, i), At: now, UserID: w.user, ConversationID: w.conv, Number: "+12025550100", Account: w.user}
				var d DialDecision
				keys := []string{"dial:user:" + w.user, "dial:conv:" + w.conv}
				if err := s.DecideDialIn(ctx, keys, limits(w, now), g, &d); err != nil {
					b.Error(err)
					return
				}
				if !d.Granted {
					b.Errorf("refused: %v", d.Counts)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*workers)/b.Elapsed().Seconds(), "decisions/s")
}
