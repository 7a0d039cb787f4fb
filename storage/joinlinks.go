package storage

import (
	"context"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/convoice/convoice/leg"
)

// JoinLink is a "Meet Now / Invite Using Email" link: whoever holds its
// token may join the conversation as a guest. Only the SHA-256 of the token
// is stored; the token itself is shown once, in the answer that creates it.
type JoinLink struct {
	ID               string `gorm:"primaryKey;size:36"`
	ConversationID   string `gorm:"size:36;not null;index"`
	CreatedBy        string `gorm:"size:36;not null"`
	TokenHash        string `gorm:"size:64;not null;uniqueIndex"`
	ExpiresAt        time.Time
	MaxUses          int  `gorm:"not null;default:0"` // 0: unlimited
	Uses             int  `gorm:"not null;default:0"`
	RequireAdmission bool `gorm:"not null;default:false"`
	RevokedAt        *time.Time
	CreatedAt        time.Time
}

// Guest states.
const (
	GuestLobby    = "lobby"    // waiting for a participant to admit them
	GuestAdmitted = "admitted" // in the conversation
	GuestRefused  = "refused"  // a participant refused them; never dialed
	GuestLeft     = "left"     // they left
	GuestEnded    = "ended"    // their link was revoked, or the conversation ended
)

// GuestLive reports whether a guest in state s still has a session.
func GuestLive(s string) bool { return s == GuestLobby || s == GuestAdmitted }

// Guest is someone outside the directory who joined a conversation through
// a join link. Their session token is stored only as its SHA-256.
type Guest struct {
	ID             string `gorm:"primaryKey;size:36"`
	ConversationID string `gorm:"size:36;not null;index"`
	JoinLinkID     string `gorm:"size:36;not null;index"`
	DisplayName    string `gorm:"size:200;not null"`
	Number         string `gorm:"size:32;not null"` // E.164
	State          string `gorm:"size:16;not null"`
	SessionHash    string `gorm:"size:64;not null;uniqueIndex"`
	// StartSeq: the guest's event stream starts after this event seq (the
	// events about themselves from their arrival on).
	StartSeq int64 `gorm:"not null;default:0"`
	// SinceSeq and SinceMessageID: what of the conversation the guest may
	// see, set when they are admitted: events after SinceSeq, messages
	// after SinceMessageID. Nothing before (and nothing while in the lobby).
	SinceSeq       int64  `gorm:"not null;default:0"`
	SinceMessageID int64  `gorm:"not null;default:0"`
	EndReason      string `gorm:"size:200;not null;default:''"`
	CreatedAt      time.Time
	AdmittedAt     *time.Time
	LeftAt         *time.Time
	UpdatedAt      time.Time
}

// JoinAttempt counts the join attempts of one client address in one
// fixed window (unix seconds of its start). Kept in the database so that
// the limit holds across replicas.
type JoinAttempt struct {
	Client      string `gorm:"primaryKey;size:64"`
	WindowStart int64  `gorm:"primaryKey;autoIncrement:false;index"`
	Attempts    int    `gorm:"not null;default:0"`
}

// CreateJoinLink inserts a link.
func (s *Store) CreateJoinLink(ctx context.Context, l *JoinLink) error {
	return notFound(s.q(ctx).Create(l).Error)
}

// GetJoinLink loads one link by id.
func (s *Store) GetJoinLink(ctx context.Context, id string) (*JoinLink, error) {
	var l JoinLink
	if err := s.q(ctx).First(&l, "id = ?", id).Error; err != nil {
		return nil, notFound(err)
	}
	return &l, nil
}

// JoinLinkByTokenHash finds a link by the hash of its token, revoked and
// expired ones included (the caller decides and answers alike).
func (s *Store) JoinLinkByTokenHash(ctx context.Context, hash string) (*JoinLink, error) {
	var l JoinLink
	if err := s.q(ctx).First(&l, "token_hash = ?", hash).Error; err != nil {
		return nil, notFound(err)
	}
	return &l, nil
}

// JoinLinks lists a conversation's links, newest first.
func (s *Store) JoinLinks(ctx context.Context, convID string) ([]JoinLink, error) {
	var ls []JoinLink
	err := s.q(ctx).Where("conversation_id = ?", convID).Order("created_at DESC, id").Find(&ls).Error
	return ls, err
}

// UseJoinLink counts one use of a link, atomically and only while it is
// usable at now (not revoked, not expired, uses left): false when it is
// not.
func (s *Store) UseJoinLink(ctx context.Context, id string, now time.Time) (bool, error) {
	res := s.q(ctx).Model(&JoinLink{}).
		Where("id = ? AND revoked_at IS NULL AND expires_at > ? AND (max_uses = 0 OR uses < max_uses)", id, now).
		Update("uses", gorm.Expr("uses + 1"))
	return res.RowsAffected == 1, res.Error
}

// UnuseJoinLink gives back one use (a join whose call could not be placed).
func (s *Store) UnuseJoinLink(ctx context.Context, id string) error {
	return s.q(ctx).Model(&JoinLink{}).Where("id = ? AND uses > 0", id).
		Update("uses", gorm.Expr("uses - 1")).Error
}

