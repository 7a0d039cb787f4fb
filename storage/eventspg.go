package storage

// Events recorded in a PostgreSQL transaction are written by its last
// statement. A round trip is what a transaction pays most for there, and
// most of it runs while the conversation's row is locked: a leg's change
// used to be BEGIN, the leg's lock, its UPDATE, the event's append (the
// conversation's seq bump and the insert), the user streams' counters, the
// outbox and index rows with the NOTIFYs, COMMIT. RecordEvent keeps the
// event in memory instead, and finishPG writes every recorded event with
// the whole fan-out in one statement: the seq bump, the events, the
// webhook outbox, the user streams' counters (row locks taken in user id
// order, after every other lock of the transaction) and index rows, and
// the NOTIFYs. Two statements fewer per event.
//
// The events of one transaction keep the order they were recorded or
// appended in: an AppendEvent (whose caller needs the seq at once) first
// writes what was recorded before it, and so does recording an event of
// another conversation (one statement bumps one conversation's counter).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// RecordEvent adds an event to a conversation's log, like AppendEvent, for
// a caller that does not need its seq: inside a PostgreSQL transaction it
// is written with the transaction's last statement; elsewhere it is
// AppendEvent. Published after commit, in order with the transaction's
// other events.
func (s *Store) RecordEvent(ctx context.Context, convID, typ, data string) error {
	if s.dialect != "postgres" || s.deferred == nil {
		_, err := s.AppendEvent(ctx, convID, typ, data)
		return err
	}
	if d := *s.deferred; !s.convsLocked && len(d) > 0 && d[0].ConversationID != convID {
		if err := s.writeDeferred(ctx); err != nil {
			return err
		}
	}
	*s.deferred = append(*s.deferred, Event{ConversationID: convID, Type: typ, Data: data, CreatedAt: time.Now().UTC()})
	return nil
}

// RecordEvents is RecordEvent for several events of one type.
func (s *Store) RecordEvents(ctx context.Context, convID, typ string, datas []string) error {
	if s.dialect != "postgres" || s.deferred == nil {
		_, err := s.AppendEvents(ctx, convID, typ, datas)
		return err
	}
	for _, d := range datas {
		if err := s.RecordEvent(ctx, convID, typ, d); err != nil {
			return err
		}
	}
	return nil
}

