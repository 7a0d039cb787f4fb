package guests

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// GuestStream decides, event by event, what of its conversation's stream a
// guest sees: everything about themselves from their arrival; once
// admitted, the conversation's messages, participants, presenter, audio
// and calls from their admission on — with the numbers of other people's
// calls blanked. Never invitations or join links.
type GuestStream struct {
	guests *Guests
	ga     GuestActor
	guest  *storage.Guest
}

// GuestStream starts deciding for a guest session.
func (gu *Guests) GuestStream(ctx context.Context, ga GuestActor) (*GuestStream, error) {
	g, err := gu.liveGuest(ctx, ga)
	if err != nil {
		return nil, err
	}
	return &GuestStream{guests: gu, ga: ga, guest: g}, nil
}

// StartSeq is where the guest's stream begins (it replays from after it).
func (s *GuestStream) StartSeq() int64 { return s.guest.StartSeq }

// Check says whether the session still holds (polled by the stream).
func (s *GuestStream) Check(ctx context.Context) error {
	_, err := s.guests.AuthenticateGuestByID(ctx, s.ga.GuestID)
	return err
}

// AuthenticateGuestByID re-checks a guest session by the guest's id.
func (gu *Guests) AuthenticateGuestByID(ctx context.Context, guestID string) (GuestActor, error) {
	g, err := gu.store.GetGuest(ctx, guestID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !storage.GuestLive(g.State)) {
		return GuestActor{}, errGuestSessionEnded()
	}
	if err != nil {
		return GuestActor{}, err
	}
	conv, err := gu.store.GetConversation(ctx, g.ConversationID)
	if err != nil {
		return GuestActor{}, err
	}
	if conv.EndedAt != nil {
		return GuestActor{}, errGuestSessionEnded()
	}
	return GuestActor{GuestID: g.ID, ConversationID: g.ConversationID, Name: g.DisplayName}, nil
}

// Filter returns the event as the guest may see it (keep false: not at
// all); end is true when the event ends the guest's session (it is the
// last they get).
func (s *GuestStream) Filter(ctx context.Context, ev core.Event) (out core.Event, keep, end bool) {
	var data map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &data); err != nil {
		return ev, false, false
	}
	me := s.guest.ID
	sees := s.guest.State == storage.GuestAdmitted && ev.Seq > s.guest.SinceSeq
	switch ev.Type {
	case "guest.waiting", "guest.updated":
		if data["id"] == me {
			if g, err := s.guests.store.GetGuest(ctx, me); err == nil {
				s.guest = g
			}
			state, _ := data["state"].(string)
			return ev, true, !storage.GuestLive(state)
		}
		if !sees {
			return ev, false, false
		}
		return redactNumber(ev, data), true, false
	case "leg.updated":
		if data["guest_id"] == me {
			return ev, true, false
		}
		if !sees {
			return ev, false, false
		}
		return redactNumber(ev, data), true, false
	case "message.created", "participant.joined", "participant.left", "presenter.changed", "audio.started", "audio.ended":
		return ev, sees, false
	}
	return ev, false, false
}

func redactNumber(ev core.Event, data map[string]any) core.Event {
	if _, ok := data["number"]; !ok {
		return ev
	}
	data["number"] = ""
	b, err := json.Marshal(data)
	if err != nil {
		return ev
	}
	ev.Data = string(b)
	return ev
}
