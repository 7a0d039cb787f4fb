package guests

import (
	"context"
	"crypto/subtle"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/conversations"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// GuestActor is an authenticated guest session.
type GuestActor struct {
	GuestID        string
	ConversationID string
	Name           string
}

// AuthenticateGuest resolves a guest session token. It is valid while the
// guest is in the lobby or admitted, and their conversation goes on.
func (gu *Guests) AuthenticateGuest(ctx context.Context, token string) (GuestActor, error) {
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenInput {
		return GuestActor{}, errGuestSessionEnded()
	}
	h := core.HashSecret(token)
	g, err := gu.store.GuestBySessionHash(ctx, h)
	if errors.Is(err, storage.ErrNotFound) {
		return GuestActor{}, errGuestSessionEnded()
	}
	if err != nil {
		return GuestActor{}, err
	}
	if subtle.ConstantTimeCompare([]byte(h), []byte(g.SessionHash)) != 1 || !storage.GuestLive(g.State) {
		return GuestActor{}, errGuestSessionEnded()
	}
	conv, err := gu.store.GetConversation(ctx, g.ConversationID)
	if err != nil {
		return GuestActor{}, err
	}
	if conv.EndedAt != nil {
		if err := gu.EndGuestsOfConversation(ctx, conv.ID, "the conversation has ended"); err != nil {
			gu.log.Warn("ending the guests of an ended conversation failed", "conversation", conv.ID, "err", err)
		}
		return GuestActor{}, errGuestSessionEnded()
	}
	return GuestActor{GuestID: g.ID, ConversationID: g.ConversationID, Name: g.DisplayName}, nil
}

// liveGuest reloads the guest of a session, which may have ended since it
// was authenticated.
func (gu *Guests) liveGuest(ctx context.Context, ga GuestActor) (*storage.Guest, error) {
	g, err := gu.store.GetGuest(ctx, ga.GuestID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !storage.GuestLive(g.State)) {
		return nil, errGuestSessionEnded()
	}
	return g, err
}

func requireAdmitted(g *storage.Guest) error {
	if g.State != storage.GuestAdmitted {
		return core.Forbidden("not_admitted", "you are waiting for the organiser to admit you")
	}
	return nil
}

// GuestConversation is what a guest sees of their conversation.
type GuestConversation struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
}

// GuestSessionView is a guest's own view: who they are, where, and their
// call (the newest one; null when none).
type GuestSessionView struct {
	Guest        GuestView         `json:"guest"`
	Conversation GuestConversation `json:"conversation"`
	Leg          *core.LegView     `json:"leg"`
	// OthersConnected lists the other calls connected in the conference of
	// the guest's call now (their ids), so the page can tell a lone caller
	// that nobody else is in the audio yet and follow the rest by events.
	OthersConnected []string `json:"others_connected"`
	// LastEventID: follow GET /guest/events from here to miss nothing.
	LastEventID string `json:"last_event_id"`
}

