package storage

import (
	"time"

	"github.com/convoice/convoice/leg"
)

// The models are plain structs: gorm maps them, the controller reads them.
// Ids are strings (UUIDs) so that the ids of legs and conferences can be
// handed to the PBX as channel and bridge ids unchanged.

// Roles of users.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// User is a person in the directory.
type User struct {
	ID          string `gorm:"primaryKey;size:36"`
	DisplayName string `gorm:"size:200;not null"`
	Email       string `gorm:"size:320;not null;uniqueIndex"`
	Role        string `gorm:"size:16;not null;default:user"`
	CreatedAt   time.Time
	Numbers     []PublishedNumber `gorm:"foreignKey:UserID;constraint:OnDelete:CASCADE"`
	// Identity (migration 10, storage/identity.go): who provisions the
	// person ("" by hand, "scim", "ldap"), their id there, and when they
	// were deactivated (nil: active) or removed by the provisioner.
	Source        string `gorm:"size:16;not null;default:''"`
	ExternalID    string `gorm:"size:200;not null;default:''"`
	DeactivatedAt *time.Time
	RemovedAt     *time.Time
}

// PublishedNumber is one of a user's phone numbers (work, mobile, …), in
// E.164. Exactly one per user is the default when the user has any.
type PublishedNumber struct {
	ID        int64  `gorm:"primaryKey;autoIncrement"`
	UserID    string `gorm:"size:36;not null;index;uniqueIndex:ux_number_label,priority:1"`
	Label     string `gorm:"size:32;not null;uniqueIndex:ux_number_label,priority:2"`
	Number    string `gorm:"size:32;not null"`
	IsDefault bool   `gorm:"not null;default:false"`
	Position  int    `gorm:"not null;default:0"`
}

// Contact says UserID has ContactID on their contact list.
type Contact struct {
	UserID    string `gorm:"primaryKey;size:36"`
	ContactID string `gorm:"primaryKey;size:36;index"`
	CreatedAt time.Time
}

// APIToken is a bearer token of a user, stored only as its SHA-256 hash.
type APIToken struct {
	ID         string `gorm:"primaryKey;size:36"`
	UserID     string `gorm:"size:36;not null;index"`
	Hash       string `gorm:"size:64;not null;uniqueIndex"`
	Name       string `gorm:"size:100"`
	CreatedAt  time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
	ExpiresAt  *time.Time // nil: never (migration 10)
}

// Conversation kinds.
const (
	KindIM      = "im"
	KindSharing = "sharing"
)

// Conversation is an IM or desktop-sharing session.
type Conversation struct {
	ID          string  `gorm:"primaryKey;size:36"`
	Kind        string  `gorm:"size:16;not null"`
	Subject     string  `gorm:"size:500;not null;default:''"`
	CreatorID   string  `gorm:"size:36;not null;index"`
	PresenterID *string `gorm:"size:36"`
	// EventSeq is the seq of the last event appended to the conversation's
	// log; it is bumped in the same transaction as the insert, so seqs are
	// gap-free per conversation on every engine.
	EventSeq  int64 `gorm:"not null;default:0"`
	CreatedAt time.Time
	EndedAt   *time.Time
}

// Participant roles.
const (
	RoleOrganizer   = "organizer"
	RoleParticipant = "participant"
)

// Participant is a user's membership of a conversation.
type Participant struct {
	ConversationID string `gorm:"primaryKey;size:36"`
	UserID         string `gorm:"primaryKey;size:36;index"`
	Role           string `gorm:"size:16;not null"`
	JoinedAt       time.Time
	LeftAt         *time.Time
}

// Message is one IM message.
type Message struct {
	ID             int64  `gorm:"primaryKey;autoIncrement"`
	ConversationID string `gorm:"size:36;not null;index:ix_message_conv,priority:1"`
	UserID         *string
	GuestID        *string
	AuthorName     string    `gorm:"size:200;not null"`
	Text           string    `gorm:"not null"`
	CreatedAt      time.Time `gorm:"index:ix_message_conv,priority:2"`
}

// Event is one entry of a conversation's append-only event log. Data is the
// JSON payload as published on the event stream.
type Event struct {
	ConversationID string `gorm:"primaryKey;size:36"`
	Seq            int64  `gorm:"primaryKey;autoIncrement:false"`
	Type           string `gorm:"size:64;not null"`
	Data           string `gorm:"not null"`
	CreatedAt      time.Time
	// ForUser, set only in memory, makes this the copy of the event on
	// that user's own stream (fanout.go): Seq is then the user's seq.
	ForUser string `gorm:"-"`
}

