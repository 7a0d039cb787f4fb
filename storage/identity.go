package storage

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"gorm.io/gorm"
)

func orderNumbers(db *gorm.DB) *gorm.DB { return db.Order("position, id") }

// Session is a web sign-in (OpenID Connect): the cookie holds a secret
// whose SHA-256 is the id, so a stolen database does not sign anyone in.
// Stored so that sign-out, deactivation and an admin can end it on every
// replica.
type Session struct {
	ID         string    `gorm:"primaryKey;size:64"` // hash of the cookie's secret
	UserID     string    `gorm:"size:36;not null;index"`
	Method     string    `gorm:"size:16;not null;default:''"` // "oidc"
	CreatedAt  time.Time `gorm:"not null"`
	LastSeenAt time.Time `gorm:"not null"`
	ExpiresAt  time.Time `gorm:"not null"` // the absolute limit
	RevokedAt  *time.Time
}

// AuthFailure is one failed authentication from a client address; the ones
// in the sliding window throttle that address on every replica.
type AuthFailure struct {
	ID     int64     `gorm:"primaryKey;autoIncrement"`
	Remote string    `gorm:"size:64;not null;index:ix_auth_failure,priority:1"`
	At     time.Time `gorm:"not null;index:ix_auth_failure,priority:2"`
}

// Principal is who a live token or session belongs to: enough to
// authorise a request without loading the whole user.
type Principal struct {
	UserID, Role, DisplayName string
	// CredentialID is the token's or the session's id; LastUsed when it
	// was last seen (tokens: nil when never).
	CredentialID string
	LastUsed     *time.Time
}

// PrincipalByTokenHash finds the user of a live token (not revoked, not
// expired at now, its user active) in one query.
func (s *Store) PrincipalByTokenHash(ctx context.Context, hash string, now time.Time) (Principal, error) {
	row, err := s.queryRowRaw(ctx, `SELECT u.id, u.role, u.display_name, t.id, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id
 WHERE t.hash = ? AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?) AND u.deactivated_at IS NULL`, hash, now.UTC())
	if err != nil {
		return Principal{}, err
	}
	var p Principal
	var last sql.NullTime
	if err := row.Scan(&p.UserID, &p.Role, &p.DisplayName, &p.CredentialID, &last); err != nil {
		return Principal{}, rowErr(err)
	}
	p.LastUsed = ptime(last)
	return p, nil
}

// TouchToken records that a token was used at t.
func (s *Store) TouchToken(ctx context.Context, id string, t time.Time) error {
	_, err := s.execRaw(ctx, `UPDATE api_tokens SET last_used_at = ? WHERE id = ?`, t.UTC(), id)
	return err
}

// CreateSession stores a new web session.
func (s *Store) CreateSession(ctx context.Context, ss *Session) error {
	return notFound(s.q(ctx).Create(ss).Error)
}

// PrincipalBySession finds the user of a live session: not revoked, seen
// after idleSince, not past its absolute limit at now, its user active.
func (s *Store) PrincipalBySession(ctx context.Context, id string, now, idleSince time.Time) (Principal, error) {
	row, err := s.queryRowRaw(ctx, `SELECT u.id, u.role, u.display_name, x.id, x.last_seen_at FROM sessions x JOIN users u ON u.id = x.user_id
 WHERE x.id = ? AND x.revoked_at IS NULL AND x.expires_at > ? AND x.last_seen_at > ? AND u.deactivated_at IS NULL`, id, now.UTC(), idleSince.UTC())
	if err != nil {
		return Principal{}, err
	}
	var p Principal
	var last time.Time
	if err := row.Scan(&p.UserID, &p.Role, &p.DisplayName, &p.CredentialID, &last); err != nil {
		return Principal{}, rowErr(err)
	}
	last = last.UTC()
	p.LastUsed = &last
	return p, nil
}

// TouchSession records that a session was used at t (its idle limit
// counts from then).
func (s *Store) TouchSession(ctx context.Context, id string, t time.Time) error {
	_, err := s.execRaw(ctx, `UPDATE sessions SET last_seen_at = ? WHERE id = ? AND revoked_at IS NULL`, t.UTC(), id)
	return err
}

