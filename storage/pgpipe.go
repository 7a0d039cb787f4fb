package storage

// A PostgreSQL transaction pays most for its round trips: on this kind of
// machine each costs the server more CPU (about half of it in the kernel)
// than the statement it carries. pgPipe runs a transaction on one pool
// connection's pgx.Conn and pipelines what needs no answer of its own:
// BEGIN goes out with the first statement, writes whose result nobody reads
// (execLater) go out with the next statement that is read, and the last
// statement (the events, finishPG) goes out with COMMIT. A leg's progress,
// once BEGIN, its lock, its UPDATE, the events' statement and COMMIT (five
// round trips), is two.
//
// database/sql has no way to send several statements at once, so the
// transaction holds a *sql.Conn and talks to its pgx.Conn directly (pgx
// batches); gorm's statements in the transaction run on the same *sql.Conn
// after the pipe has sent what it holds (sync), so every statement runs in
// order on one connection.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

type pgStmt struct {
	sql  string
	args []any
	// scan, on a later statement, reads its row when the batch it went out
	// with is read (readLater); drop is called instead when it never is
	// (an earlier statement failed, or the transaction ended first).
	scan func(scanner) error
	drop func()
}

type pgPipe struct {
	conn  *sql.Conn
	pc    *pgx.Conn
	begun bool
	// later are statements not sent yet (execLater's writes, readLater's
	// reads): they go first in the next batch.
	later []pgStmt
	// open is a batch whose last result a row or rows being read still
	// holds; the next statement closes it first.
	open pgx.BatchResults
	// err is the transaction's first failure: everything after it fails.
	err       error
	translate func(error) error
	// commitSent: COMMIT went out (its outcome may be unknown should the
	// connection fail before the answer).
	commitSent bool
	// sent counts the statements given to the pipe, and gorm's run
	// beside it (Store.q): a batch of call progress tells from it what a
	// change wrote (legPrefetch).
	sent int
}

// newPGPipe takes a pool connection for a transaction.
func (s *Store) newPGPipe(ctx context.Context) (*pgPipe, error) {
	conn, err := s.stmts.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	p := &pgPipe{conn: conn, translate: s.translate}
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("postgres connection is %T, not pgx", dc)
		}
		// The pgx.Conn is used after Raw returns: nothing else can use it
		// while this transaction holds the *sql.Conn, and gorm's statements
		// on that *sql.Conn run between the pipe's, never during them.
		p.pc = sc.Conn()
		return nil
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return p, nil
}

// batch sends BEGIN (the first time), the later statements and stmts in
// one round trip and reads the results of BEGIN and the later statements
// (a later read's row goes to its scan); stmts' results are the caller's
// to read, and the batch stays open until it
// closes it (closeOpen). With no stmts it sends what is pending and closes
// the batch itself.
func (p *pgPipe) batch(ctx context.Context, stmts ...pgStmt) (pgx.BatchResults, error) {
	if err := p.closeOpen(); err != nil {
		return nil, err
	}
	p.sent += len(stmts)
	b := &pgx.Batch{}
	if !p.begun {
		b.Queue("BEGIN")
	}
	for _, st := range p.later {
		b.Queue(st.sql, st.args...)
	}
	for _, st := range stmts {
		b.Queue(st.sql, st.args...)
	}
	if b.Len() == 0 {
		return nil, nil
	}
	later := p.later
	p.later = nil
	br := p.pc.SendBatch(ctx, b)
	if !p.begun {
		if _, err := br.Exec(); err != nil {
			dropAll(later)
			br.Close()
			return nil, p.fail(err)
		}
	}
	p.begun = true
	for i, st := range later {
		var err error
		if st.scan != nil {
			row := &batchRow{p: p, br: br}
			if err = st.scan(row); err != nil && row.dbErr == nil {
				err = p.fail(err)
			}
		} else {
			_, err = br.Exec()
		}
		if err != nil {
			dropAll(later[i+1:])
			br.Close()
			return nil, p.fail(err)
		}
	}
	if len(stmts) == 0 {
		return nil, p.fail(br.Close())
	}
	p.open = br
	return br, nil
}

// fail records the transaction's first failure.
func (p *pgPipe) fail(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.ConstraintName == "ux_leg_live_user" || pe.ConstraintName == "ux_leg_live_guest") {
		err = fmt.Errorf("%w: %v", ErrLiveLeg, err)
	} else {
		err = p.translate(err)
	}
	if p.err == nil {
		p.err = err
	}
	return err
}

func (p *pgPipe) closeOpen() error {
	if p.err != nil {
		return p.err
	}
	if p.open == nil {
		return nil
	}
	br := p.open
	p.open = nil
	return p.fail(br.Close())
}

// sync sends what the pipe holds (BEGIN, later writes) before a statement
// that does not go through it (gorm's).
func (p *pgPipe) sync(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	if p.begun && len(p.later) == 0 {
		return p.closeOpen()
	}
	_, err := p.batch(ctx)
	return err
}

// execLater queues a write whose result nobody reads; its failure fails
// the statement it is sent with, and the transaction.
func (p *pgPipe) execLater(query string, args ...any) {
	p.sent++
	p.later = append(p.later, pgStmt{sql: query, args: args})
}

// readLater queues a statement of one row that scan reads once the
// statement it goes out with is answered (before that one's own result);
// drop is called if that never happens.
func (p *pgPipe) readLater(query string, args []any, scan func(scanner) error, drop func()) {
	p.sent++
	p.later = append(p.later, pgStmt{sql: query, args: args, scan: scan, drop: drop})
}

