package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The queries on the dial path (every join, every PBX event) run as
// prepared statements on database/sql directly: gorm's reflection and
// statement building cost three times what SQLite itself does for a
// primary-key read, and that cost is paid inside the single-writer section
// where it delays every other request. Everything else stays on gorm.

// sqlConn is what *sql.DB, *sql.Conn and *sql.Tx offer.
type sqlConn interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// stmtCache holds statements prepared on the pool, reused inside
// transactions through Tx.StmtContext (which reuses the connection's
// prepared statement when it has one).
type stmtCache struct {
	db    *sql.DB
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func (c *stmtCache) get(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.stmts[query]; ok {
		return st, nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = st
	return st, nil
}

// rebind turns ? placeholders into PostgreSQL's $n. The texts are few
// and asked for again and again (every statement of every transaction),
// so each is rewritten once and remembered: rewriting them rune by rune
// was 8% of a replica's CPU on the dial path (BenchmarkDialOutReplicas,
// CONVOICE_BENCH_REPLICAS_PROFILE). The texts built per call (lists of
// values, scope locks) come in a bounded number of shapes; past
// maxRebound remembered texts, the rest are rewritten each time.
func rebind(dialect, q string) string {
	if dialect != "postgres" {
		return q
	}
	if r, ok := rebound.Load(q); ok {
		return r.(string)
	}
	r := rebindNow(q)
	if reboundN.Load() < maxRebound {
		if _, had := rebound.LoadOrStore(q, r); !had {
			reboundN.Add(1)
		}
	}
	return r
}

var (
	rebound  sync.Map // query with ? → with $n
	reboundN atomic.Int64
)

const maxRebound = 4096

func rebindNow(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// sqlTx returns the transaction this store runs in, or nil on the root.
func (s *Store) sqlTx() *sql.Tx {
	if s.pending == nil {
		return nil
	}
	tx, _ := s.db.Statement.ConnPool.(*sql.Tx)
	return tx
}

// stmt returns a prepared statement for query: on the SQLite writer's
// connection in the writer's transactions, bound to this store's other
// transaction when there is one, else on the pool.
func (s *Store) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if s.wconn != nil {
		return s.wconn.stmt(ctx, query)
	}
	st, err := s.stmts.get(ctx, rebind(s.dialect, query))
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", query, err)
	}
	if tx := s.sqlTx(); tx != nil {
		return tx.StmtContext(ctx, st), nil
	}
	return st, nil
}

// stmtCtx is the context a statement runs with, or the error of a caller
// already gone. The SQLite writer's statements run without their caller's
// cancellation: SQLite answers a write interrupted inside a transaction by
// rolling the whole transaction back, and the writer's transaction is a
// batch of many callers' work
// (TestWriterBatch_ACallerGoneMidStatementUndoesOnlyItsOwnWork). A statement
// that has started runs to its end; the next one of a caller that has gone
// fails with its context's error, and its transaction alone is undone. It
// also spares each statement the goroutines that database/sql and the
// driver start to watch a context that can end.
func (s *Store) stmtCtx(ctx context.Context) (context.Context, error) {
	if s.wconn == nil {
		return ctx, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

// conn is where a raw statement runs: this store's transaction, or the pool.
func (s *Store) conn() sqlConn {
	if s.wconn != nil {
		return s.wconn.conn
	}
	if tx := s.sqlTx(); tx != nil {
		return tx
	}
	return s.stmts.db
}

// On PostgreSQL statements go straight to the connection: pgx keeps its own
// per-connection statement cache, and preparing on the pool from inside a
// transaction could wait for a pool connection that only the waiting
// transactions hold (a deadlock once every connection is in a transaction).

// rowsIter is what both *sql.Rows and a pipelined transaction's rows offer.
type rowsIter interface {
	Next() bool
	Scan(dest ...any) error
	Close() error
	Err() error
}

func (s *Store) execRaw(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx, err := s.stmtCtx(ctx)
	if err != nil {
		return nil, err
	}
	if s.pipe != nil {
		return s.pipe.exec(ctx, rebind(s.dialect, query), args...)
	}
	if s.dialect == "postgres" {
		return s.conn().ExecContext(ctx, rebind(s.dialect, query), args...)
	}
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// execLater is execRaw for a write whose outcome the caller does not
// read: in a pipelined PostgreSQL transaction it goes out with the next
// statement (and fails that one, and the transaction, should it fail).
func (s *Store) execLater(ctx context.Context, query string, args ...any) error {
	if s.pipe != nil {
		s.pipe.execLater(rebind(s.dialect, query), args...)
		return nil
	}
	_, err := s.execRaw(ctx, query, args...)
	return err
}

func (s *Store) queryRowRaw(ctx context.Context, query string, args ...any) (scanner, error) {
	ctx, err := s.stmtCtx(ctx)
	if err != nil {
		return nil, err
	}
	if s.pipe != nil {
		return s.pipe.queryRow(ctx, rebind(s.dialect, query), args...), nil
	}
	if s.dialect == "postgres" {
		return s.conn().QueryRowContext(ctx, rebind(s.dialect, query), args...), nil
	}
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryRowContext(ctx, args...), nil
}

// queryRowsRaw runs statements of at most one row each and hands each
// one's row to scans[i] (Scan says sql.ErrNoRows when there is none), in
// order, stopping at the first error. In a pipelined PostgreSQL
// transaction they go out in one round trip. Each statement sees what was
// committed before it started (READ COMMITTED takes a snapshot per
// statement): one that follows a statement taking a lock sees everything
// committed before the lock was granted, which a read within the locking
// statement would not.
func (s *Store) queryRowsRaw(ctx context.Context, stmts []pgStmt, scans ...func(scanner) error) error {
	if s.pipe != nil {
		bound := make([]pgStmt, len(stmts))
		for i, st := range stmts {
			bound[i] = pgStmt{sql: rebind(s.dialect, st.sql), args: st.args}
		}
		return s.pipe.scanEach(ctx, bound, scans)
	}
	for i, st := range stmts {
		row, err := s.queryRowRaw(ctx, st.sql, st.args...)
		if err != nil {
			return err
		}
		if err := scans[i](row); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) queryRaw(ctx context.Context, query string, args ...any) (rowsIter, error) {
	ctx, err := s.stmtCtx(ctx)
	if err != nil {
		return nil, err
	}
	if s.pipe != nil {
		return s.pipe.query(ctx, rebind(s.dialect, query), args...)
	}
	if s.dialect == "postgres" {
		return s.conn().QueryContext(ctx, rebind(s.dialect, query), args...)
	}
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func rowErr(err error) error {
	if err == sql.ErrNoRows {
		return ErrNotFound
	}
	return err
}

// Nullable helpers.

func nstr(p *string) sql.NullString {
	if p == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: *p, Valid: true}
}

func pstr(n sql.NullString) *string {
	if !n.Valid {
		return nil
	}
	s := n.String
	return &s
}

func ntime(p *time.Time) sql.NullTime {
	if p == nil {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: p.UTC(), Valid: true}
}

func ptime(n sql.NullTime) *time.Time {
	if !n.Valid {
		return nil
	}
	t := n.Time.UTC()
	return &t
}

// Legs.

const legColumns = `id, conference_id, conversation_id, user_id, guest_id, invitation_id, node, number, state, cause,
 cause_text, end_reason, muted, talking, hangup_requested, created_at, ringing_at, connected_at, ended_at, updated_at,
 answered_at`

// legColumnsOf is legColumns qualified by table (for joins).
func legColumnsOf(table string) string {
	cols := strings.Split(legColumns, ",")
	for i, c := range cols {
		cols[i] = table + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

type scanner interface{ Scan(dest ...any) error }

func scanLeg(r scanner) (*Leg, error) {
	var l Leg
	var uid, gid, iid sql.NullString
	var ring, conn, end, ans sql.NullTime
	err := r.Scan(&l.ID, &l.ConferenceID, &l.ConversationID, &uid, &gid, &iid, &l.Node, &l.Number, &l.State, &l.Cause,
		&l.CauseText, &l.EndReason, &l.Muted, &l.Talking, &l.HangupRequested, &l.CreatedAt, &ring, &conn, &end, &l.UpdatedAt,
		&ans)
	if err != nil {
		return nil, rowErr(err)
	}
	l.UserID, l.GuestID, l.InvitationID = pstr(uid), pstr(gid), pstr(iid)
	l.RingingAt, l.ConnectedAt, l.EndedAt, l.AnsweredAt = ptime(ring), ptime(conn), ptime(end), ptime(ans)
	l.CreatedAt, l.UpdatedAt = l.CreatedAt.UTC(), l.UpdatedAt.UTC()
	return &l, nil
}

func (s *Store) legs(ctx context.Context, where string, args ...any) ([]Leg, error) {
	rows, err := s.queryRaw(ctx, `SELECT `+legColumns+` FROM legs WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Leg
	for rows.Next() {
		l, err := scanLeg(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *l)
	}
	return out, rows.Err()
}

func (s *Store) leg(ctx context.Context, suffix string, args ...any) (*Leg, error) {
	row, err := s.queryRowRaw(ctx, `SELECT `+legColumns+` FROM legs WHERE `+suffix, args...)
	if err != nil {
		return nil, err
	}
	return scanLeg(row)
}

// Conferences.

const conferenceColumns = `id, conversation_id, state, node, created_by, created_at, ended_at, end_reason`

func scanConference(r scanner) (*Conference, error) {
	var c Conference
	var ended sql.NullTime
	if err := r.Scan(&c.ID, &c.ConversationID, &c.State, &c.Node, &c.CreatedBy, &c.CreatedAt, &ended, &c.EndReason); err != nil {
		return nil, rowErr(err)
	}
	c.EndedAt = ptime(ended)
	c.CreatedAt = c.CreatedAt.UTC()
	return &c, nil
}

func (s *Store) conference(ctx context.Context, suffix string, args ...any) (*Conference, error) {
	row, err := s.queryRowRaw(ctx, `SELECT `+conferenceColumns+` FROM conferences WHERE `+suffix, args...)
	if err != nil {
		return nil, err
	}
	return scanConference(row)
}

// Invitations.

const invitationColumns = `id, conference_id, conversation_id, user_id, invited_by, state, leg_id, created_at, updated_at`

func scanInvitation(r scanner) (*Invitation, error) {
	var i Invitation
	var leg sql.NullString
	if err := r.Scan(&i.ID, &i.ConferenceID, &i.ConversationID, &i.UserID, &i.InvitedBy, &i.State, &leg, &i.CreatedAt, &i.UpdatedAt); err != nil {
		return nil, rowErr(err)
	}
	i.LegID = pstr(leg)
	i.CreatedAt, i.UpdatedAt = i.CreatedAt.UTC(), i.UpdatedAt.UTC()
	return &i, nil
}

func (s *Store) invitation(ctx context.Context, suffix string, args ...any) (*Invitation, error) {
	row, err := s.queryRowRaw(ctx, `SELECT `+invitationColumns+` FROM invitations WHERE `+suffix, args...)
	if err != nil {
		return nil, err
	}
	return scanInvitation(row)
}

// translate maps a driver error (unique violation, …) onto gorm's
// portable errors, as gorm does for its own statements.
func (s *Store) translate(err error) error {
	if err == nil {
		return nil
	}
	if t, ok := s.db.Dialector.(interface{ Translate(error) error }); ok {
		return t.Translate(err)
	}
	return err
}
