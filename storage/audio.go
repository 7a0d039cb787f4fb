package storage

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// ActiveConference returns the conversation's active conference.
func (s *Store) ActiveConference(ctx context.Context, convID string) (*Conference, error) {
	var c Conference
	err := s.q(ctx).Where("conversation_id = ? AND state = ?", convID, ConferenceActive).First(&c).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &c, nil
}

// LatestConference returns the conversation's newest conference, active or not.
func (s *Store) LatestConference(ctx context.Context, convID string) (*Conference, error) {
	var c Conference
	err := s.q(ctx).Where("conversation_id = ?", convID).Order("created_at DESC, id").First(&c).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &c, nil
}

// GetConference loads one conference.
func (s *Store) GetConference(ctx context.Context, id string) (*Conference, error) {
	var c Conference
	if err := s.q(ctx).First(&c, "id = ?", id).Error; err != nil {
		return nil, notFound(err)
	}
	return &c, nil
}

// CreateConference inserts a conference; ErrConflict when the conversation
// already has an active one.
func (s *Store) CreateConference(ctx context.Context, c *Conference) error {
	return notFound(s.q(ctx).Create(c).Error)
}

// EndConference marks a conference ended; false when it already was.
func (s *Store) EndConference(ctx context.Context, id, reason string, at time.Time) (bool, error) {
	res := s.q(ctx).Model(&Conference{}).Where("id = ? AND state = ?", id, ConferenceActive).
		Updates(map[string]any{"state": ConferenceEnded, "ended_at": at, "end_reason": reason})
	return res.RowsAffected > 0, res.Error
}

// ActiveConferences lists every active conference (resync, start-up).
func (s *Store) ActiveConferences(ctx context.Context) ([]Conference, error) {
	var cs []Conference
	err := s.q(ctx).Where("state = ?", ConferenceActive).Order("created_at").Find(&cs).Error
	return cs, err
}

// CreateLeg inserts a leg.
func (s *Store) CreateLeg(ctx context.Context, l *Leg) error {
	return notFound(s.q(ctx).Create(l).Error)
}

// GetLeg loads one leg.
func (s *Store) GetLeg(ctx context.Context, id string) (*Leg, error) {
	var l Leg
	if err := s.q(ctx).First(&l, "id = ?", id).Error; err != nil {
		return nil, notFound(err)
	}
	return &l, nil
}

