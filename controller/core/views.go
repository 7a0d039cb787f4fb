package core

import (
	"time"

	"github.com/convoice/convoice/storage"
)

// Views are what the API answers and what the event stream carries: the
// same JSON in both places, so a client can apply an event exactly as it
// applies a GET. These are the views of the calls, which the engine writes
// to the log and audio, guests and conversations all show; each other view
// lives with the part that owns it.

// ConferenceRef names a conference and its state.
type ConferenceRef struct {
	ID    string `json:"id"`
	State string `json:"state"`
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
	// AnsweredAt is when the far end picked up: also for a leg that then
	// hears the confirm-to-join prompt (confirming) and never joins.
	AnsweredAt  *time.Time `json:"answered_at,omitempty"`
	ConnectedAt *time.Time `json:"connected_at,omitempty"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	// UpdatedAt is the last change (state, mute, talking): how long a call
	// has been ringing, or how old what a screen shows is.
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

// LegViewOf is the view of a leg.
func LegViewOf(l *storage.Leg) LegView {
	v := LegView{ID: l.ID, ConferenceID: l.ConferenceID, ConversationID: l.ConversationID, UserID: l.UserID,
		GuestID: l.GuestID, InvitationID: l.InvitationID, Number: l.Number, State: l.State, Cause: l.Cause,
		CauseText: l.CauseText, EndReason: l.EndReason, Muted: l.Muted, Talking: l.Talking, CreatedAt: l.CreatedAt,
		RingingAt: l.RingingAt, AnsweredAt: l.AnsweredAt, ConnectedAt: l.ConnectedAt, EndedAt: l.EndedAt}
	if v.AnsweredAt == nil {
		// Legs connected before answered_at existed answered when they
		// connected.
		v.AnsweredAt = l.ConnectedAt
	}
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

// InvitationViewOf is the view of an invitation.
func InvitationViewOf(i *storage.Invitation) InvitationView {
	return InvitationView{ID: i.ID, ConferenceID: i.ConferenceID, ConversationID: i.ConversationID, UserID: i.UserID,
		InvitedBy: i.InvitedBy, State: i.State, LegID: i.LegID, CreatedAt: i.CreatedAt, UpdatedAt: i.UpdatedAt}
}

// ConferenceView is the audio of a conversation with its legs and
// invitations.
type ConferenceView struct {
	ID             string     `json:"id"`
	ConversationID string     `json:"conversation_id"`
	State          string     `json:"state"`
	CreatedBy      string     `json:"created_by"`
	CreatedAt      time.Time  `json:"created_at"`
	EndedAt        *time.Time `json:"ended_at,omitempty"`
	EndReason      string     `json:"end_reason,omitempty"`
	// Node is the PBX node the conference lives on.
	Node string `json:"node,omitempty"`
	// Control says whether convoice can control the calls right now
	// ("available", or "unavailable" while the node's control link does
	// not answer, ControlReason saying why): set in the answer of a GET,
	// not in the stored events.
	Control       string           `json:"control,omitempty"`
	ControlReason string           `json:"control_reason,omitempty"`
	Legs          []LegView        `json:"legs"`
	Invitations   []InvitationView `json:"invitations"`
}

// ConferenceViewOf is the view of a conference, without its legs and
// invitations.
func ConferenceViewOf(c *storage.Conference) ConferenceView {
	return ConferenceView{ID: c.ID, ConversationID: c.ConversationID, State: c.State, CreatedBy: c.CreatedBy,
		CreatedAt: c.CreatedAt, EndedAt: c.EndedAt, EndReason: c.EndReason, Node: c.Node, Legs: []LegView{}, Invitations: []InvitationView{}}
}

// JoinResult answers a dial request.
type JoinResult struct {
	Conference ConferenceRef   `json:"conference"`
	Leg        LegView         `json:"leg"`
	Invitation *InvitationView `json:"invitation,omitempty"`
}
