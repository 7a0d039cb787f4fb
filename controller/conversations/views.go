package conversations

import (
	"strconv"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

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
	Audio *core.ConferenceRef `json:"audio,omitempty"`
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

// MessageViewOf is the view of a message.
func MessageViewOf(m *storage.Message) MessageView {
	return MessageView{ID: strconv.FormatInt(m.ID, 10), ConversationID: m.ConversationID, UserID: m.UserID,
		GuestID: m.GuestID, AuthorName: m.AuthorName, Text: m.Text, CreatedAt: m.CreatedAt}
}
