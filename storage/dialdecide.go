package storage

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// DialLimit is one limit a dial decision counts: the calls up in Scope
// (its live legs) when Live, else the grants in Scope made after Since
// (the rate window). A dial is granted while every count is below its Max.
// A granted dial's leg is written in the grant's transaction, so the
// calls up include every dial allowed before.
type DialLimit struct {
	Scope DialScope
	Live  bool
	Since time.Time
	Max   int
}

func under(counts []int64, limits []DialLimit) bool {
	for i, l := range limits {
		if counts[i] >= int64(l.Max) {
			return false
		}
	}
	return true
}

const insertGrantSQL = `INSERT INTO dial_grants (id, at, user_id, guest_id, conversation_id, number, released, account)`

// grantArgs are insertGrantSQL's values; released is always true (see
// DialGrant).
func grantArgs(g *DialGrant) []any {
	return []any{g.ID, g.At, g.UserID, g.GuestID, g.ConversationID, g.Number, true, g.Account}
}

// dialCountsSQL is one SELECT of one count per limit ("SELECT 0" for none).
// known holds, for some limits, a count to use instead of counting
// (serviceCounts' estimates); nil counts every limit.
func dialCountsSQL(limits []DialLimit, known map[int]int64) (string, []any) {
	if len(limits) == 0 {
		return "SELECT 0", nil
	}
	var b strings.Builder
	var args []any
	b.WriteString("SELECT ")
	for i, l := range limits {
		if i > 0 {
			b.WriteString(", ")
		}
		if n, ok := known[i]; ok {
			b.WriteString("?::bigint")
			args = append(args, n)
			fmt.Fprintf(&b, " AS n%d", i)
			continue
		}
		if l.Live {
			args = append(args, l.Scope.liveLegsSQL(&b)...)
		} else {
			gw, ga := l.Scope.sqlWhere(true)
			fmt.Fprintf(&b, "(SELECT count(*) FROM dial_grants WHERE at > ?%s)", gw)
			args = append(args, l.Since.UTC())
			args = append(args, ga...)
		}
		fmt.Fprintf(&b, " AS n%d", i)
	}
	return b.String(), args
}

// liveLegsSQL writes the count of the scope's live legs to b and returns
// its arguments. An account's legs are counted in two parts, the user's
// own (on PostgreSQL through the partial index of live legs by user,
// migration 23) and their link guests' (by guest): one condition
// "user_id = ? OR guest_id IN (…)" made PostgreSQL walk every live leg of
// the service on every decision.
func (sc DialScope) liveLegsSQL(b *strings.Builder) []any {
	if sc.Account == "" {
		w, args := sc.sqlWhere(false)
		fmt.Fprintf(b, "(SELECT count(*) FROM legs WHERE state IN %s%s)", liveStatesSQL, w)
		return args
	}
	rest := sc
	rest.Account = ""
	w, wa := rest.sqlWhere(false)
	var args []any
	fmt.Fprintf(b, "(SELECT count(*) FROM legs WHERE state IN %s AND user_id = ?%s)", liveStatesSQL, w)
	args = append(args, sc.Account)
	args = append(args, wa...)
	fmt.Fprintf(b, " + (SELECT count(*) FROM legs WHERE state IN %s AND guest_id IN (SELECT g.id FROM guests g JOIN join_links j ON j.id = g.join_link_id WHERE j.created_by = ?)%s)", liveStatesSQL, w)
	args = append(args, sc.Account)
	args = append(args, wa...)
	return args
}

// sqlWhere is where for raw SQL: " AND …" conditions and their arguments.
func (sc DialScope) sqlWhere(grants bool) (string, []any) {
	var b strings.Builder
	var args []any
	if sc.UserID != "" {
		b.WriteString(" AND user_id = ?")
		args = append(args, sc.UserID)
	}
	if sc.GuestID != "" {
		b.WriteString(" AND guest_id = ?")
		args = append(args, sc.GuestID)
	}
	if sc.ConversationID != "" {
		b.WriteString(" AND conversation_id = ?")
		args = append(args, sc.ConversationID)
	}
	if sc.Account != "" && grants {
		// (Legs have no account column: liveLegsSQL counts theirs.)
		b.WriteString(" AND account = ?")
		args = append(args, sc.Account)
	}
	if sc.AnyGuest {
		if grants {
			b.WriteString(" AND guest_id <> ''")
		} else {
			b.WriteString(" AND guest_id IS NOT NULL")
		}
	}
	return b.String(), args
}

