package storage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// Migration 24 took three indexes' worth of entries off every version of
// a leg on PostgreSQL. On a table like a deployment's after a while (most
// legs ended, a few live, a fifth of them guests'), the queries those
// entries served still go through an index: the live legs without a key
// (resync, the node and service counts) through a live partial index,
// a guest's and a user's legs through their partial indexes.
func TestMigration24_TheQueriesOfTheDroppedEntriesStillUseAnIndex(t *testing.T) {
	ctx := context.Background()
	s, err := storage.Open(ctx, apitest.Postgres(t), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	defs, err := storage.StringsForTest(ctx, s, `SELECT indexname || ': ' || indexdef FROM pg_indexes WHERE tablename = 'legs'`)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(defs, "\n")
	if strings.Contains(all, "idx_legs_state:") {
		t.Errorf("idx_legs_state is still there:\n%s", all)
	}
	for _, want := range []string{"WHERE (guest_id IS NOT NULL)", "WHERE (user_id IS NOT NULL)"} {
		if !strings.Contains(all, want) {
			t.Errorf("no index of legs %s:\n%s", want, all)
		}
	}

	// 20,000 legs over 400 conferences and 500 users, every tenth a
	// guest's; the first 20 live, the rest ended.
	if err := storage.ExecForTest(ctx, s, `INSERT INTO legs (id, conference_id, conversation_id, user_id, guest_id, node, number, state, created_at, updated_at)
 SELECT 'l' || g, 'cf' || (g % 400), 'c' || (g % 400),
  CASE WHEN g % 10 = 0 THEN NULL ELSE 'u' || (g % 500) END, CASE WHEN g % 10 = 0 THEN 'g' || g END,
  'n1', '+12025550100', CASE WHEN g <= 20 THEN 'connected' ELSE 'ended' END, now(), now()
 FROM generate_series(1, 20000) AS g`); err != nil {
		t.Fatal(err)
	}
	if err := storage.ExecForTest(ctx, s, `ANALYZE legs`); err != nil {
		t.Fatal(err)
	}
	live := "state IN " + storage.LiveStatesSQL
	for _, c := range []struct {
		what, query, index string
		args               []any
	}{
		{"every live leg (resync of all nodes)", `SELECT id FROM legs WHERE ` + live + ` ORDER BY created_at, id`, "ix_leg_live_", nil},
		{"a node's live legs", `SELECT id FROM legs WHERE ` + live + ` AND node = ? ORDER BY created_at, id`, "ix_leg_live_", []any{"n1"}},
		{"live legs by conference", `SELECT conference_id, COUNT(*) FROM legs WHERE ` + live + ` GROUP BY conference_id`, "ix_leg_live_", nil},
		{"live legs by node", `SELECT node, COUNT(*) AS n FROM legs WHERE ` + live + ` GROUP BY node`, "ix_leg_live_", nil},
		{"a guest's legs", `SELECT id FROM legs WHERE guest_id = ?`, "ix_legs_guest_id", []any{"g10"}},
		{"a user's legs", `SELECT id FROM legs WHERE user_id = ?`, "idx_legs_user_id", []any{"u7"}},
	} {
		plan, err := storage.PlanForTest(ctx, s, c.query, c.args...)
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if !strings.Contains(plan, c.index) || strings.Contains(plan, "Seq Scan on legs") {
			t.Errorf("%s: want a scan of %s, PostgreSQL plans:\n%s", c.what, c.index, plan)
		}
	}
}
