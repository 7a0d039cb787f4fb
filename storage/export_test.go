package storage

import (
	"context"
	"strings"
)

// SetSyncForTest replaces how the syncer makes batches durable (nil: the
// real fsync of the WAL), so that tests can hold or fail the disk.
func SetSyncForTest(s *Store, sync func() error) {
	if sync == nil {
		sync = s.syncWAL
	}
	s.sync = sync
}

// ProgressLaneOf is the index of the lane legID's changes go to (-1 on
// SQLite, which has none).
func ProgressLaneOf(s *Store, legID string) int {
	if s.lanes == nil {
		return -1
	}
	q := s.lanes.lane(legID)
	for i, l := range s.lanes.queues {
		if l == q {
			return i
		}
	}
	return -1
}

// LiveStatesSQL is the SQL list of the leg table's live states, for tests
// that write the store's queries of live legs out to plan them.
var LiveStatesSQL = liveStatesSQL

// ExecForTest runs a statement of the test's own on the store's database.
func ExecForTest(ctx context.Context, s *Store, q string, args ...any) error {
	_, err := s.execRaw(ctx, q, args...)
	return err
}

// StringsForTest runs a query of one text column and returns its rows.
func StringsForTest(ctx context.Context, s *Store, q string, args ...any) ([]string, error) {
	rows, err := s.queryRaw(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, err
		}
		out = append(out, line)
	}
	return out, rows.Err()
}

// PlanForTest is PostgreSQL's plan of q (EXPLAIN), one line a row.
func PlanForTest(ctx context.Context, s *Store, q string, args ...any) (string, error) {
	lines, err := StringsForTest(ctx, s, "EXPLAIN "+q, args...)
	return strings.Join(lines, "\n"), err
}