// RevokeSession ends one session; it reports whether it was live.
func (s *Store) RevokeSession(ctx context.Context, id string, t time.Time) (bool, error) {
	res, err := s.execRaw(ctx, `UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, t.UTC(), id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// RevokeUserCredentials revokes every live token and session of a user and
// says how many.
func (s *Store) RevokeUserCredentials(ctx context.Context, userID string, t time.Time) (int64, error) {
	var total int64
	for _, q := range []string{
		`UPDATE api_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL`,
		`UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL`,
	} {
		res, err := s.execRaw(ctx, q, t.UTC(), userID)
		if err != nil {
			return total, err
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// DeleteSessionsBefore forgets sessions that ended (expired or revoked)
// before t.
func (s *Store) DeleteSessionsBefore(ctx context.Context, t time.Time) error {
	_, err := s.execRaw(ctx, `DELETE FROM sessions WHERE expires_at < ? OR revoked_at < ?`, t.UTC(), t.UTC())
	return err
}

// AddAuthFailure records a failed authentication from remote.
func (s *Store) AddAuthFailure(ctx context.Context, remote string, at time.Time) error {
	return s.q(ctx).Create(&AuthFailure{Remote: remote, At: at.UTC()}).Error
}

// AuthFailuresSince counts remote's failures after since and gives the
// time of the oldest of them.
func (s *Store) AuthFailuresSince(ctx context.Context, remote string, since time.Time) (int64, time.Time, error) {
	q := s.q(ctx).Model(&AuthFailure{}).Where("remote = ? AND at > ?", remote, since.UTC())
	var n int64
	if err := q.Count(&n).Error; err != nil || n == 0 {
		return n, time.Time{}, err
	}
	var first []AuthFailure
	err := s.q(ctx).Where("remote = ? AND at > ?", remote, since.UTC()).Order("at").Limit(1).Find(&first).Error
	if err != nil || len(first) == 0 {
		return n, time.Time{}, err
	}
	return n, first[0].At.UTC(), nil
}

// DeleteAuthFailuresBefore forgets failures older than t.
func (s *Store) DeleteAuthFailuresBefore(ctx context.Context, t time.Time) error {
	_, err := s.execRaw(ctx, `DELETE FROM auth_failures WHERE at < ?`, t.UTC())
	return err
}

// GetUserFull loads a user with numbers and the identity columns, removed
// ones included.
func (s *Store) GetUserFull(ctx context.Context, id string) (*User, error) {
	var u User
	err := s.q(ctx).Preload("Numbers", orderNumbers).First(&u, "id = ?", id).Error
	if err != nil {
		return nil, notFound(err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return &u, nil
}

// UserQuery narrows FindUsers; empty fields match everything.
type UserQuery struct {
	Email      string // exact, case-insensitive
	ExternalID string
	Source     string
	// WithRemoved includes users a provisioner removed.
	WithRemoved bool
}

// FindUsers lists the users matching q, with their numbers, oldest first.
func (s *Store) FindUsers(ctx context.Context, q UserQuery) ([]User, error) {
	db := s.q(ctx).Preload("Numbers", orderNumbers)
	if q.Email != "" {
		db = db.Where("email = ?", strings.ToLower(q.Email))
	}
	if q.ExternalID != "" {
		db = db.Where("external_id = ?", q.ExternalID)
	}
	if q.Source != "" {
		db = db.Where("source = ?", q.Source)
	}
	if !q.WithRemoved {
		db = db.Where("removed_at IS NULL")
	}
	var us []User
	err := db.Order("created_at, id").Find(&us).Error
	for i := range us {
		us[i].CreatedAt = us[i].CreatedAt.UTC()
	}
	return us, err
}

// UpdateUserIdentity saves a user's name, e-mail, source, external id,
// deactivation and removal (not numbers: ReplaceNumbers).
func (s *Store) UpdateUserIdentity(ctx context.Context, u *User) error {
	return notFound(s.q(ctx).Model(&User{}).Where("id = ?", u.ID).Updates(map[string]any{
		"display_name": u.DisplayName, "email": u.Email, "source": u.Source, "external_id": u.ExternalID,
		"deactivated_at": u.DeactivatedAt, "removed_at": u.RemovedAt,
	}).Error)
}

// LiveLegsOfUser lists every leg of a user that still holds a phone.
func (s *Store) LiveLegsOfUser(ctx context.Context, userID string) ([]Leg, error) {
	return s.legs(ctx, `user_id = ? AND state IN (?, ?, ?)`, userID, LegDialing, LegRinging, LegConnected)
}
