package storage

import (
	"context"
	"database/sql"
	"time"

	"gorm.io/gorm"
)

// CreateUser inserts a user with their numbers.
func (s *Store) CreateUser(ctx context.Context, u *User) error {
	return notFound(s.q(ctx).Create(u).Error)
}

// GetUser loads a user with numbers ordered as published, in one
// statement.
func (s *Store) GetUser(ctx context.Context, id string) (*User, error) {
	rows, err := s.queryRaw(ctx, `SELECT `+userWithNumbersColumns+`
 FROM users u LEFT JOIN published_numbers n ON n.user_id = u.id WHERE u.id = ? ORDER BY n.position, n.id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var u *User
	for rows.Next() {
		var r userRow
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, err
		}
		r.addTo(&u)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if u == nil {
		return nil, ErrNotFound
	}
	return u, nil
}

// userWithNumbersColumns are a user's columns (u) and one of their
// numbers' (n, NULL when none), as userRow scans them.
const userWithNumbersColumns = `u.id, u.display_name, u.email, u.role, u.created_at,
 n.id, n.user_id, n.label, n.number, n.is_default, n.position`

// userRow is one row of userWithNumbersColumns.
type userRow struct {
	user               User
	nid, pos           sql.NullInt64
	uid, label, number sql.NullString
	def                sql.NullBool
}

func (r *userRow) dest() []any {
	return []any{&r.user.ID, &r.user.DisplayName, &r.user.Email, &r.user.Role, &r.user.CreatedAt,
		&r.nid, &r.uid, &r.label, &r.number, &r.def, &r.pos}
}

// addTo makes the user of the first row *u, and adds each row's number.
func (r *userRow) addTo(u **User) {
	if *u == nil {
		r.user.CreatedAt = r.user.CreatedAt.UTC()
		cp := r.user
		*u = &cp
	}
	if r.nid.Valid {
		(*u).Numbers = append((*u).Numbers, PublishedNumber{ID: r.nid.Int64, UserID: r.uid.String, Label: r.label.String,
			Number: r.number.String, IsDefault: r.def.Bool, Position: int(r.pos.Int64)})
	}
}

// GetUsers loads several users (numbers not loaded), in no particular order.
func (s *Store) GetUsers(ctx context.Context, ids []string) ([]User, error) {
	var us []User
	if len(ids) == 0 {
		return nil, nil
	}
	err := s.q(ctx).Where("id IN ?", ids).Find(&us).Error
	return us, err
}

// ListUsers lists the directory by display name.
func (s *Store) ListUsers(ctx context.Context) ([]User, error) {
	var us []User
	err := s.q(ctx).Preload("Numbers", func(db *gorm.DB) *gorm.DB { return db.Order("position, id") }).
		Order("display_name, id").Find(&us).Error
	return us, err
}

// CountUsers counts users (an empty directory gets the demo seed).
func (s *Store) CountUsers(ctx context.Context) (int64, error) {
	var n int64
	err := s.q(ctx).Model(&User{}).Count(&n).Error
	return n, err
}

// ReplaceNumbers replaces a user's published numbers.
func (s *Store) ReplaceNumbers(ctx context.Context, userID string, nums []PublishedNumber) error {
	if err := s.q(ctx).Where("user_id = ?", userID).Delete(&PublishedNumber{}).Error; err != nil {
		return err
	}
	for i := range nums {
		nums[i].ID = 0
		nums[i].UserID = userID
		nums[i].Position = i
	}
	if len(nums) == 0 {
		return nil
	}
	return notFound(s.q(ctx).Create(&nums).Error)
}

// ReplaceContacts replaces a user's contact list.
func (s *Store) ReplaceContacts(ctx context.Context, userID string, contactIDs []string) error {
	if err := s.q(ctx).Where("user_id = ?", userID).Delete(&Contact{}).Error; err != nil {
		return err
	}
	now := time.Now().UTC()
	cs := make([]Contact, 0, len(contactIDs))
	for _, c := range contactIDs {
		cs = append(cs, Contact{UserID: userID, ContactID: c, CreatedAt: now})
	}
	if len(cs) == 0 {
		return nil
	}
	return notFound(s.q(ctx).Create(&cs).Error)
}

// Contacts lists a user's contacts as users, by display name.
func (s *Store) Contacts(ctx context.Context, userID string) ([]User, error) {
	var us []User
	err := s.q(ctx).Joins("JOIN contacts ON contacts.contact_id = users.id").
		Where("contacts.user_id = ?", userID).Order("users.display_name, users.id").Find(&us).Error
	return us, err
}

// MetUsers returns which of ids have been in a conversation with userID
// (at any time): the people whose e-mail address userID may see.
func (s *Store) MetUsers(ctx context.Context, userID string, ids []string) (map[string]bool, error) {
	met := map[string]bool{}
	if len(ids) == 0 {
		return met, nil
	}
	var found []string
	err := s.q(ctx).Raw(`SELECT DISTINCT other.user_id FROM participants me
 JOIN participants other ON other.conversation_id = me.conversation_id
 WHERE me.user_id = ? AND other.user_id IN ?`, userID, ids).Scan(&found).Error
	for _, id := range found {
		met[id] = true
	}
	return met, err
}

// IsContact reports whether contactID is on userID's list.
func (s *Store) IsContact(ctx context.Context, userID, contactID string) (bool, error) {
	var n int64
	err := s.q(ctx).Model(&Contact{}).Where("user_id = ? AND contact_id = ?", userID, contactID).Count(&n).Error
	return n > 0, err
}

// CreateToken stores a token (hash only).
func (s *Store) CreateToken(ctx context.Context, t *APIToken) error {
	return notFound(s.q(ctx).Create(t).Error)
}

// UserByTokenHash finds the live token with that hash and its user.
func (s *Store) UserByTokenHash(ctx context.Context, hash string) (*User, *APIToken, error) {
	var t APIToken
	if err := s.q(ctx).First(&t, "hash = ? AND revoked_at IS NULL", hash).Error; err != nil {
		return nil, nil, notFound(err)
	}
	u, err := s.GetUser(ctx, t.UserID)
	if err != nil {
		return nil, nil, err
	}
	return u, &t, nil
}

// ListTokens lists a user's tokens (hashes included; callers drop them).
func (s *Store) ListTokens(ctx context.Context, userID string) ([]APIToken, error) {
	var ts []APIToken
	err := s.q(ctx).Where("user_id = ?", userID).Order("created_at").Find(&ts).Error
	return ts, err
}

// RevokeToken marks a token of the user revoked.
func (s *Store) RevokeToken(ctx context.Context, userID, tokenID string) error {
	res := s.q(ctx).Model(&APIToken{}).Where("id = ? AND user_id = ? AND revoked_at IS NULL", tokenID, userID).
		Update("revoked_at", time.Now().UTC())
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected == 0 {
		return ErrNotFound
	}
	return nil
}
