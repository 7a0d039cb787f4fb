package audit

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// Audit actions. Others may be added by callers of Add; keep them
// "noun.verb", lower case.
const (
	ActionDial        = "dial"         // a leg was placed: number, source
	ActionDialRefused = "dial.refused" // the dial policy refused: rule, number, source
	ActionLegMute     = "leg.mute"
	ActionLegUnmute   = "leg.unmute"
	ActionLegHangup   = "leg.hangup"
	ActionAudioEnd    = "audio.end"
	ActionAuthFailed  = "auth.failed" // remote address and route; never the token
	ActionUserCreate  = "user.create"
	ActionTokenIssue  = "token.issue"
	ActionTokenRevoke = "token.revoke"
	// Join links (recorded by their code through Audit).
	ActionJoinLinkCreate = "join_link.create"
	ActionJoinLinkRevoke = "join_link.revoke"
)

// Entry is one thing to record in the audit log: who (Actor, or
// GuestID for a guest), what (Action), to which conversation, leg/link/user
// (TargetID) and number. Never put a token, password or full join-link
// token in any field.
type Entry struct {
	Actor          core.Actor
	GuestID        string
	Action         string
	ConversationID string
	TargetID       string
	Number         string
	Source         string
	Rule           string
	Remote         string
	Route          string
	Detail         string
}

// Record is a stored audit entry as the API shows it.
type Record struct {
	ID             string    `json:"id"`
	At             time.Time `json:"at"`
	Action         string    `json:"action"`
	ActorKind      string    `json:"actor_kind"`
	ActorID        string    `json:"actor_id,omitempty"`
	ActorName      string    `json:"actor_name,omitempty"`
	ConversationID string    `json:"conversation_id,omitempty"`
	TargetID       string    `json:"target_id,omitempty"`
	Number         string    `json:"number,omitempty"`
	Source         string    `json:"source,omitempty"`
	Rule           string    `json:"rule,omitempty"`
	Remote         string    `json:"remote,omitempty"`
	Route          string    `json:"route,omitempty"`
	Detail         string    `json:"detail,omitempty"`
}

// Log is the audit log: who did what, when, to what. It is written in the
// transaction of the change it records (AddTx) or right after it (Add).
type Log struct {
	store *storage.Store
	log   *slog.Logger
}

// New makes the audit log over store; failures to record go to lg.
func New(store *storage.Store, lg *slog.Logger) *Log { return &Log{store: store, log: lg} }

// Add records e in the audit log. Call it after (outside) any
// transaction of yours: on SQLite a write from inside another write
// transaction waits for that transaction, which waits for it. Inside one,
// use AddTx. A failure to record is logged, never returned: the action
// itself has happened.
func (l *Log) Add(ctx context.Context, e Entry) {
	ctx = context.WithoutCancel(ctx) // a client hanging up does not erase its trace
	if err := l.store.InTx(ctx, func(tx *storage.Store) error { return l.AddTx(ctx, tx, e) }); err != nil {
		l.log.Error("audit entry not recorded", "action", e.Action, "conversation", e.ConversationID, "err", err)
	}
}

// AddTx records e in tx: it is kept only if tx commits.
func (l *Log) AddTx(ctx context.Context, tx *storage.Store, e Entry) error {
	return tx.AppendAudit(ctx, rowOf(e))
}

func rowOf(e Entry) *storage.AuditEntry {
	kind, id := "anonymous", ""
	switch {
	case e.GuestID != "":
		kind, id = "guest", e.GuestID
	case e.Actor.UserID != "":
		kind, id = "user", e.Actor.UserID
	case e.Actor.Admin:
		kind, id = "admin", "admin"
	}
	return &storage.AuditEntry{At: time.Now().UTC(), Action: core.Clip(e.Action, 64), ActorKind: kind, ActorID: core.Clip(id, 64),
		ActorName: core.Clip(e.Actor.Name, 200), ConversationID: core.Clip(e.ConversationID, 36), TargetID: core.Clip(e.TargetID, 64),
		Number: core.Clip(e.Number, 32), Source: core.Clip(e.Source, 16), Rule: core.Clip(e.Rule, 64), Remote: core.Clip(e.Remote, 100),
		Route: core.Clip(e.Route, 200), Detail: core.Clip(e.Detail, 500)}
}

// authFailuresPerMinute bounds the auth failures recorded per remote
// address: failures cost an attacker nothing, so beyond this they would
// only be a way to fill the database. The ones past it are counted in the
// next recorded entry's detail.
const authFailuresPerMinute = 20

