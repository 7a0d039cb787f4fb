// Package userevents is a person's own event stream (issue 17,
// GET /api/v1/me/events): the events of every conversation that concern
// them — invitations made to them and their changes, their being added to
// or leaving a conversation, their own calls — so that an invitation
// reaches them with no conversation open.
//
// It is an index, not a second log: storage writes, in the transaction of
// each conversation event, one user_events row per person Audience names
// (with the person's own gap-free seq), and the stream reads the rows
// joined with the conversation's log. So it is durable, resumable with
// Last-Event-ID, and it tells of nothing that did not commit; across
// replicas the same NOTIFY as the conversation streams wakes it.
package userevents

import (
	"context"
	"encoding/json"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// Types are the event types a person's stream carries.
var Types = []string{"conversation.created", "participant.joined", "participant.left", "invitation.updated", "leg.updated"}

// Audience names who an event concerns: the invitee of an invitation, the
// user of a leg, the person who joined or left, everyone in a new
// conversation. Guests have no user stream. Other events (messages,
// presenter, join links) concern no one's own stream.
func Audience(ev storage.Event) []string {
	switch ev.Type {
	case "invitation.updated", "leg.updated", "participant.joined", "participant.left":
		var d struct {
			UserID string `json:"user_id"`
		}
		if json.Unmarshal([]byte(ev.Data), &d) != nil || d.UserID == "" {
			return nil
		}
		return []string{d.UserID}
	case "conversation.created":
		var d struct {
			Participants []struct {
				UserID string `json:"user_id"`
			} `json:"participants"`
		}
		if json.Unmarshal([]byte(ev.Data), &d) != nil {
			return nil
		}
		out := make([]string, 0, len(d.Participants))
		for _, p := range d.Participants {
			if p.UserID != "" {
				out = append(out, p.UserID)
			}
		}
		return out
	}
	return nil
}

// Streams reads people's own streams.
type Streams struct {
	store *storage.Store
}

// New makes the reader over store and has store index the events Audience
// names from now on.
func New(store *storage.Store) *Streams {
	store.SetEventAudience(Audience)
	return &Streams{store: store}
}

// Open checks that a can have a stream (a person, not the admin token) and
// gives its hub key.
func (s *Streams) Open(a core.Actor) (string, error) {
	if err := core.RequireUser(a); err != nil {
		return "", err
	}
	return core.UserStreamKey(a.UserID), nil
}

// After returns up to limit events of a's stream after seq after (the
// stream's own ids), oldest first.
func (s *Streams) After(ctx context.Context, a core.Actor, after int64, limit int) ([]core.Event, error) {
	if err := core.RequireUser(a); err != nil {
		return nil, err
	}
	return s.store.UserEventsAfter(ctx, a.UserID, after, limit)
}

// Last is the id of the newest event of a's stream (0: none yet): a client
// that starts from here sees only what comes next.
func (s *Streams) Last(ctx context.Context, a core.Actor) (int64, error) {
	if err := core.RequireUser(a); err != nil {
		return 0, err
	}
	return s.store.LastUserEventSeq(ctx, a.UserID)
}
