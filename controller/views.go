package controller

import (
	"strconv"
	"time"

	"github.com/convoice/convoice/storage"
)

// Views are what the API answers and what the event stream carries: the
// same JSON in both places, so a client can apply an event exactly as it
// applies a GET.

// NumberView is a published number.
type NumberView struct {
	Label   string `json:"label"`
	Number  string `json:"number"`
	Default bool   `json:"default"`
}

// ContactView is a user as seen on someone's contact list.
type ContactView struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	Email       string `json:"email"`
}

// UserView is a user with their numbers (and contacts for /me).
type UserView struct {
	ID          string       `json:"id"`
	DisplayName string       `json:"display_name"`
	Email       string       `json:"email"`
	Role        string       `json:"role"`
	Numbers     []NumberView `json:"numbers"`
	CreatedAt   time.Time    `json:"created_at"`
}

// MeView is the caller: a user with their contact list.
type MeView struct {
	UserView
	Contacts []ContactView `json:"contacts"`
}

func userView(u *storage.User) UserView {
	v := UserView{ID: u.ID, DisplayName: u.DisplayName, Email: u.Email, Role: u.Role, CreatedAt: u.CreatedAt, Numbers: []NumberView{}}
	for _, n := range u.Numbers {
		v.Numbers = append(v.Numbers, NumberView{Label: n.Label, Number: n.Number, Default: n.IsDefault})
	}
	return v
}

// ParticipantView is a member of a conversation: a user, or (role
// "guest") a guest who joined with a join link and was admitted.
type ParticipantView struct {
	UserID      string     `json:"user_id,omitempty"`
	GuestID     string     `json:"guest_id,omitempty"`
	DisplayName string     `json:"display_name"`
	Role        string     `json:"role"`
	JoinedAt    time.Time  `json:"joined_at"`
	LeftAt      *time.Time `json:"left_at,omitempty"`
}

// ConversationView is a conversation with its participants.
type ConversationView struct {
	ID           string            `json:"id"`
	Kind         string            `json:"kind"`
	Subject      string            `json:"subject"`
	CreatorID    string            `json:"creator_id"`
	PresenterID  *string           `json:"presenter_id"`
	CreatedAt    time.Time         `json:"created_at"`
	EndedAt      *time.Time        `json:"ended_at,omitempty"`
	Participants []ParticipantView `json:"participants"`
	// LastEventID is the id of the newest event: a client that loads the
	// conversation then follows the stream from here misses nothing.
	LastEventID string `json:"last_event_id"`
	// Audio is the active conference, if any (id and state only).
	Audio *ConferenceRef `json:"audio,omitempty"`
}

// ConferenceRef names a conference and its state.
type ConferenceRef struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// MessageView is one IM message.
type MessageView struct {
	ID             string    `json:"id"`
	ConversationID string    `json:"conversation_id"`
	UserID         *string   `json:"user_id,omitempty"`
	GuestID        *string   `json:"guest_id,omitempty"`
	AuthorName     string    `json:"author_name"`
	Text           string    `json:"text"`
	CreatedAt      time.Time `json:"created_at"`
}

func messageView(m *storage.Message) MessageView {
	return MessageView{ID: strconv.FormatInt(m.ID, 10), ConversationID: m.ConversationID, UserID: m.UserID,
		GuestID: m.GuestID, AuthorName: m.AuthorName, Text: m.Text, CreatedAt: m.CreatedAt}
}

// LegView is one phone call of a conference.
type LegView struct {
	ID             string     `json:"id"`
	ConferenceID   string     `json:"conference_id"`
	ConversationID string     `json:"conversation_id"`
	UserID         *string    `json:"user_id,omitempty"`
	GuestID        *string    `json:"guest_id,omitempty"`
	InvitationID   *string    `json:"invitation_id,omitempty"`
	Number         string     `json:"number"`
	State          string     `json:"state"`
	Cause          int        `json:"cause"`
	CauseText      string     `json:"cause_text,omitempty"`
	EndReason      string     `json:"end_reason,omitempty"`
	Muted          bool       `json:"muted"`
	Talking        bool       `json:"talking"`
	CreatedAt      time.Time  `json:"created_at"`
	RingingAt      *time.Time `json:"ringing_at,omitempty"`
	ConnectedAt    *time.Time `json:"connected_at,omitempty"`
	EndedAt        *time.Time `json:"ended_at,omitempty"`
	// UpdatedAt is the last change (state, mute, talking): how long a call
	// has been ringing, or how old what a screen shows is.
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

func legView(l *storage.Leg) LegView {
	v := LegView{ID: l.ID, ConferenceID: l.ConferenceID, ConversationID: l.ConversationID, UserID: l.UserID,
		GuestID: l.GuestID, InvitationID: l.InvitationID, Number: l.Number, State: l.State, Cause: l.Cause,
		CauseText: l.CauseText, EndReason: l.EndReason, Muted: l.Muted, Talking: l.Talking, CreatedAt: l.CreatedAt,
		RingingAt: l.RingingAt, ConnectedAt: l.ConnectedAt, EndedAt: l.EndedAt}
	if !l.UpdatedAt.IsZero() {
		u := l.UpdatedAt
		v.UpdatedAt = &u
	}
	return v
}

// InvitationView is an offer to join the audio.
type InvitationView struct {
	ID             string    `json:"id"`
	ConferenceID   string    `json:"conference_id"`
	ConversationID string    `json:"conversation_id"`
	UserID         string    `json:"user_id"`
	InvitedBy      string    `json:"invited_by"`
	State          string    `json:"state"`
	LegID          *string   `json:"leg_id,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

func invitationView(i *storage.Invitation) InvitationView {
	return InvitationView{ID: i.ID, ConferenceID: i.ConferenceID, ConversationID: i.ConversationID, UserID: i.UserID,
		InvitedBy: i.InvitedBy, State: i.State, LegID: i.LegID, CreatedAt: i.CreatedAt, UpdatedAt: i.UpdatedAt}
}

// ConferenceView is the audio of a conversation with its legs and
// invitations.
type ConferenceView struct {
	ID             string           `json:"id"`
	ConversationID string           `json:"conversation_id"`
	State          string           `json:"state"`
	CreatedBy      string           `json:"created_by"`
	CreatedAt      time.Time        `json:"created_at"`
	EndedAt        *time.Time       `json:"ended_at,omitempty"`
	EndReason      string           `json:"end_reason,omitempty"`
	Legs           []LegView        `json:"legs"`
	Invitations    []InvitationView `json:"invitations"`
}

func conferenceView(c *storage.Conference) ConferenceView {
	return ConferenceView{ID: c.ID, ConversationID: c.ConversationID, State: c.State, CreatedBy: c.CreatedBy,
		CreatedAt: c.CreatedAt, EndedAt: c.EndedAt, EndReason: c.EndReason, Legs: []LegView{}, Invitations: []InvitationView{}}
}

// JoinResult answers a dial request.
type JoinResult struct {
	Conference ConferenceRef   `json:"conference"`
	Leg        LegView         `json:"leg"`
	Invitation *InvitationView `json:"invitation,omitempty"`
}

// InvitationResult answers accept / decline / redirect.
type InvitationResult struct {
	Invitation InvitationView `json:"invitation"`
	Leg        *LegView       `json:"leg,omitempty"`
}