// GetLegForUpdate loads a leg and, on PostgreSQL, locks its row for the
// rest of the transaction (SQLite transactions are already exclusive).
func (s *Store) GetLegForUpdate(ctx context.Context, id string) (*Leg, error) {
	var l Leg
	q := s.q(ctx)
	if s.dialect == "postgres" {
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	if err := q.First(&l, "id = ?", id).Error; err != nil {
		return nil, notFound(err)
	}
	return &l, nil
}

// SaveLeg writes every field of a leg.
func (s *Store) SaveLeg(ctx context.Context, l *Leg) error {
	l.UpdatedAt = time.Now().UTC()
	return s.q(ctx).Save(l).Error
}

// Legs lists a conference's legs by creation.
func (s *Store) Legs(ctx context.Context, confID string) ([]Leg, error) {
	var ls []Leg
	err := s.q(ctx).Where("conference_id = ?", confID).Order("created_at, id").Find(&ls).Error
	return ls, err
}

// LiveLegs lists the legs of a conference that still hold a phone.
func (s *Store) LiveLegs(ctx context.Context, confID string) ([]Leg, error) {
	var ls []Leg
	err := s.q(ctx).Where("conference_id = ? AND state IN ?", confID, []string{LegDialing, LegRinging, LegConnected}).
		Order("created_at, id").Find(&ls).Error
	return ls, err
}

// AllLiveLegs lists every live leg on a node ("" = all nodes).
func (s *Store) AllLiveLegs(ctx context.Context, node string) ([]Leg, error) {
	var ls []Leg
	q := s.q(ctx).Where("state IN ?", []string{LegDialing, LegRinging, LegConnected})
	if node != "" {
		q = q.Where("node = ?", node)
	}
	err := q.Order("created_at, id").Find(&ls).Error
	return ls, err
}

// LiveLegOfUser returns the user's live leg in a conference.
func (s *Store) LiveLegOfUser(ctx context.Context, confID, userID string) (*Leg, error) {
	var l Leg
	err := s.q(ctx).Where("conference_id = ? AND user_id = ? AND state IN ?", confID, userID,
		[]string{LegDialing, LegRinging, LegConnected}).First(&l).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &l, nil
}

// CountLiveLegs counts live legs per node (placement).
func (s *Store) CountLiveLegs(ctx context.Context) (map[string]int, error) {
	type row struct {
		Node string
		N    int
	}
	var rows []row
	err := s.q(ctx).Model(&Leg{}).Select("node, COUNT(*) AS n").
		Where("state IN ?", []string{LegDialing, LegRinging, LegConnected}).Group("node").Scan(&rows).Error
	out := map[string]int{}
	for _, r := range rows {
		out[r.Node] = r.N
	}
	return out, err
}

// CreateInvitation inserts an invitation.
func (s *Store) CreateInvitation(ctx context.Context, inv *Invitation) error {
	return notFound(s.q(ctx).Create(inv).Error)
}

// GetInvitation loads one invitation.
func (s *Store) GetInvitation(ctx context.Context, id string) (*Invitation, error) {
	var inv Invitation
	if err := s.q(ctx).First(&inv, "id = ?", id).Error; err != nil {
		return nil, notFound(err)
	}
	return &inv, nil
}

// SaveInvitation writes every field of an invitation.
func (s *Store) SaveInvitation(ctx context.Context, inv *Invitation) error {
	inv.UpdatedAt = time.Now().UTC()
	return s.q(ctx).Save(inv).Error
}

// Invitations lists a conference's invitations by creation.
func (s *Store) Invitations(ctx context.Context, confID string) ([]Invitation, error) {
	var is []Invitation
	err := s.q(ctx).Where("conference_id = ?", confID).Order("created_at, id").Find(&is).Error
	return is, err
}

// PendingInvitation returns the user's pending invitation in a conference.
func (s *Store) PendingInvitation(ctx context.Context, confID, userID string) (*Invitation, error) {
	var inv Invitation
	err := s.q(ctx).Where("conference_id = ? AND user_id = ? AND state = ?", confID, userID, InvitationPending).First(&inv).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &inv, nil
}

// PendingInvitationsOf lists a user's pending invitations, newest first.
func (s *Store) PendingInvitationsOf(ctx context.Context, userID string) ([]Invitation, error) {
	var is []Invitation
	err := s.q(ctx).Where("user_id = ? AND state = ?", userID, InvitationPending).Order("created_at DESC, id").Find(&is).Error
	return is, err
}

// GetIdempotency returns the stored answer for (scope, key).
func (s *Store) GetIdempotency(ctx context.Context, scope, key string) (*IdempotencyRecord, error) {
	var r IdempotencyRecord
	err := s.q(ctx).First(&r, "scope = ? AND key = ?", scope, key).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &r, nil
}

// PutIdempotency stores the first answer for (scope, key); ErrConflict when
// one is already there.
func (s *Store) PutIdempotency(ctx context.Context, r *IdempotencyRecord) error {
	err := s.q(ctx).Create(r).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return ErrConflict
	}
	return notFound(err)
}

// StaleRingingLegs lists legs still dialing or ringing that were created
// before t (the ring-timeout watchdog).
func (s *Store) StaleRingingLegs(ctx context.Context, before time.Time) ([]Leg, error) {
	var ls []Leg
	err := s.q(ctx).Where("state IN ? AND created_at < ?", []string{LegDialing, LegRinging}, before).
		Order("created_at, id").Limit(500).Find(&ls).Error
	return ls, err
}

// DeleteIdempotencyBefore forgets idempotency records older than t.
func (s *Store) DeleteIdempotencyBefore(ctx context.Context, t time.Time) error {
	return s.q(ctx).Where("created_at < ?", t).Delete(&IdempotencyRecord{}).Error
}

// DeleteIdempotency forgets one record (a request that failed before it
// had an answer worth keeping).
func (s *Store) DeleteIdempotency(ctx context.Context, scope, key string) error {
	return s.q(ctx).Where("scope = ? AND key = ?", scope, key).Delete(&IdempotencyRecord{}).Error
}

// FinishIdempotency stores the answer of a reserved record.
func (s *Store) FinishIdempotency(ctx context.Context, scope, key string, status int, body string) error {
	return s.q(ctx).Model(&IdempotencyRecord{}).Where("scope = ? AND key = ?", scope, key).
		Updates(map[string]any{"status": status, "body": body}).Error
}