// AddAuthFailure records a failed authentication: from which address,
// which route, why (never the token). Give as remote the address the
// connection came from, not what forwarding headers claim (a client can
// write those): it is also the key of the throttle, which writes nothing
// more from one address past authFailuresPerMinute in a minute. The check
// is a read, so a flood of bad tokens cannot become a flood of writes.
func (l *Log) AddAuthFailure(ctx context.Context, remote, route, reason string) {
	ctx = context.WithoutCancel(ctx)
	remote = core.Clip(remote, 100)
	n, err := l.store.CountAuditFrom(ctx, ActionAuthFailed, remote, time.Now().UTC().Add(-time.Minute))
	if err != nil {
		l.log.Error("audit entry not recorded", "action", ActionAuthFailed, "err", err)
		return
	}
	if n >= authFailuresPerMinute {
		return
	}
	l.Add(ctx, Entry{Action: ActionAuthFailed, Remote: remote, Route: route, Detail: reason})
}

// Query selects audit entries.
type Query struct {
	ConversationID string
	Actor          string // actor id: a user id, a guest id, or "admin"
	Action         string
	Since          time.Time
	Cursor         string // next_cursor of the previous page
	Limit          int    // default 100, at most 1000
}

// Page is one page of the audit log, newest first.
type Page struct {
	Entries    []Record `json:"entries"`
	NextCursor string   `json:"next_cursor"`
}

const maxAuditPage = 1000

func (q Query) filter() (storage.AuditFilter, error) {
	f := storage.AuditFilter{ConversationID: strings.TrimSpace(q.ConversationID), ActorID: strings.TrimSpace(q.Actor),
		Action: strings.TrimSpace(q.Action), Since: q.Since}
	if q.Cursor != "" {
		v, err := strconv.ParseInt(q.Cursor, 10, 64)
		if err != nil || v <= 0 {
			return f, core.Invalid("cursor", "cursor: %q is not a cursor from this API", q.Cursor)
		}
		f.BeforeID = v
	}
	switch {
	case q.Limit == 0:
		f.Limit = 100
	case q.Limit < 0 || q.Limit > maxAuditPage:
		return f, core.Invalid("limit", "limit: from 1 to %d", maxAuditPage)
	default:
		f.Limit = q.Limit
	}
	return f, nil
}

// Read pages through the audit log, newest first (admins only).
func (l *Log) Read(ctx context.Context, a core.Actor, q Query) (Page, error) {
	if err := core.RequireAdmin(a); err != nil {
		return Page{}, err
	}
	f, err := q.filter()
	if err != nil {
		return Page{}, err
	}
	want := f.Limit
	f.Limit++ // one more tells whether there is a next page
	rows, err := l.store.AuditEntries(ctx, f)
	if err != nil {
		return Page{}, err
	}
	page := Page{Entries: make([]Record, 0, len(rows))}
	for i := range rows {
		if i == want {
			page.NextCursor = strconv.FormatInt(rows[i-1].ID, 10)
			break
		}
		page.Entries = append(page.Entries, recordOf(&rows[i]))
	}
	return page, nil
}

// Export hands every matching entry to emit, oldest first, reading
// the log in batches (admins only). The query's cursor and limit are not
// used. Authorization and the query are checked before emit is first
// called.
func (l *Log) Export(ctx context.Context, a core.Actor, q Query, emit func(Record) error) error {
	if err := core.RequireAdmin(a); err != nil {
		return err
	}
	q.Cursor, q.Limit = "", 0
	f, err := q.filter()
	if err != nil {
		return err
	}
	f.Ascending, f.Limit = true, 500
	for {
		rows, err := l.store.AuditEntries(ctx, f)
		if err != nil {
			return err
		}
		for i := range rows {
			if err := emit(recordOf(&rows[i])); err != nil {
				return err
			}
		}
		if len(rows) < f.Limit {
			return nil
		}
		f.AfterID = rows[len(rows)-1].ID
	}
}

func recordOf(e *storage.AuditEntry) Record {
	return Record{ID: strconv.FormatInt(e.ID, 10), At: e.At.UTC(), Action: e.Action, ActorKind: e.ActorKind,
		ActorID: e.ActorID, ActorName: e.ActorName, ConversationID: e.ConversationID, TargetID: e.TargetID,
		Number: e.Number, Source: e.Source, Rule: e.Rule, Remote: e.Remote, Route: e.Route, Detail: e.Detail}
}
