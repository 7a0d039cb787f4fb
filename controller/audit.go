package controller

import (
	"context"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/convoice/convoice/storage"
)

// Audit actions. Others may be added by callers of Audit; keep them
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

// AuditEntry is one thing to record in the audit log: who (Actor, or
// GuestID for a guest), what (Action), to which conversation, leg/link/user
// (TargetID) and number. Never put a token, password or full join-link
// token in any field.
type AuditEntry struct {
	Actor          Actor
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

// AuditRecord is a stored audit entry as the API shows it.
type AuditRecord struct {
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

// Audit records e in the audit log. Call it after (outside) any
// transaction of yours: on SQLite a write from inside another write
// transaction waits for that transaction, which waits for it. Inside one,
// use AuditTx. A failure to record is logged, never returned: the action
// itself has happened.
func (c *Controller) Audit(ctx context.Context, e AuditEntry) {
	ctx = context.WithoutCancel(ctx) // a client hanging up does not erase its trace
	if err := c.store.InTx(ctx, func(tx *storage.Store) error { return c.AuditTx(ctx, tx, e) }); err != nil {
		c.log.Error("audit entry not recorded", "action", e.Action, "conversation", e.ConversationID, "err", err)
	}
}

// AuditTx records e in tx: it is kept only if tx commits.
func (c *Controller) AuditTx(ctx context.Context, tx *storage.Store, e AuditEntry) error {
	return tx.AppendAudit(ctx, c.auditRow(e))
}

func (c *Controller) auditRow(e AuditEntry) *storage.AuditEntry {
	kind, id := "anonymous", ""
	switch {
	case e.GuestID != "":
		kind, id = "guest", e.GuestID
	case e.Actor.UserID != "":
		kind, id = "user", e.Actor.UserID
	case e.Actor.Admin:
		kind, id = "admin", "admin"
	}
	return &storage.AuditEntry{At: time.Now().UTC(), Action: clip(e.Action, 64), ActorKind: kind, ActorID: clip(id, 64),
		ActorName: clip(e.Actor.Name, 200), ConversationID: clip(e.ConversationID, 36), TargetID: clip(e.TargetID, 64),
		Number: clip(e.Number, 32), Source: clip(e.Source, 16), Rule: clip(e.Rule, 64), Remote: clip(e.Remote, 100),
		Route: clip(e.Route, 200), Detail: clip(e.Detail, 500)}
}

// clip bounds a field to n bytes without splitting a character.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// authFailuresPerMinute bounds the auth failures recorded per remote
// address: failures cost an attacker nothing, so beyond this they would
// only be a way to fill the database. The ones past it are counted in the
// next recorded entry's detail.
const authFailuresPerMinute = 20

// AuditAuthFailure records a failed authentication: from which address,
// which route, why (never the token). Give as remote the address the
// connection came from, not what forwarding headers claim (a client can
// write those): it is also the key of the throttle, which writes nothing
// more from one address past authFailuresPerMinute in a minute. The check
// is a read, so a flood of bad tokens cannot become a flood of writes.
func (c *Controller) AuditAuthFailure(ctx context.Context, remote, route, reason string) {
	ctx = context.WithoutCancel(ctx)
	remote = clip(remote, 100)
	n, err := c.store.CountAuditFrom(ctx, ActionAuthFailed, remote, time.Now().UTC().Add(-time.Minute))
	if err != nil {
		c.log.Error("audit entry not recorded", "action", ActionAuthFailed, "err", err)
		return
	}
	if n >= authFailuresPerMinute {
		return
	}
	c.Audit(ctx, AuditEntry{Action: ActionAuthFailed, Remote: remote, Route: route, Detail: reason})
}

// auditLeg records a moderation action on a leg when it succeeded.
func (c *Controller) auditLeg(ctx context.Context, a Actor, action string, l *storage.Leg, err error) {
	if err != nil || l == nil {
		return
	}
	detail := "someone else's call"
	if ownsLeg(a, l) {
		detail = "own call"
	}
	c.Audit(ctx, AuditEntry{Actor: a, Action: action, ConversationID: l.ConversationID, TargetID: l.ID, Number: l.Number, Detail: detail})
}

func muteAction(muted bool) string {
	if muted {
		return ActionLegMute
	}
	return ActionLegUnmute
}

// AuditQuery selects audit entries.
type AuditQuery struct {
	ConversationID string
	Actor          string // actor id: a user id, a guest id, or "admin"
	Action         string
	Since          time.Time
	Cursor         string // next_cursor of the previous page
	Limit          int    // default 100, at most 1000
}

// AuditPage is one page of the audit log, newest first.
type AuditPage struct {
	Entries    []AuditRecord `json:"entries"`
	NextCursor string        `json:"next_cursor"`
}

const maxAuditPage = 1000

func (q AuditQuery) filter() (storage.AuditFilter, error) {
	f := storage.AuditFilter{ConversationID: strings.TrimSpace(q.ConversationID), ActorID: strings.TrimSpace(q.Actor),
		Action: strings.TrimSpace(q.Action), Since: q.Since}
	if q.Cursor != "" {
		v, err := strconv.ParseInt(q.Cursor, 10, 64)
		if err != nil || v <= 0 {
			return f, invalid("cursor", "cursor: %q is not a cursor from this API", q.Cursor)
		}
		f.BeforeID = v
	}
	switch {
	case q.Limit == 0:
		f.Limit = 100
	case q.Limit < 0 || q.Limit > maxAuditPage:
		return f, invalid("limit", "limit: from 1 to %d", maxAuditPage)
	default:
		f.Limit = q.Limit
	}
	return f, nil
}

// AuditLog pages through the audit log, newest first (admins only).
func (c *Controller) AuditLog(ctx context.Context, a Actor, q AuditQuery) (AuditPage, error) {
	if err := requireAdmin(a); err != nil {
		return AuditPage{}, err
	}
	f, err := q.filter()
	if err != nil {
		return AuditPage{}, err
	}
	want := f.Limit
	f.Limit++ // one more tells whether there is a next page
	rows, err := c.store.AuditEntries(ctx, f)
	if err != nil {
		return AuditPage{}, err
	}
	page := AuditPage{Entries: make([]AuditRecord, 0, len(rows))}
	for i := range rows {
		if i == want {
			page.NextCursor = strconv.FormatInt(rows[i-1].ID, 10)
			break
		}
		page.Entries = append(page.Entries, auditRecord(&rows[i]))
	}
	return page, nil
}

// ExportAudit hands every matching entry to emit, oldest first, reading
// the log in batches (admins only). The query's cursor and limit are not
// used. Authorization and the query are checked before emit is first
// called.
func (c *Controller) ExportAudit(ctx context.Context, a Actor, q AuditQuery, emit func(AuditRecord) error) error {
	if err := requireAdmin(a); err != nil {
		return err
	}
	q.Cursor, q.Limit = "", 0
	f, err := q.filter()
	if err != nil {
		return err
	}
	f.Ascending, f.Limit = true, 500
	for {
		rows, err := c.store.AuditEntries(ctx, f)
		if err != nil {
			return err
		}
		for i := range rows {
			if err := emit(auditRecord(&rows[i])); err != nil {
				return err
			}
		}
		if len(rows) < f.Limit {
			return nil
		}
		f.AfterID = rows[len(rows)-1].ID
	}
}

func auditRecord(e *storage.AuditEntry) AuditRecord {
	return AuditRecord{ID: strconv.FormatInt(e.ID, 10), At: e.At.UTC(), Action: e.Action, ActorKind: e.ActorKind,
		ActorID: e.ActorID, ActorName: e.ActorName, ConversationID: e.ConversationID, TargetID: e.TargetID,
		Number: e.Number, Source: e.Source, Rule: e.Rule, Remote: e.Remote, Route: e.Route, Detail: e.Detail}
}
