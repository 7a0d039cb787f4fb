package storage

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/convoice/convoice/leg"
)

// DialGrant records one dial the dial policy allowed; the grants in the
// rate window are the dial-outs counted against the per-minute limits. A
// grant commits with its leg (or not at all), and the leg counts against
// the concurrency caps for itself. They live in the database so that
// every replica counts the same dials.
type DialGrant struct {
	ID             string    `gorm:"primaryKey;size:36"`
	At             time.Time `gorm:"not null;index;index:ix_dial_grant_user,priority:2;index:ix_dial_grant_conv,priority:2;index:ix_dial_grant_account,priority:2"`
	UserID         string    `gorm:"size:36;not null;default:'';index:ix_dial_grant_user,priority:1"`
	GuestID        string    `gorm:"size:36;not null;default:''"`
	ConversationID string    `gorm:"size:36;not null;default:'';index:ix_dial_grant_conv,priority:1"`
	Number         string    `gorm:"size:32;not null;default:''"`
	// Released is always written true. Grants used to be recorded
	// before their leg and counted as calls up until released; the
	// column stays for the schema (migration 3) and for replicas of
	// that version during a rolling upgrade, which count unreleased
	// grants.
	Released bool `gorm:"not null;default:false"`
	// Account is who answers for the dial: the user for their own dials,
	// the maker of the join link for a guest's (migration 6).
	Account string `gorm:"size:36;not null;default:'';index:ix_dial_grant_account,priority:1"`
}

// DialScope narrows a count to one user, guest or conversation; the zero
// scope counts everything.
type DialScope struct {
	UserID         string
	GuestID        string
	ConversationID string
	// AnyGuest narrows to legs and grants of guests (not users).
	AnyGuest bool
	// Account narrows to one account: the user's own legs and grants and
	// those of the guests of the join links they made.
	Account string
}

// where applies the scope to a query on legs or dial grants (grants keep
// "" for no user or guest, legs NULL).
func (sc DialScope) where(q *gorm.DB, grants bool) *gorm.DB {
	if sc.UserID != "" {
		q = q.Where("user_id = ?", sc.UserID)
	}
	if sc.GuestID != "" {
		q = q.Where("guest_id = ?", sc.GuestID)
	}
	if sc.ConversationID != "" {
		q = q.Where("conversation_id = ?", sc.ConversationID)
	}
	if sc.Account != "" {
		if grants {
			q = q.Where("account = ?", sc.Account)
		} else {
			q = q.Where("(user_id = ? OR guest_id IN (SELECT g.id FROM guests g JOIN join_links j ON j.id = g.join_link_id WHERE j.created_by = ?))",
				sc.Account, sc.Account)
		}
	}
	if sc.AnyGuest {
		if grants {
			q = q.Where("guest_id <> ''")
		} else {
			q = q.Where("guest_id IS NOT NULL")
		}
	}
	return q
}

// LockScopes serialises, across replicas and for the rest of the
// transaction, the transactions that name one of keys (a user, a guest, a
// conversation…): two transactions with no key in common never wait for
// each other. The keys are hashed to PostgreSQL advisory-lock ids and
// taken in ascending order in one statement, so two transactions that
// share several keys cannot deadlock. On SQLite the write transaction is
// exclusive already.
func (s *Store) LockScopes(ctx context.Context, keys ...string) error {
	if s.dialect != "postgres" {
		return nil
	}
	q, ids := lockScopesSQL(keys)
	if q == "" {
		return nil
	}
	if s.pipe != nil {
		_, err := s.pipe.exec(ctx, q, ids...)
		return err
	}
	_, err := s.conn().ExecContext(ctx, q, ids...)
	return err
}

// ScopeLockID is the PostgreSQL advisory-lock id of a scope key (tests hold
// one to stand for a dial deciding in that scope).
func ScopeLockID(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int64(h.Sum64())
}

// lockScopesSQL is the statement that takes the advisory locks of keys
// ("" for none), and its arguments.
func lockScopesSQL(keys []string) (string, []any) {
	if len(keys) == 0 {
		return "", nil
	}
	ids := make([]int64, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, ScopeLockID(k))
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var b strings.Builder
	args := make([]any, len(ids))
	b.WriteString("SELECT ")
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		// The target list is evaluated left to right: ascending order.
		fmt.Fprintf(&b, "pg_advisory_xact_lock($%d)", i+1)
		args[i] = id
	}
	return b.String(), args
}

// CountLiveLegsIn counts the legs that still hold a phone in scope.
func (s *Store) CountLiveLegsIn(ctx context.Context, sc DialScope) (int64, error) {
	q := s.q(ctx).Model(&Leg{}).Where("state IN ?", leg.Live())
	q = sc.where(q, false)
	var n int64
	err := q.Count(&n).Error
	return n, err
}

// OldestDialGrant returns the time of the oldest grant in scope made after
// since (when the rate window frees a place), or the zero time.
func (s *Store) OldestDialGrant(ctx context.Context, sc DialScope, since time.Time) (time.Time, error) {
	q := s.q(ctx).Model(&DialGrant{}).Where("at > ?", since.UTC())
	q = sc.where(q, true)
	var gs []DialGrant
	if err := q.Order("at ASC").Limit(1).Find(&gs).Error; err != nil || len(gs) == 0 {
		return time.Time{}, err
	}
	return gs[0].At.UTC(), nil
}

// LinkMakerOfGuest is the user who made the join link a guest came with.
func (s *Store) LinkMakerOfGuest(ctx context.Context, guestID string) (string, error) {
	var maker []string
	err := s.q(ctx).Table("guests g").Joins("JOIN join_links j ON j.id = g.join_link_id").
		Where("g.id = ?", guestID).Limit(1).Pluck("j.created_by", &maker).Error
	if err != nil || len(maker) == 0 {
		return "", notFound(err)
	}
	return maker[0], nil
}

// DeleteDialGrantsBefore forgets grants made before t.
func (s *Store) DeleteDialGrantsBefore(ctx context.Context, t time.Time) error {
	return s.q(ctx).Where("at < ?", t.UTC()).Delete(&DialGrant{}).Error
}
