package storage

// The fan-out of a transaction's events (issue 17): besides the
// conversation's own log, every event that concerns a user is indexed in
// that user's stream (user_events), and every event some webhook endpoint
// subscribes to gets a delivery row (webhook_deliveries, the outbox). Both
// are written at the end of the transaction that appended the events, so
// they commit or roll back with them: a user stream or a webhook never
// tells of something that did not happen, and never misses what did.
//
// The index rows are written last, user by user in id order: on
// PostgreSQL each takes the row lock of the user's counter
// (user_event_seqs), and with one order for those locks, taken after every
// other lock of the transaction, two transactions cannot deadlock on them.

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// UserEvent indexes one conversation event in the stream of a user it
// concerns: the user's own seq (gap-free per user, in commit order) and
// the event it points to. The payload stays in the conversation's log.
type UserEvent struct {
	UserID         string `gorm:"primaryKey;size:36"`
	Seq            int64  `gorm:"primaryKey;autoIncrement:false"`
	ConversationID string `gorm:"size:36;not null"`
	ConvSeq        int64  `gorm:"not null"`
	Type           string `gorm:"size:64;not null"`
	CreatedAt      time.Time
}

// UserEventSeq is the seq of a user's newest stream entry; bumped in the
// transaction that adds entries, so seqs are gap-free per user.
type UserEventSeq struct {
	UserID string `gorm:"primaryKey;size:36"`
	Seq    int64  `gorm:"not null;default:0"`
}

// EventAudience names the users an event concerns (their own stream
// carries it); nil for none. It is called inside the writing transaction
// and must not touch the store.
type EventAudience func(Event) []string

// SetEventAudience sets who is told of which event. Without it no user
// stream is written.
func (s *Store) SetEventAudience(f EventAudience) { s.audience = f }

// UserStreamKey is the hub key of a user's own stream (conversation
// streams are keyed by the conversation id; user ids never hold ':').
func UserStreamKey(userID string) string { return "user:" + userID }

// fanOut writes the user-stream index and the webhook outbox for the
// events appended by the transactions whose event lists are given, then
// adds each user-stream copy to the list of the transaction that appended
// its event (those are announced after that transaction's commit).
//
// The SQLite writer runs it once for a whole batch: one webhook check,
// one counter statement and one index statement (per chunk of fanOutChunk
// rows) for every user the batch's events concern. PostgreSQL does the
// same in each transaction's last statement (finishPG, eventspg.go).
func (s *Store) fanOut(ctx context.Context, lists ...*[]Event) error {
	var all []Event
	byUser := map[string][]userEntry{}
	for _, l := range lists {
		if l == nil {
			continue
		}
		for _, ev := range *l {
			if ev.ForUser != "" {
				continue
			}
			all = append(all, ev)
			if s.audience == nil {
				continue
			}
			for _, u := range s.audience(ev) {
				if u != "" {
					byUser[u] = append(byUser[u], userEntry{l, ev})
				}
			}
		}
	}
	if len(all) == 0 {
		return nil
	}
	rows, err := s.userEventRows(ctx, byUser)
	if err != nil {
		return err
	}
	if err := s.enqueueDeliveries(ctx, all); err != nil {
		return err
	}
	for from := 0; from < len(rows); from += fanOutChunk {
		chunk := rows[from:min(from+fanOutChunk, len(rows))]
		args := make([]any, 0, 6*len(chunk))
		for _, r := range chunk {
			args = append(args, r.ForUser, r.Seq, r.ConversationID, r.convSeq, r.Type, r.CreatedAt)
		}
		if _, err := s.execRaw(ctx, `INSERT INTO user_events (user_id, seq, conversation_id, conv_seq, type, created_at) VALUES `+
			valueRows("(?,?,?,?,?,?)", len(chunk)), args...); err != nil {
			return err
		}
	}
	return nil
}

// userEntry is an event for one user's stream, and the event list of the
// transaction that appended it (where its user-stream copy goes).
type userEntry struct {
	list *[]Event
	ev   Event
}

// userEventRow is a user-stream copy of an event (ForUser, Seq: the
// user's) and the seq of the event in its conversation's log.
type userEventRow struct {
	Event
	convSeq int64
}