// decideDialSQL is the decision's statement on PostgreSQL: the counts
// (known ones given, see serviceCounts) and the grant inserted when every
// count is below its limit; it returns the counts and 1 when it inserted.
func decideDialSQL(limits []DialLimit, g *DialGrant, known map[int]int64) (string, []any) {
	q, args := dialCountsSQL(limits, known)
	var cond []string
	for i, l := range limits {
		cond = append(cond, fmt.Sprintf("c.n%d < %d", i, l.Max))
	}
	if len(cond) == 0 {
		cond = []string{"TRUE"}
	}
	cols := []string{}
	for i := range limits {
		cols = append(cols, fmt.Sprintf("c.n%d", i))
	}
	stmt := `WITH c AS (` + q + `), ins AS (` + insertGrantSQL + ` SELECT ?::varchar, ?::timestamptz, ?::varchar, ?::varchar, ?::varchar, ?::varchar, ?::boolean, ?::varchar FROM c WHERE ` +
		strings.Join(cond, " AND ") + ` RETURNING 1) SELECT ` + strings.Join(append(cols, "(SELECT count(*) FROM ins)"), ", ") + ` FROM c`
	return rebind("postgres", stmt), append(args, grantArgs(g)...)
}

// scanDecision reads decideDialSQL's row.
func scanDecision(r scanner, limits []DialLimit) ([]int64, bool, error) {
	counts := make([]int64, len(limits))
	dst := make([]any, 0, len(limits)+1)
	for i := range counts {
		dst = append(dst, &counts[i])
	}
	var n int64
	dst = append(dst, &n)
	if err := r.Scan(dst...); err != nil {
		return nil, false, err
	}
	return counts, n == 1, nil
}

// DialDecision is the outcome of DecideDialIn: the counts, in the order of
// the limits, and whether the grant was recorded.
type DialDecision struct {
	Counts  []int64
	Granted bool
}

// DecideDialIn counts limits and, when every count is below its Max,
// records g — one atomic step for the scopes named by keys (LockScopes):
// two decisions with a key in common are serialised, so each limit whose
// scope is among the keys is exact; a limit on a scope no key names (the
// whole service) reads what is committed when it counts, so concurrent
// decisions may each miss the others' grants: such a limit is exceeded by
// at most the number of decisions running at the same moment. d gets the
// counts, in the order of limits, and whether g was recorded.
//
// In a write transaction (the dial's own: the grant commits with the leg,
// or not at all) the scope locks are held to its end. In a pipelined
// PostgreSQL transaction the scope locks and the counting statement (the
// service-wide counts estimated where serviceCounts allows) go out with
// the transaction's next statement, and d is filled once that statement
// has returned; on SQLite (the writer's transaction, exclusive anyway) d
// is filled now. Outside a transaction it makes one: on PostgreSQL one
// round trip (BEGIN, the locks, the counting statement and COMMIT).
func (s *Store) DecideDialIn(ctx context.Context, keys []string, limits []DialLimit, g *DialGrant, d *DialDecision) error {
	g.At = g.At.UTC()
	*d = DialDecision{}
	if s.pending == nil {
		return s.InTx(ctx, func(tx *Store) error { return tx.DecideDialIn(ctx, keys, limits, g, d) })
	}
	if s.pipe == nil { // SQLite: the writer's transaction
		q, args := dialCountsSQL(limits, nil)
		row, err := s.queryRowRaw(ctx, q, args...)
		if err != nil {
			return err
		}
		counts := make([]int64, len(limits))
		dst := make([]any, len(limits))
		for i := range counts {
			dst[i] = &counts[i]
		}
		if len(limits) > 0 {
			if err := row.Scan(dst...); err != nil {
				return err
			}
		}
		*d = DialDecision{Counts: counts}
		if !under(counts, limits) {
			return nil
		}
		d.Granted = true
		_, err = s.execRaw(ctx, insertGrantSQL+` VALUES (?,?,?,?,?,?,?,?)`, grantArgs(g)...)
		return err
	}
	plan := s.svc.plan(limits, g.At)
	if lock, ids := lockScopesSQL(keys); lock != "" {
		s.pipe.execLater(lock, ids...)
	}
	stmt, args := decideDialSQL(limits, g, plan.known)
	s.pipe.readLater(stmt, args, func(r scanner) error {
		counts, granted, err := scanDecision(r, limits)
		if err != nil {
			s.svc.done(plan, nil, nil, false)
			return err
		}
		*d = DialDecision{Counts: counts, Granted: granted}
		s.svc.done(plan, limits, counts, granted)
		return nil
	}, func() { s.svc.done(plan, nil, nil, false) })
	return nil
}
