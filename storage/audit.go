package storage

import (
	"context"
	"time"
)

// AuditEntry is one line of the audit log: who did what to which
// conversation and number. Append-only; ID orders the log (and is the
// cursor of its pages).
type AuditEntry struct {
	ID        int64     `gorm:"primaryKey;autoIncrement"`
	At        time.Time `gorm:"not null;index"`
	Action    string    `gorm:"size:64;not null;index"`
	ActorKind string    `gorm:"size:16;not null"` // user, admin, guest, anonymous
	ActorID   string    `gorm:"size:64;not null;default:'';index"`
	ActorName string    `gorm:"size:200;not null;default:''"`
	// ConversationID is the conversation acted on ("" when none).
	ConversationID string `gorm:"size:36;not null;default:'';index"`
	// TargetID is the leg, invitation, join link, user or token acted on.
	TargetID string `gorm:"size:64;not null;default:''"`
	Number   string `gorm:"size:32;not null;default:''"`
	Source   string `gorm:"size:16;not null;default:''"`
	// Rule is the refusing rule of a refusal (e.g. number_type_not_allowed).
	Rule   string `gorm:"size:64;not null;default:''"`
	Remote string `gorm:"size:100;not null;default:'';index"`
	Route  string `gorm:"size:200;not null;default:''"`
	Detail string `gorm:"size:500;not null;default:''"`
}

// AppendAudit adds an entry to the audit log; the entry's id is not read
// back (nobody needs it), so in a PostgreSQL transaction the insert goes
// out with the transaction's next statement (execLater).
// Every dial writes one inside the writer's transaction, so it is a
// prepared statement rather than gorm's Create (a third of the dial's
// time in the writer before).
func (s *Store) AppendAudit(ctx context.Context, e *AuditEntry) error {
	return s.execLater(ctx, `INSERT INTO audit_entries (at, action, actor_kind, actor_id, actor_name, conversation_id,
 target_id, number, source, rule, remote, route, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		e.At.UTC(), e.Action, e.ActorKind, e.ActorID, e.ActorName, e.ConversationID,
		e.TargetID, e.Number, e.Source, e.Rule, e.Remote, e.Route, e.Detail)
}

// AuditFilter selects audit entries. Zero fields do not filter.
type AuditFilter struct {
	ConversationID string
	ActorID        string
	Action         string
	Since          time.Time // at or after
	// BeforeID pages newest first: only entries with a smaller id.
	BeforeID int64
	// AfterID pages oldest first (Ascending): only entries with a larger id.
	AfterID   int64
	Ascending bool
	Limit     int
}

// AuditEntries lists the entries matching f, newest first (or oldest first
// with f.Ascending).
func (s *Store) AuditEntries(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	q := s.q(ctx).Model(&AuditEntry{})
	if f.ConversationID != "" {
		q = q.Where("conversation_id = ?", f.ConversationID)
	}
	if f.ActorID != "" {
		q = q.Where("actor_id = ?", f.ActorID)
	}
	if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if !f.Since.IsZero() {
		q = q.Where("at >= ?", f.Since.UTC())
	}
	if f.BeforeID > 0 {
		q = q.Where("id < ?", f.BeforeID)
	}
	if f.AfterID > 0 {
		q = q.Where("id > ?", f.AfterID)
	}
	if f.Ascending {
		q = q.Order("id ASC")
	} else {
		q = q.Order("id DESC")
	}
	if f.Limit > 0 {
		q = q.Limit(f.Limit)
	}
	var out []AuditEntry
	err := q.Find(&out).Error
	for i := range out {
		out[i].At = out[i].At.UTC()
	}
	return out, err
}

// CountAuditFrom counts the entries of action from remote after since.
func (s *Store) CountAuditFrom(ctx context.Context, action, remote string, since time.Time) (int64, error) {
	var n int64
	err := s.q(ctx).Model(&AuditEntry{}).Where("remote = ? AND action = ? AND at > ?", remote, action, since.UTC()).Count(&n).Error
	return n, err
}
