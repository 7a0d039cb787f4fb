package storage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// DialLimit is one limit a dial decision counts: the calls up in Scope
// (live legs plus grants not yet released, made after Since) when Live,
// else the grants in Scope made after Since (the rate window). A dial is
// granted while every count is below its Max.
type DialLimit struct {
	Scope DialScope
	Live  bool
	Since time.Time
	Max   int
}

// DecideDial counts limits and, when every count is below its Max,
// records g — one atomic step for the scopes named by keys (LockScopes):
// two decisions with a key in common are serialised, so each limit whose
// scope is among the keys is exact; a limit on a scope no key names (the
// whole service) reads what is committed when it counts, so concurrent
// decisions may each miss the others' grants: such a limit is exceeded by
// at most the number of decisions running at the same moment.
//
// On PostgreSQL it is one round trip: the scope locks and a statement that
// counts and conditionally inserts go out as one pgx batch, which the
// server runs as one implicit transaction (the locks are held until its
// end; the counting statement takes its snapshot after they are held). On
// SQLite it runs in the writer's transaction, exclusive anyway.
//
// It returns the counts, in the order of limits, and whether g was
// recorded.
func (s *Store) DecideDial(ctx context.Context, keys []string, limits []DialLimit, g *DialGrant) ([]int64, bool, error) {
	g.At = g.At.UTC()
	if s.dialect == "postgres" && s.pending == nil {
		return s.decideDialPG(ctx, keys, limits, g)
	}
	var counts []int64
	var granted bool
	err := s.InTx(ctx, func(tx *Store) error {
		if err := tx.LockScopes(ctx, keys...); err != nil {
			return err
		}
		q, args := dialCountsSQL(limits, nil)
		row, err := tx.queryRowRaw(ctx, q, args...)
		if err != nil {
			return err
		}
		counts = make([]int64, len(limits))
		dst := make([]any, len(limits))
		for i := range counts {
			dst[i] = &counts[i]
		}
		if len(limits) > 0 {
			if err := row.Scan(dst...); err != nil {
				return err
			}
		}
		if !under(counts, limits) {
			return nil
		}
		granted = true
		_, err = tx.execRaw(ctx, insertGrantSQL+` VALUES (?,?,?,?,?,?,?,?)`, grantArgs(g)...)
		return err
	})
	return counts, granted, err
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

func grantArgs(g *DialGrant) []any {
	return []any{g.ID, g.At, g.UserID, g.GuestID, g.ConversationID, g.Number, g.Released, g.Account}
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
		gw, ga := l.Scope.sqlWhere(true)
		if l.Live {
			la := l.Scope.liveLegsSQL(&b)
			args = append(args, la...)
			fmt.Fprintf(&b, " + (SELECT count(*) FROM dial_grants WHERE at > ? AND released = ?%s)", gw)
			args = append(args, l.Since.UTC(), false)
		} else {
			fmt.Fprintf(&b, "(SELECT count(*) FROM dial_grants WHERE at > ?%s)", gw)
			args = append(args, l.Since.UTC())
		}
		args = append(args, ga...)
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

// decideDialPG is DecideDial in one pgx batch: the locks, then counting
// and the conditional insert in one statement (a data-modifying CTE).
func (s *Store) decideDialPG(ctx context.Context, keys []string, limits []DialLimit, g *DialGrant) ([]int64, bool, error) {
	plan := s.svc.plan(limits, g.At)
	lock, ids := lockScopesSQL(keys)
	stmt, args := decideDialSQL(limits, g, plan.known)
	var counts []int64
	var granted bool
	err := s.pgConn(ctx, func(c *pgx.Conn) error {
		b := &pgx.Batch{}
		if lock != "" {
			b.Queue(lock, ids...)
		}
		b.Queue(stmt, args...)
		br := c.SendBatch(ctx, b)
		if lock != "" {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
		}
		var err error
		if counts, granted, err = scanDecision(br.QueryRow(), limits); err != nil {
			br.Close()
			return err
		}
		return br.Close()
	})
	if err := s.noteWrite(err); err != nil {
		s.svc.done(plan, nil, nil, false)
		return nil, false, err
	}
	s.svc.done(plan, limits, counts, granted)
	return counts, granted, nil
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

// DecideDialIn is DecideDial in a write transaction, the dial's own: the
// grant commits with the leg (or not at all), and there is no transaction
// of its own to pay for. In a pipelined PostgreSQL transaction the scope
// locks and the counting statement go out with the transaction's next
// statement, and d is filled once that statement has returned; elsewhere
// d is filled now. The scope locks are held to the end of the transaction.
func (s *Store) DecideDialIn(ctx context.Context, keys []string, limits []DialLimit, g *DialGrant, d *DialDecision) error {
	g.At = g.At.UTC()
	*d = DialDecision{}
	if s.pipe == nil {
		counts, granted, err := s.DecideDial(ctx, keys, limits, g)
		if err == nil {
			*d = DialDecision{Counts: counts, Granted: granted}
		}
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

// pgConn runs fn on a pool connection's pgx.Conn (for batches).
func (s *Store) pgConn(ctx context.Context, fn func(c *pgx.Conn) error) error {
	conn, err := s.stmts.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("postgres connection is %T, not pgx", dc)
		}
		return fn(sc.Conn())
	})
}