// RevokeJoinLink marks a link revoked; false when it already was.
func (s *Store) RevokeJoinLink(ctx context.Context, id string, at time.Time) (bool, error) {
	res := s.q(ctx).Model(&JoinLink{}).Where("id = ? AND revoked_at IS NULL", id).Update("revoked_at", at)
	return res.RowsAffected == 1, res.Error
}

// CreateGuest inserts a guest.
func (s *Store) CreateGuest(ctx context.Context, g *Guest) error {
	return notFound(s.q(ctx).Create(g).Error)
}

// GetGuest loads one guest.
func (s *Store) GetGuest(ctx context.Context, id string) (*Guest, error) {
	var g Guest
	if err := s.q(ctx).First(&g, "id = ?", id).Error; err != nil {
		return nil, notFound(err)
	}
	return &g, nil
}

// GetGuestForUpdate loads a guest and, on PostgreSQL, locks its row for the
// rest of the transaction.
func (s *Store) GetGuestForUpdate(ctx context.Context, id string) (*Guest, error) {
	var g Guest
	q := s.q(ctx)
	if s.dialect == "postgres" {
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	if err := q.First(&g, "id = ?", id).Error; err != nil {
		return nil, notFound(err)
	}
	return &g, nil
}

// GuestBySessionHash finds a guest by the hash of their session token,
// whatever their state.
func (s *Store) GuestBySessionHash(ctx context.Context, hash string) (*Guest, error) {
	var g Guest
	if err := s.q(ctx).First(&g, "session_hash = ?", hash).Error; err != nil {
		return nil, notFound(err)
	}
	return &g, nil
}

// SaveGuest writes every field of a guest.
func (s *Store) SaveGuest(ctx context.Context, g *Guest) error {
	g.UpdatedAt = time.Now().UTC()
	return s.q(ctx).Save(g).Error
}

// Guests lists a conversation's guests by arrival.
func (s *Store) Guests(ctx context.Context, convID string) ([]Guest, error) {
	var gs []Guest
	err := s.q(ctx).Where("conversation_id = ?", convID).Order("created_at, id").Find(&gs).Error
	return gs, err
}

// LiveGuestsOfLink lists the guests of a link that still have a session.
func (s *Store) LiveGuestsOfLink(ctx context.Context, linkID string) ([]Guest, error) {
	var gs []Guest
	err := s.q(ctx).Where("join_link_id = ? AND state IN ?", linkID, []string{GuestLobby, GuestAdmitted}).
		Order("created_at, id").Find(&gs).Error
	return gs, err
}

// LiveGuestsOfConversation lists the guests of a conversation that still
// have a session.
func (s *Store) LiveGuestsOfConversation(ctx context.Context, convID string) ([]Guest, error) {
	var gs []Guest
	err := s.q(ctx).Where("conversation_id = ? AND state IN ?", convID, []string{GuestLobby, GuestAdmitted}).
		Order("created_at, id").Find(&gs).Error
	return gs, err
}

// LiveLegOfGuest returns the guest's live leg, in any conference.
func (s *Store) LiveLegOfGuest(ctx context.Context, guestID string) (*Leg, error) {
	var l Leg
	err := s.q(ctx).Where("guest_id = ? AND state IN ?", guestID, leg.Live()).
		Order("created_at DESC, id").First(&l).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &l, nil
}

// LatestLegOfGuest returns the guest's newest leg, live or not.
func (s *Store) LatestLegOfGuest(ctx context.Context, guestID string) (*Leg, error) {
	var l Leg
	err := s.q(ctx).Where("guest_id = ?", guestID).Order("created_at DESC, id").First(&l).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &l, nil
}

// LastMessageID is the id of a conversation's newest message (0: none).
func (s *Store) LastMessageID(ctx context.Context, convID string) (int64, error) {
	var id int64
	err := s.q(ctx).Model(&Message{}).Select("COALESCE(MAX(id), 0)").Where("conversation_id = ?", convID).Scan(&id).Error
	return id, err
}

// CountJoinAttempt records one join attempt of client in the bucket that
// starts at bucket (unix seconds) and returns how many attempts the
// buckets from since on hold, and the start of the oldest of them that
// holds any. Buckets that ended before keepAfter are forgotten on the way.
func (s *Store) CountJoinAttempt(ctx context.Context, client string, bucket, since, keepAfter int64) (n int, oldest int64, err error) {
	err = s.InTx(ctx, func(tx *Store) error {
		if err := tx.q(ctx).Where("window_start < ?", keepAfter).Delete(&JoinAttempt{}).Error; err != nil {
			return err
		}
		err := tx.q(ctx).Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "client"}, {Name: "window_start"}},
			DoUpdates: clause.Assignments(map[string]any{"attempts": gorm.Expr("join_attempts.attempts + 1")}),
		}).Create(&JoinAttempt{Client: client, WindowStart: bucket, Attempts: 1}).Error
		if err != nil {
			return err
		}
		var row struct {
			N      int
			Oldest int64
		}
		err = tx.q(ctx).Model(&JoinAttempt{}).Select("COALESCE(SUM(attempts), 0) AS n, COALESCE(MIN(window_start), 0) AS oldest").
			Where("client = ? AND window_start >= ?", client, since).Scan(&row).Error
		n, oldest = row.N, row.Oldest
		return err
	})
	return n, oldest, err
}