// writeDeferred writes the recorded events now, before an event that
// must follow them: one statement (their conversations' counters bumped,
// the events inserted).
func (s *Store) writeDeferred(ctx context.Context) error {
	if s.deferred == nil || len(*s.deferred) == 0 {
		return nil
	}
	def := *s.deferred
	ords, convs, counts := deferredOrdinals(def)
	n := len(def)
	dconvs, types, datas, ats := make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
	for i, ev := range def {
		dconvs[i], types[i], datas[i], ats[i] = ev.ConversationID, ev.Type, ev.Data, ev.CreatedAt
	}
	rows, err := s.queryRaw(ctx, `WITH s AS (`+bumpCountersSQL+`),
 i AS (INSERT INTO events (conversation_id, seq, type, data, created_at)
  SELECT x.conv, s.base + x.ord, x.type, x.data, x.at
  FROM unnest(?::text[], ?::bigint[], ?::text[], ?::text[], ?::timestamptz[]) AS x(conv, ord, type, data, at) JOIN s ON s.id = x.conv)
 SELECT id, base FROM s`, convs, counts, dconvs, ords, types, datas, ats)
	if err != nil {
		return err
	}
	bases := make(map[string]int64, len(convs))
	for rows.Next() {
		var id string
		var base int64
		if err := rows.Scan(&id, &base); err != nil {
			rows.Close()
			return err
		}
		bases[id] = base
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := missingConversation(convs, bases); err != nil {
		return err
	}
	s.numberDeferred(bases, ords)
	return nil
}

// bumpCountersSQL bumps the event counters of the recorded events'
// conversations (the arrays of their ids and counts), returning each
// one's id and base (its counter before). (A plainer statement for the
// usual one conversation made no measurable difference.)
const bumpCountersSQL = `UPDATE conversations c SET event_seq = c.event_seq + x.n
  FROM unnest(?::text[], ?::bigint[]) AS x(conv, n) WHERE c.id = x.conv RETURNING c.id, c.event_seq - x.n AS base`

// deferredOrdinals numbers recorded events within their conversations:
// ords[i] is event i's place among its conversation's (from 1); convs are
// the conversations in the order they first appear, counts how many
// events each has.
func deferredOrdinals(def []Event) (ords []int64, convs []string, counts []int64) {
	ords = make([]int64, len(def))
	at := map[string]int{}
	for i, ev := range def {
		k, ok := at[ev.ConversationID]
		if !ok {
			k = len(convs)
			at[ev.ConversationID] = k
			convs, counts = append(convs, ev.ConversationID), append(counts, 0)
		}
		counts[k]++
		ords[i] = counts[k]
	}
	return ords, convs, counts
}

// missingConversation is the error for recorded events whose conversation
// had no counter to bump (it does not exist).
func missingConversation(convs []string, bases map[string]int64) error {
	for _, c := range convs {
		if _, ok := bases[c]; !ok {
			return fmt.Errorf("append event: conversation %s: %w", c, ErrNotFound)
		}
	}
	return nil
}

// numberDeferred gives the recorded events their seqs, each its
// conversation's base (the counter before the bump) plus its ordinal,
// moves them to the transaction's written events and returns them.
func (s *Store) numberDeferred(bases map[string]int64, ords []int64) []Event {
	def := *s.deferred
	for i := range def {
		def[i].Seq = bases[def[i].ConversationID] + ords[i]
	}
	*s.pending = append(*s.pending, def...)
	*s.deferred = nil
	return def
}

// appendNowPG is AppendEvents in a PostgreSQL transaction, for a caller
// that needs the seqs at once: the events are recorded and written at once,
// with what was recorded before them, in one statement (writeDeferred).
func (s *Store) appendNowPG(ctx context.Context, convID, typ string, datas []string) ([]Event, error) {
	if err := s.RecordEvents(ctx, convID, typ, datas); err != nil {
		return nil, err
	}
	if err := s.writeDeferred(ctx); err != nil {
		return nil, err
	}
	written := *s.pending
	return slices.Clone(written[len(written)-len(datas):]), nil
}

// finishPG is a PostgreSQL transaction's last statement, sent with its
// COMMIT (pgpipe.go): the recorded events (one conversation's, numbered
// after its log) and the fan-out of every event of the transaction (see
// fanOut), as data-modifying WITH clauses, which PostgreSQL runs to
// completion whether or not the query reads them. Its reader then gives
// the recorded events their seqs and adds each user-stream copy to the
// transaction's list (announced after commit). No events: no statement.
func (s *Store) finishPG() (*pgStmt, func(rowsIter) error) {
	written, def := *s.pending, *s.deferred
	if len(written)+len(def) == 0 {
		return nil, nil
	}
	// Every event as parallel arrays, written ones (seq known) first, then
	// the recorded ones (seq: their ordinal, added to the bumped counter).
	all := make([]Event, 0, len(written)+len(def))
	all = append(append(all, written...), def...)
	ords, convs, counts := deferredOrdinals(def)
	var e struct {
		convs, types, datas []string
		seqs                []int64
		deferred            []bool
		ats                 []time.Time
	}
	for i, ev := range all {
		seq, d := ev.Seq, i >= len(written)
		if d {
			seq = ords[i-len(written)]
		}
		e.convs, e.types, e.datas = append(e.convs, ev.ConversationID), append(e.types, ev.Type), append(e.datas, ev.Data)
		e.seqs, e.deferred, e.ats = append(e.seqs, seq), append(e.deferred, d), append(e.ats, ev.CreatedAt)
	}
	// Each user's entries, users in id order (their counters' lock order).
	byUser := map[string][]int64{} // user → 1-based indexes into all
	if s.audience != nil {
		for i, ev := range all {
			for _, u := range s.audience(ev) {
				if u != "" {
					byUser[u] = append(byUser[u], int64(i)+1)
				}
			}
		}
	}
	users := make([]string, 0, len(byUser))
	for u := range byUser {
		users = append(users, u)
	}
	sort.Strings(users)
	var u struct {
		users, rUsers            []string
		counts, rKs, rOrds, rCnt []int64
	}
	for _, id := range users {
		ks := byUser[id]
		u.users, u.counts = append(u.users, id), append(u.counts, int64(len(ks)))
		for j, k := range ks {
			u.rUsers, u.rKs = append(u.rUsers, id), append(u.rKs, k)
			u.rOrds, u.rCnt = append(u.rOrds, int64(j)+1), append(u.rCnt, int64(len(ks)))
		}
	}
	q := `WITH s AS (` + bumpCountersSQL + `),
 ev AS (SELECT x.conv, CASE WHEN x.deferred THEN (SELECT base FROM s WHERE s.id = x.conv) + x.seq ELSE x.seq END AS seq, x.deferred, x.type, x.data, x.at, x.k
  FROM unnest(?::text[], ?::bigint[], ?::boolean[], ?::text[], ?::text[], ?::timestamptz[]) WITH ORDINALITY AS x(conv, seq, deferred, type, data, at, k)),
 i AS (INSERT INTO events (conversation_id, seq, type, data, created_at) SELECT conv, seq, type, data, at FROM ev WHERE deferred),
 d AS (INSERT INTO webhook_deliveries (endpoint_id, conversation_id, seq, type, created_at, attempts, next_attempt_at, lease_token, last_status, last_error)
  SELECT w.id, ev.conv, ev.seq, ev.type, ev.at, 0, ev.at, '', 0, '' FROM ev
  JOIN webhook_subscriptions ws ON ws.type = ev.type JOIN webhook_endpoints w ON w.id = ws.endpoint_id AND w.disabled_at IS NULL
  WHERE ev.seq IS NOT NULL ORDER BY ev.k, w.id),
 us AS (INSERT INTO user_event_seqs (user_id, seq) SELECT t.u, t.n FROM unnest(?::text[], ?::bigint[]) AS t(u, n) ORDER BY t.u
  ON CONFLICT (user_id) DO UPDATE SET seq = user_event_seqs.seq + excluded.seq RETURNING user_id, seq),
 ue AS (INSERT INTO user_events (user_id, seq, conversation_id, conv_seq, type, created_at)
  SELECT r.u, us.seq - r.cnt + r.ord, ev.conv, ev.seq, ev.type, ev.at
  FROM unnest(?::text[], ?::bigint[], ?::bigint[], ?::bigint[]) AS r(u, k, ord, cnt) JOIN us ON us.user_id = r.u JOIN ev ON ev.k = r.k
  WHERE ev.seq IS NOT NULL),
 nt AS (SELECT count(pg_notify('` + eventsChannel + `', p)) AS n FROM (
  SELECT conv || ':' || max(seq) FROM ev WHERE seq IS NOT NULL GROUP BY conv
  UNION ALL SELECT ? || user_id || ':' || seq FROM us) AS t(p))
 SELECT 0, '', (SELECT n FROM nt) UNION ALL SELECT 1, id, base FROM s UNION ALL SELECT 2, user_id, seq FROM us`
	args := []any{convs, counts,
		e.convs, e.seqs, e.deferred, e.types, e.datas, e.ats,
		u.users, u.counts,
		u.rUsers, u.rKs, u.rOrds, u.rCnt,
		UserStreamKey("")}
	return &pgStmt{sql: rebind(s.dialect, q), args: args}, func(rows rowsIter) error {
		return s.finishedPG(rows, all, written, users, byUser, ords, convs)
	}
}

// finishedPG reads finishPG's rows: the NOTIFYs' count (kind 0), each
// bumped conversation's base (1) and each user stream's counter (2).
func (s *Store) finishedPG(rows rowsIter, all, written []Event, users []string, byUser map[string][]int64, ords []int64, convs []string) error {
	defer rows.Close()
	bases := make(map[string]int64, len(convs))
	top := map[string]int64{}
	for rows.Next() {
		var kind int
		var id string
		var v int64
		if err := rows.Scan(&kind, &id, &v); err != nil {
			return err
		}
		switch kind {
		case 1:
			bases[id] = v
		case 2:
			top[id] = v
		}
	}
	if err := rows.Err(); err != nil {
		// A recorded event's conversation has no counter to bump: its seq
		// is NULL, which the events' key refuses, failing the statement
		// and with it the COMMIT sent behind it.
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23502" && pe.TableName == "events" {
			return fmt.Errorf("append event: conversation %s: %w", strings.Join(convs, ", "), ErrNotFound)
		}
		return err
	}
	if err := missingConversation(convs, bases); err != nil {
		return err
	}
	copy(all[len(written):], s.numberDeferred(bases, ords))
	for _, id := range users {
		ks, last := byUser[id], top[id]
		if last == 0 {
			return fmt.Errorf("user stream counter of %s was not returned", id)
		}
		for j, k := range ks {
			cp := all[k-1]
			cp.Seq, cp.ForUser = last-int64(len(ks))+1+int64(j), id
			*s.pending = append(*s.pending, cp)
		}
	}
	return nil
}
