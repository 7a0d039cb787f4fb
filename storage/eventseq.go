package storage

import (
	"context"
	"encoding/json"
	"fmt"
)

// eventSeqs is the SQLite writer's copy of the conversations' event
// counters (conversations.event_seq). The writer's connection is the only
// one that writes to the SQLite file, so the counter it last wrote is the
// counter the file holds: an appended event takes its seq from here (the
// counter is read from the file once), where it was an
// `UPDATE … RETURNING` per event, and each batch writes the counters it
// moved back in one statement before it commits. Those updates were 3.6
// of the writer's 22 statements per dial-out in BenchmarkDialOut.
//
// The copy follows the file through the writer's transactions: a request
// rolled back to its savepoint puts back the counters it moved, and a
// batch that does not commit (or a new writer connection) starts from
// nothing, reading the counters from the file again. So does a batch that
// finds the file changed by another connection since the writer's last
// batch (SQLite's data_version; `convoice directory sync` run beside the
// server writes to the same file, and hangs up the calls of people it
// deactivates).
//
// Only the writer goroutine uses it (the transactions' functions run on
// it), so it has no lock.
type eventSeqs struct {
	known map[string]int64 // conversation → its counter, as the open batch has it
	moved map[string]bool  // moved by the open batch: written back before its commit
	// undo holds, for each counter the open request moved, its value
	// before the request (-1: it was not known).
	undo map[string]int64
	// version is the file's data_version when the copy was last known to
	// follow it (0: not yet read).
	version int64
}

// maxKnownSeqs bounds the copy: past it, a committed batch forgets it all
// (a counter not in the copy costs one read).
const maxKnownSeqs = 20000

func newEventSeqs() eventSeqs {
	return eventSeqs{known: map[string]int64{}, moved: map[string]bool{}, undo: map[string]int64{}}
}

// checkFile starts a batch, inside its write transaction (no other
// connection can commit until it ends): when another connection has
// committed since the writer's last batch, the copy is dropped. A
// connection's own commits do not move its data_version.
func (e *eventSeqs) checkFile(ctx context.Context, wc *writerConn) error {
	st, err := wc.stmt(ctx, `PRAGMA data_version`)
	if err != nil {
		return err
	}
	var v int64
	if err := st.QueryRowContext(ctx).Scan(&v); err != nil {
		return err
	}
	if v != e.version {
		clear(e.known)
		e.version = v
	}
	return nil
}

// take moves convID's counter on by n and returns its new value, the seq
// of the last of the n events; sql.ErrNoRows when there is no such
// conversation.
func (e *eventSeqs) take(ctx context.Context, wc *writerConn, convID string, n int64) (int64, error) {
	cur, ok := e.known[convID]
	if !ok {
		st, err := wc.stmt(ctx, `SELECT event_seq FROM conversations WHERE id = ?`)
		if err != nil {
			return 0, err
		}
		if err := st.QueryRowContext(ctx, convID).Scan(&cur); err != nil {
			return 0, err
		}
	}
	if _, saved := e.undo[convID]; !saved {
		if ok {
			e.undo[convID] = cur
		} else {
			e.undo[convID] = -1
		}
	}
	e.known[convID] = cur + n
	e.moved[convID] = true
	return cur + n, nil
}

// current returns convID's counter when the copy has it.
func (e *eventSeqs) current(convID string) (int64, bool) {
	v, ok := e.known[convID]
	return v, ok
}

// beginRequest starts a request's undo record.
func (e *eventSeqs) beginRequest() { clear(e.undo) }

// rollbackRequest puts back what the request moved (its savepoint was
// rolled back, and the counters' rows with it). A counter it moved stays
// marked as moved: writing back the value the file has does no harm.
func (e *eventSeqs) rollbackRequest() {
	for id, v := range e.undo {
		if v < 0 {
			delete(e.known, id)
			delete(e.moved, id)
		} else {
			e.known[id] = v
		}
	}
	clear(e.undo)
}

// writeBack writes the counters the batch moved, in one statement.
func (e *eventSeqs) writeBack(ctx context.Context, wc *writerConn) error {
	if len(e.moved) == 0 {
		return nil
	}
	pairs := make([][2]any, 0, len(e.moved))
	for id := range e.moved {
		pairs = append(pairs, [2]any{id, e.known[id]})
	}
	arg, err := json.Marshal(pairs)
	if err != nil {
		return err
	}
	st, err := wc.stmt(ctx, `UPDATE conversations SET event_seq = x.seq
 FROM (SELECT value ->> 0 AS id, value ->> 1 AS seq FROM json_each(?)) AS x WHERE conversations.id = x.id`)
	if err != nil {
		return err
	}
	res, err := st.ExecContext(ctx, string(arg))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n != int64(len(pairs)) {
		// A conversation that was there when its counter was read is
		// gone: the copy no longer follows the file.
		return fmt.Errorf("event counters: wrote %d of %d", n, len(pairs))
	}
	return nil
}

// committed ends a batch that committed.
func (e *eventSeqs) committed() {
	clear(e.moved)
	clear(e.undo)
	if len(e.known) > maxKnownSeqs {
		clear(e.known)
	}
}

// forget ends a batch that did not commit: the file has none of its
// counters' moves.
func (e *eventSeqs) forget() {
	clear(e.known)
	clear(e.moved)
	clear(e.undo)
}
