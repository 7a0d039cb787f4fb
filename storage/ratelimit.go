package storage

import (
	"context"
	"time"

	"gorm.io/gorm"

	"github.com/convoice/convoice/leg"
)

// DialGrant records one dial the dial policy allowed. The grants in the
// rate window are the dial-outs counted against the per-minute limits; an
// unreleased grant is a dial on its way (allowed, its leg not yet
// written) and counts as a live leg against the concurrency caps until
// the leg exists (Released) or the grant is too old to matter. They live in
// the database so that every replica counts the same dials.
type DialGrant struct {
	ID             string    `gorm:"primaryKey;size:36"`
	At             time.Time `gorm:"not null;index;index:ix_dial_grant_user,priority:2;index:ix_dial_grant_conv,priority:2"`
	UserID         string    `gorm:"size:36;not null;default:'';index:ix_dial_grant_user,priority:1"`
	GuestID        string    `gorm:"size:36;not null;default:''"`
	ConversationID string    `gorm:"size:36;not null;default:'';index:ix_dial_grant_conv,priority:1"`
	Number         string    `gorm:"size:32;not null;default:''"`
	Released       bool      `gorm:"not null;default:false"`
}

// DialScope narrows a count to one user, guest or conversation; the zero
// scope counts everything.
type DialScope struct {
	UserID         string
	GuestID        string
	ConversationID string
	// AnyGuest narrows to legs and grants of guests (not users).
	AnyGuest bool
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
	if sc.AnyGuest {
		if grants {
			q = q.Where("guest_id <> ''")
		} else {
			q = q.Where("guest_id IS NOT NULL")
		}
	}
	return q
}

// LockDialPolicy serialises dial-policy decisions across replicas for the
// rest of the transaction, so that counting and granting are one step. On
// SQLite the write transaction is exclusive already.
func (s *Store) LockDialPolicy(ctx context.Context) error {
	if s.dialect != "postgres" {
		return nil
	}
	return s.q(ctx).Exec(`SELECT pg_advisory_xact_lock(74118)`).Error
}

// CountLiveLegsIn counts the legs that still hold a phone in scope.
func (s *Store) CountLiveLegsIn(ctx context.Context, sc DialScope) (int64, error) {
	q := s.q(ctx).Model(&Leg{}).Where("state IN ?", leg.Live())
	q = sc.where(q, false)
	var n int64
	err := q.Count(&n).Error
	return n, err
}

// CountDialGrants counts the grants in scope made after since; with
// pending, only those not yet released.
func (s *Store) CountDialGrants(ctx context.Context, sc DialScope, since time.Time, pending bool) (int64, error) {
	q := s.q(ctx).Model(&DialGrant{}).Where("at > ?", since.UTC())
	q = sc.where(q, true)
	if pending {
		q = q.Where("released = ?", false)
	}
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

// CreateDialGrant records an allowed dial.
func (s *Store) CreateDialGrant(ctx context.Context, g *DialGrant) error {
	g.At = g.At.UTC()
	return notFound(s.q(ctx).Create(g).Error)
}

// ReleaseDialGrant marks the oldest pending grant of this dial released:
// its leg is written (or the dial failed before it was), so the leg itself
// counts from now on.
func (s *Store) ReleaseDialGrant(ctx context.Context, sc DialScope, number string) error {
	q := s.q(ctx).Model(&DialGrant{}).Where("released = ? AND number = ?", false, number).
		Where("user_id = ? AND guest_id = ? AND conversation_id = ?", sc.UserID, sc.GuestID, sc.ConversationID)
	var gs []DialGrant
	if err := q.Order("at ASC").Limit(1).Find(&gs).Error; err != nil || len(gs) == 0 {
		return err
	}
	return s.q(ctx).Model(&DialGrant{}).Where("id = ?", gs[0].ID).Update("released", true).Error
}

// DeleteDialGrantsBefore forgets grants made before t.
func (s *Store) DeleteDialGrantsBefore(ctx context.Context, t time.Time) error {
	return s.q(ctx).Where("at < ?", t.UTC()).Delete(&DialGrant{}).Error
}
