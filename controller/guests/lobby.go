package guests

import (
	"context"
	"errors"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// ListGuests lists a conversation's guests (every state), by arrival.
func (gu *Guests) ListGuests(ctx context.Context, a core.Actor, convID string) ([]GuestView, error) {
	if _, _, err := core.Member(ctx, gu.store, a, convID); err != nil {
		return nil, err
	}
	gs, err := gu.store.Guests(ctx, convID)
	if err != nil {
		return nil, err
	}
	out := make([]GuestView, 0, len(gs))
	for i := range gs {
		out = append(out, guestView(&gs[i]))
	}
	return out, nil
}

// AdmitResult answers admit and refuse.
type AdmitResult struct {
	Guest GuestView     `json:"guest"`
	Leg   *core.LegView `json:"leg"`
}

// lobbyGuest loads a guest of a conversation the caller is in.
func (gu *Guests) lobbyGuest(ctx context.Context, a core.Actor, convID, guestID string) (*storage.Conversation, *storage.Guest, error) {
	conv, _, err := core.Member(ctx, gu.store, a, convID)
	if err != nil {
		return nil, nil, err
	}
	g, err := gu.store.GetGuest(ctx, guestID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && g.ConversationID != conv.ID) {
		return nil, nil, core.NotFound("guest")
	}
	if err != nil {
		return nil, nil, err
	}
	return conv, g, nil
}

// waitingGuest loads a guest for change in tx, refusing one who is no
// longer waiting in the lobby.
func waitingGuest(ctx context.Context, tx *storage.Store, guestID string) (*storage.Guest, error) {
	g, err := tx.GetGuestForUpdate(ctx, guestID)
	if err != nil {
		return nil, err
	}
	if g.State != storage.GuestLobby {
		return nil, core.Conflict("guest_not_waiting", "the guest is %s, not waiting to be admitted", g.State)
	}
	return g, nil
}

// AdmitGuest lets a guest in from the lobby and has the PBX call them. The
// guest stays admitted when the call cannot be placed (they can ask to be
// called again).
func (gu *Guests) AdmitGuest(ctx context.Context, a core.Actor, convID, guestID string) (AdmitResult, error) {
	conv, g, err := gu.lobbyGuest(ctx, a, convID, guestID)
	if err != nil {
		return AdmitResult{}, err
	}
	if conv.EndedAt != nil {
		return AdmitResult{}, core.Conflict("conversation_ended", "the conversation has ended")
	}
	err = gu.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := waitingGuest(ctx, tx, g.ID)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		cur.State, cur.AdmittedAt = storage.GuestAdmitted, &now
		if err := gu.guestEvent(ctx, tx, cur, "guest.updated"); err != nil {
			return err
		}
		if err := tx.SaveGuest(ctx, cur); err != nil {
			return err
		}
		*g = *cur
		return gu.auditGuestAdmission(ctx, tx, a, cur)
	})
	if err != nil {
		return AdmitResult{}, err
	}
	jr, err := gu.dialGuest(ctx, conv, g, g.Number)
	if err != nil {
		return AdmitResult{}, err
	}
	return AdmitResult{Guest: guestView(g), Leg: &jr.Leg}, nil
}

// RefuseGuest turns a guest in the lobby away: nothing is ever dialed for
// them and their session ends.
func (gu *Guests) RefuseGuest(ctx context.Context, a core.Actor, convID, guestID string) (AdmitResult, error) {
	_, g, err := gu.lobbyGuest(ctx, a, convID, guestID)
	if err != nil {
		return AdmitResult{}, err
	}
	err = gu.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := waitingGuest(ctx, tx, g.ID)
		if err != nil {
			return err
		}
		if _, err := gu.endGuestTx(ctx, tx, cur, storage.GuestRefused, "refused by "+a.Name); err != nil {
			return err
		}
		*g = *cur
		return gu.auditGuestAdmission(ctx, tx, a, cur)
	})
	if err != nil {
		return AdmitResult{}, err
	}
	return AdmitResult{Guest: guestView(g)}, nil
}