// Conference states.
const (
	ConferenceActive = "active"
	ConferenceEnded  = "ended"
)

// Conference is the audio part of a conversation; at most one is active per
// conversation (a partial unique index enforces it).
type Conference struct {
	ID             string `gorm:"primaryKey;size:36"`
	ConversationID string `gorm:"size:36;not null;index"`
	State          string `gorm:"size:16;not null"`
	Node           string `gorm:"size:64;not null;default:''"`
	CreatedBy      string `gorm:"size:36;not null"`
	CreatedAt      time.Time
	EndedAt        *time.Time
	EndReason      string `gorm:"size:200;not null;default:''"`
}

// Leg states (API-CONTRACT.md); the state machine is leg's table.
const (
	LegDialing     = leg.Dialing
	LegRinging     = leg.Ringing
	LegConfirming  = leg.Confirming
	LegConnected   = leg.Connected
	LegEnded       = leg.Ended
	LegBusy        = leg.Busy
	LegNoAnswer    = leg.NoAnswer
	LegRejected    = leg.Rejected
	LegFailed      = leg.Failed
	LegCancelled   = leg.Cancelled
	LegUnconfirmed = leg.Unconfirmed
)

// LegLive reports whether a leg in state s still occupies a phone (the
// table's live states).
func LegLive(s string) bool { return leg.IsLive(s) }

// Leg is one phone call placed by the PBX into a conference.
type Leg struct {
	ID             string  `gorm:"primaryKey;size:36"`
	ConferenceID   string  `gorm:"size:36;not null;index"`
	ConversationID string  `gorm:"size:36;not null;index"`
	UserID         *string `gorm:"size:36;index"`
	GuestID        *string `gorm:"size:36"`
	InvitationID   *string `gorm:"size:36"`
	Node           string  `gorm:"size:64;not null;default:''"`
	Number         string  `gorm:"size:32;not null"`
	State          string  `gorm:"size:16;not null;index"`
	Cause          int     `gorm:"not null;default:0"`
	CauseText      string  `gorm:"size:100;not null;default:''"`
	// EndReason is ours: "hung up by <user>", "pbx restarted", "gone from
	// the PBX during resync", "ring timeout".
	EndReason string `gorm:"size:200;not null;default:''"`
	Muted     bool   `gorm:"not null;default:false"`
	Talking   bool   `gorm:"not null;default:false"`
	// HangupRequested remembers that we hung the leg up ourselves: ARI
	// reports the same cause 16 for our cancel as for a normal hangup.
	HangupRequested bool `gorm:"not null;default:false"`
	CreatedAt       time.Time
	RingingAt       *time.Time
	// AnsweredAt is when the far end picked up: before the confirm-to-join
	// prompt (confirming), or with the join (connected).
	AnsweredAt  *time.Time
	ConnectedAt *time.Time
	EndedAt     *time.Time
	UpdatedAt   time.Time
}

// Invitation states (API-CONTRACT.md).
const (
	InvitationPending    = "pending"
	InvitationAccepted   = "accepted"
	InvitationDeclined   = "declined"
	InvitationRedirected = "redirected"
	InvitationCancelled  = "cancelled"
	InvitationExpired    = "expired"
)

// Invitation offers a participant to join a conference.
type Invitation struct {
	ID             string  `gorm:"primaryKey;size:36"`
	ConferenceID   string  `gorm:"size:36;not null;index"`
	ConversationID string  `gorm:"size:36;not null;index"`
	UserID         string  `gorm:"size:36;not null;index"`
	InvitedBy      string  `gorm:"size:36;not null"`
	State          string  `gorm:"size:16;not null"`
	LegID          *string `gorm:"size:36"`
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// IdempotencyRecord keeps the first answer to a dial request with an
// Idempotency-Key, so a retry (or a double click) never rings twice, also
// across a restart.
type IdempotencyRecord struct {
	Scope       string `gorm:"primaryKey;size:64"`
	Key         string `gorm:"primaryKey;size:200"`
	RequestHash string `gorm:"size:64;not null"`
	Status      int    `gorm:"not null"`
	Body        string `gorm:"not null"`
	CreatedAt   time.Time
}

// SchemaMigration records an applied migration.
type SchemaMigration struct {
	Version   int    `gorm:"primaryKey;autoIncrement:false"`
	Name      string `gorm:"size:200;not null"`
	AppliedAt time.Time
}