// userEventRows moves each user's stream counter past the user's new
// entries (byUser: user → their events, in append order; one counter
// statement per chunk of fanOutChunk users, in user id order), appends each copy to
// its transaction's list and returns the index rows to write.
func (s *Store) userEventRows(ctx context.Context, byUser map[string][]userEntry) ([]userEventRow, error) {
	if len(byUser) == 0 {
		return nil, nil
	}
	users := make([]string, 0, len(byUser))
	for u := range byUser {
		users = append(users, u)
	}
	sort.Strings(users)
	last := make(map[string]int64, len(users))
	for from := 0; from < len(users); from += fanOutChunk {
		chunk := users[from:min(from+fanOutChunk, len(users))]
		args := make([]any, 0, 2*len(chunk))
		for _, u := range chunk {
			args = append(args, u, int64(len(byUser[u])))
		}
		rows, err := s.queryRaw(ctx, `INSERT INTO user_event_seqs (user_id, seq) VALUES `+valueRows("(?,?)", len(chunk))+
			` ON CONFLICT (user_id) DO UPDATE SET seq = user_event_seqs.seq + excluded.seq RETURNING user_id, seq`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var u string
			var seq int64
			if err := rows.Scan(&u, &seq); err != nil {
				rows.Close()
				return nil, err
			}
			last[u] = seq
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	var out []userEventRow
	for _, u := range users {
		list, top := byUser[u], last[u]
		if top == 0 {
			return nil, fmt.Errorf("user stream counter of %s was not returned", u)
		}
		// The entries take the seqs up to the counter, in append order.
		for i, e := range list {
			cp := e.ev
			cp.Seq, cp.ForUser = top-int64(len(list))+1+int64(i), u
			*e.list = append(*e.list, cp)
			out = append(out, userEventRow{Event: cp, convSeq: e.ev.Seq})
		}
	}
	return out, nil
}

// fanOutChunk is how many users' counters, or index rows, one statement
// writes: few distinct statement texts to prepare, few statements to run.
const fanOutChunk = 32

// valueRows is n copies of row joined by commas, for a multi-row VALUES.
func valueRows(row string, n int) string {
	var b strings.Builder
	b.Grow(n * (len(row) + 1))
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	return b.String()
}

// UserEventsAfter returns up to limit entries of a user's stream with seq
// > after, oldest first, each as the conversation's event with Seq the
// user's seq and ForUser set.
func (s *Store) UserEventsAfter(ctx context.Context, userID string, after int64, limit int) ([]Event, error) {
	rows, err := s.queryRaw(ctx, `SELECT u.seq, e.conversation_id, e.type, e.data, e.created_at FROM user_events u
 JOIN events e ON e.conversation_id = u.conversation_id AND e.seq = u.conv_seq
 WHERE u.user_id = ? AND u.seq > ? ORDER BY u.seq LIMIT ?`, userID, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		ev := Event{ForUser: userID}
		if err := rows.Scan(&ev.Seq, &ev.ConversationID, &ev.Type, &ev.Data, &ev.CreatedAt); err != nil {
			return nil, err
		}
		ev.CreatedAt = ev.CreatedAt.UTC()
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) > 0 {
		if err := s.awaitDurable(ctx); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LastUserEventSeq is the seq of a user's newest stream entry (0: none).
func (s *Store) LastUserEventSeq(ctx context.Context, userID string) (int64, error) {
	row, err := s.queryRowRaw(ctx, `SELECT seq FROM user_event_seqs WHERE user_id = ?`, userID)
	if err != nil {
		return 0, err
	}
	var seq int64
	if err := rowErr(row.Scan(&seq)); err == ErrNotFound {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return seq, nil
}

// parseNotify splits a NOTIFY payload "<stream key>:<seq>" (the key may
// hold ':' itself, as user stream keys do).
func parseNotify(payload string) (string, int64, bool) {
	i := len(payload) - 1
	for i >= 0 && payload[i] != ':' {
		i--
	}
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseInt(payload[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return payload[:i], seq, true
}

// PurgeUserEvents forgets the entries of people's own streams older than
// t (the conversations' logs keep the events themselves); a client
// resuming from before t just starts at the oldest entry left.
func (s *Store) PurgeUserEvents(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := s.InTx(ctx, func(tx *Store) error {
		res := tx.q(ctx).Where("created_at < ?", t).Delete(&UserEvent{})
		n = res.RowsAffected
		return res.Error
	})
	return n, err
}