// GuestSession returns the guest's own view.
func (gu *Guests) GuestSession(ctx context.Context, ga GuestActor) (GuestSessionView, error) {
	g, err := gu.liveGuest(ctx, ga)
	if err != nil {
		return GuestSessionView{}, err
	}
	conv, err := gu.store.GetConversation(ctx, g.ConversationID)
	if err != nil {
		return GuestSessionView{}, err
	}
	seq, err := gu.store.LastEventSeq(ctx, conv.ID)
	if err != nil {
		return GuestSessionView{}, err
	}
	v := GuestSessionView{Guest: guestView(g), Conversation: GuestConversation{ID: conv.ID, Kind: conv.Kind, Subject: conv.Subject},
		LastEventID: strconv.FormatInt(seq, 10)}
	v.OthersConnected = []string{}
	if l, err := gu.store.LatestLegOfGuest(ctx, g.ID); err == nil {
		lv := core.LegViewOf(l)
		v.Leg = &lv
		live, err := gu.store.LiveLegs(ctx, l.ConferenceID)
		if err != nil {
			return GuestSessionView{}, err
		}
		for _, o := range live {
			if o.ID != l.ID && o.State == storage.LegConnected {
				v.OthersConnected = append(v.OthersConnected, o.ID)
			}
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return GuestSessionView{}, err
	}
	return v, nil
}

// GuestMessages pages through the messages a guest may see: those posted
// since they were admitted.
func (gu *Guests) GuestMessages(ctx context.Context, ga GuestActor, q conversations.MessageQuery) (conversations.MessagePage, error) {
	g, err := gu.liveGuest(ctx, ga)
	if err != nil {
		return conversations.MessagePage{}, err
	}
	if err := requireAdmitted(g); err != nil {
		return conversations.MessagePage{}, err
	}
	return gu.conversations.MessagesFrom(ctx, g.ConversationID, g.SinceMessageID, q)
}

// GuestPostMessage posts an IM message as the guest. The author name says
// "(guest)" so that nobody passes for a colleague.
func (gu *Guests) GuestPostMessage(ctx context.Context, ga GuestActor, text string) (conversations.MessageView, error) {
	g, err := gu.liveGuest(ctx, ga)
	if err != nil {
		return conversations.MessageView{}, err
	}
	if err := requireAdmitted(g); err != nil {
		return conversations.MessageView{}, err
	}
	text, err = conversations.MessageText(text)
	if err != nil {
		return conversations.MessageView{}, err
	}
	gid := g.ID
	m := &storage.Message{ConversationID: g.ConversationID, GuestID: &gid, AuthorName: g.DisplayName + " (guest)",
		Text: text, CreatedAt: time.Now().UTC()}
	err = gu.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.GetGuestForUpdate(ctx, gid)
		if err != nil {
			return err
		}
		if !storage.GuestLive(cur.State) {
			return errGuestSessionEnded()
		}
		if err := tx.CreateMessage(ctx, m); err != nil {
			return err
		}
		return core.AppendEvent(ctx, tx, m.ConversationID, "message.created", conversations.MessageViewOf(m))
	})
	if err != nil {
		return conversations.MessageView{}, err
	}
	return conversations.MessageViewOf(m), nil
}

// GuestDial has the PBX call the guest (again): on the number they joined
// with, or on number when given.
func (gu *Guests) GuestDial(ctx context.Context, ga GuestActor, number string) (core.JoinResult, error) {
	g, err := gu.liveGuest(ctx, ga)
	if err != nil {
		return core.JoinResult{}, err
	}
	if err := requireAdmitted(g); err != nil {
		return core.JoinResult{}, err
	}
	dialNumber := g.Number
	if strings.TrimSpace(number) != "" {
		if dialNumber, err = gu.numbers.Normalize("number", number); err != nil {
			return core.JoinResult{}, err
		}
	}
	conv, err := gu.store.GetConversation(ctx, g.ConversationID)
	if err != nil {
		return core.JoinResult{}, err
	}
	return gu.dialGuest(ctx, conv, g, dialNumber)
}

// GuestHangup hangs up the guest's live call; they stay in the
// conversation.
func (gu *Guests) GuestHangup(ctx context.Context, ga GuestActor) error {
	g, err := gu.liveGuest(ctx, ga)
	if err != nil {
		return err
	}
	var leg *storage.Leg
	err = gu.store.InTx(ctx, func(tx *storage.Store) error {
		l, err := tx.LiveLegOfGuest(ctx, g.ID)
		if errors.Is(err, storage.ErrNotFound) {
			return core.Conflict("leg_not_live", "you have no call in progress")
		}
		if err != nil {
			return err
		}
		cur, err := tx.LockLeg(ctx, l.ID)
		if err != nil {
			return err
		}
		if !gu.engine.RequestHangup(cur, "hung up by the guest") {
			return core.Conflict("leg_not_live", "you have no call in progress")
		}
		leg = cur
		return tx.SaveLeg(ctx, cur)
	})
	if err != nil {
		return err
	}
	gu.hangupGuestLegs(ctx, []*storage.Leg{leg})
	return nil
}

// GuestLeave ends the guest's session: their call is hung up and their
// token stops working.
func (gu *Guests) GuestLeave(ctx context.Context, ga GuestActor) error {
	var hangups []*storage.Leg
	err := gu.store.InTx(ctx, func(tx *storage.Store) error {
		g, err := tx.GetGuestForUpdate(ctx, ga.GuestID)
		if err != nil {
			return err
		}
		if !storage.GuestLive(g.State) {
			return errGuestSessionEnded()
		}
		leg, err := gu.endGuestTx(ctx, tx, g, storage.GuestLeft, "left the conversation")
		if leg != nil {
			hangups = append(hangups, leg)
		}
		return err
	})
	if err != nil {
		return err
	}
	gu.hangupGuestLegs(ctx, hangups)
	return nil
}