func dropAll(stmts []pgStmt) {
	for _, st := range stmts {
		if st.drop != nil {
			st.drop()
		}
	}
}

func (p *pgPipe) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	br, err := p.batch(ctx, pgStmt{sql: query, args: args})
	if err != nil {
		return nil, err
	}
	tag, err := br.Exec()
	if err != nil {
		p.closeOpen()
		return nil, p.fail(err)
	}
	if err := p.closeOpen(); err != nil {
		return nil, err
	}
	return pgResult(tag), nil
}

func (p *pgPipe) queryRow(ctx context.Context, query string, args ...any) *pipeRow {
	br, err := p.batch(ctx, pgStmt{sql: query, args: args})
	return &pipeRow{p: p, br: br, err: err}
}

func (p *pgPipe) query(ctx context.Context, query string, args ...any) (*pipeRows, error) {
	br, err := p.batch(ctx, pgStmt{sql: query, args: args})
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		p.closeOpen()
		return nil, p.fail(err)
	}
	return &pipeRows{p: p, rows: rows}, nil
}

// scanEach sends stmts in one round trip (after what the pipe holds) and
// hands each one's row to scans[i] (whose Scan says sql.ErrNoRows when
// there is none), in order; it stops at the first error a scan returns.
func (p *pgPipe) scanEach(ctx context.Context, stmts []pgStmt, scans []func(scanner) error) error {
	br, err := p.batch(ctx, stmts...)
	if err != nil {
		return err
	}
	for i := range stmts {
		row := &batchRow{p: p, br: br}
		if err := scans[i](row); err != nil {
			if cerr := p.closeOpen(); row.dbErr == nil && cerr != nil {
				return cerr
			}
			return err
		}
	}
	return p.closeOpen()
}

// batchRow is one statement's row of an open batch.
type batchRow struct {
	p     *pgPipe
	br    pgx.BatchResults
	dbErr error
}

func (r *batchRow) Scan(dst ...any) error {
	err := r.br.QueryRow().Scan(dst...)
	if errors.Is(err, pgx.ErrNoRows) {
		return sql.ErrNoRows
	}
	if err != nil {
		r.dbErr = r.p.fail(err)
		return r.dbErr
	}
	return nil
}

// commit sends what is pending, last (a query whose rows read reads)
// and COMMIT in one round trip. A transaction that sent nothing commits
// without one.
func (p *pgPipe) commit(ctx context.Context, last *pgStmt, read func(rowsIter) error) error {
	if err := p.closeOpen(); err != nil {
		return err
	}
	if !p.begun && len(p.later) == 0 && last == nil {
		return nil
	}
	p.commitSent = true
	stmts := []pgStmt{{sql: "COMMIT"}}
	if last != nil {
		stmts = append([]pgStmt{*last}, stmts...)
	}
	br, err := p.batch(ctx, stmts...)
	if err != nil {
		return err
	}
	if last != nil {
		// A failed statement's rows carry its error: read sees it there.
		rows, _ := br.Query()
		err := read(&pipeRows{p: p, rows: rows, last: true})
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			p.closeOpen()
			return p.fail(err)
		}
	}
	_, err = br.Exec()
	if cerr := p.closeOpen(); err == nil {
		err = cerr
	}
	return p.fail(err)
}

// release ends the transaction (rolling back what is not committed). The
// connection goes back to the pool only when it is outside any
// transaction; otherwise it is closed.
func (p *pgPipe) release(ctx context.Context) {
	dropAll(p.later)
	p.later = nil
	if p.open != nil {
		p.open.Close()
		p.open = nil
	}
	if p.begun && p.pc.PgConn().TxStatus() != 'I' {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := p.pc.Exec(rctx, "ROLLBACK"); err != nil || p.pc.PgConn().TxStatus() != 'I' {
			p.pc.Close(rctx) // database/sql then drops it
		}
	}
	p.conn.Close()
}

type pgResult pgconn.CommandTag

func (r pgResult) LastInsertId() (int64, error) {
	return 0, errors.New("postgres: no LastInsertId")
}
func (r pgResult) RowsAffected() (int64, error) { return pgconn.CommandTag(r).RowsAffected(), nil }

// pipeRow is a row of the pipe's open batch, read once.
type pipeRow struct {
	p   *pgPipe
	br  pgx.BatchResults
	err error
}

func (r *pipeRow) Scan(dst ...any) error {
	if r.err != nil {
		return r.err
	}
	err := r.br.QueryRow().Scan(dst...)
	cerr := r.p.closeOpen()
	if errors.Is(err, pgx.ErrNoRows) {
		if cerr != nil {
			return cerr
		}
		return sql.ErrNoRows
	}
	if err != nil {
		return r.p.fail(err)
	}
	return cerr
}

// pipeRows are the rows of the pipe's open batch.
type pipeRows struct {
	p    *pgPipe
	rows pgx.Rows
	last bool // the rows of commit's last statement
}

func (r *pipeRows) Next() bool            { return r.rows.Next() }
func (r *pipeRows) Scan(dst ...any) error { return r.rows.Scan(dst...) }
func (r *pipeRows) Err() error            { return r.p.translate(r.rows.Err()) }
func (r *pipeRows) Close() error {
	r.rows.Close()
	if r.last {
		return nil // commit reads COMMIT's result and closes the batch
	}
	err := r.rows.Err()
	if cerr := r.p.closeOpen(); err == nil {
		err = cerr
	}
	return r.p.fail(err)
}
