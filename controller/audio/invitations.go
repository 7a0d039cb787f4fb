package audio

import (
	"context"
	"errors"
	"strings"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/engine"
	"github.com/convoice/convoice/storage"
)

// MyInvitations lists the caller's pending invitations.
func (au *Audio) MyInvitations(ctx context.Context, a core.Actor) ([]core.InvitationView, error) {
	if err := core.RequireUser(a); err != nil {
		return nil, err
	}
	invs, err := au.store.PendingInvitationsOf(ctx, a.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]core.InvitationView, 0, len(invs))
	for i := range invs {
		out = append(out, core.InvitationViewOf(&invs[i]))
	}
	return out, nil
}

// myInvitation loads an invitation addressed to the caller; anyone else's
// looks unknown.
func (au *Audio) myInvitation(ctx context.Context, a core.Actor, invID string) (*storage.Invitation, *storage.Conversation, error) {
	inv, err := au.store.GetInvitation(ctx, invID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && inv.UserID != a.UserID) {
		return nil, nil, core.NotFound("invitation")
	}
	if err != nil {
		return nil, nil, err
	}
	conv, _, err := core.Member(ctx, au.store, a, inv.ConversationID)
	if err != nil {
		return nil, nil, core.NotFound("invitation")
	}
	return inv, conv, nil
}

// checkPending refuses answering an invitation that is no longer pending.
func checkPending(inv *storage.Invitation, conf *storage.Conference) error {
	if conf.State != storage.ConferenceActive {
		return core.Conflict("audio_ended", "the audio conference of this invitation has ended")
	}
	if inv.State != storage.InvitationPending {
		return core.Conflict("invitation_not_pending", "this invitation was already answered (%s)", inv.State)
	}
	return nil
}

// AcceptInvitation dials the invitee's default published number, or the
// published label they pick.
func (au *Audio) AcceptInvitation(ctx context.Context, a core.Actor, invID, published string) (InvitationResult, error) {
	return au.answerInvitation(ctx, a, invID, storage.InvitationAccepted, published, "")
}

// RedirectInvitation dials the number the invitee gives instead.
func (au *Audio) RedirectInvitation(ctx context.Context, a core.Actor, invID, number string) (InvitationResult, error) {
	if strings.TrimSpace(number) == "" {
		return InvitationResult{}, core.Invalid("number", "number: give the number to call")
	}
	return au.answerInvitation(ctx, a, invID, storage.InvitationRedirected, "", number)
}

func (au *Audio) answerInvitation(ctx context.Context, a core.Actor, invID, state, published, number string) (InvitationResult, error) {
	inv, conv, err := au.myInvitation(ctx, a, invID)
	if err != nil {
		return InvitationResult{}, err
	}
	u, err := au.store.GetUser(ctx, a.UserID)
	if err != nil {
		return InvitationResult{}, err
	}
	dialNumber, err := au.resolveNumber(u, published, number, "number")
	if err != nil {
		return InvitationResult{}, err
	}
	uid := a.UserID
	legID := core.NewID()
	var answered storage.Invitation
	res, err := au.engine.Dial(ctx, conv, a, engine.Target{LegID: legID, UserID: &uid, InvitationID: &inv.ID, Number: dialNumber, Source: numberSource(number, "redirect")},
		func(tx *storage.Store, conf *storage.Conference) error {
			cur, err := tx.GetInvitation(ctx, inv.ID)
			if err != nil {
				return err
			}
			if cur.ConferenceID != conf.ID {
				return core.Conflict("audio_ended", "the audio conference of this invitation has ended")
			}
			if err := checkPending(cur, conf); err != nil {
				return err
			}
			if l, err := tx.LiveLegOfUser(ctx, conf.ID, uid); err == nil {
				return core.Conflict("already_in_audio", "you are already in this conference (%s, %s)", l.Number, l.State)
			}
			cur.LegID = &legID
			if err := au.engine.SetInvitationState(ctx, tx, cur, state); err != nil {
				return err
			}
			answered = *cur
			return nil
		})
	if err != nil {
		return InvitationResult{}, err
	}
	lv := res.Leg
	return InvitationResult{Invitation: core.InvitationViewOf(&answered), Leg: &lv}, nil
}

// DeclineInvitation: nothing rings; the invitee stays in the conversation.
func (au *Audio) DeclineInvitation(ctx context.Context, a core.Actor, invID string) (InvitationResult, error) {
	inv, _, err := au.myInvitation(ctx, a, invID)
	if err != nil {
		return InvitationResult{}, err
	}
	err = au.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.GetInvitation(ctx, inv.ID)
		if err != nil {
			return err
		}
		conf, err := tx.GetConference(ctx, cur.ConferenceID)
		if err != nil {
			return err
		}
		if err := checkPending(cur, conf); err != nil {
			return err
		}
		*inv = *cur
		return au.engine.SetInvitationState(ctx, tx, inv, storage.InvitationDeclined)
	})
	if err != nil {
		return InvitationResult{}, err
	}
	return InvitationResult{Invitation: core.InvitationViewOf(inv)}, nil
}

// InviteSomeone adds contacts to the conversation and invites them to its
// running conference.
func (au *Audio) InviteSomeone(ctx context.Context, a core.Actor, convID string, userIDs []string) ([]core.InvitationView, error) {
	conv, _, err := core.Member(ctx, au.store, a, convID)
	if err != nil {
		return nil, err
	}
	ids := core.Dedupe(userIDs)
	if len(ids) == 0 {
		return nil, core.Invalid("user_ids", "user_ids: choose at least one person to invite")
	}
	us, err := au.store.GetUsers(ctx, ids)
	if err != nil {
		return nil, err
	}
	if len(us) != len(ids) {
		return nil, core.Invalid("user_ids", "user_ids: %s", core.MissingIDs(ids, us))
	}
	for i, u := range us {
		if u.ID == a.UserID {
			return nil, core.Invalid("user_ids", "user_ids[%d]: you cannot invite yourself", i)
		}
		ok, err := au.store.IsContact(ctx, a.UserID, u.ID)
		if err != nil {
			return nil, err
		}
		if !ok {
			if p, err := au.store.GetParticipant(ctx, conv.ID, u.ID); err != nil || p.LeftAt != nil {
				return nil, core.Invalid("user_ids", "user_ids: %s is not on your contact list", u.DisplayName)
			}
		}
	}
	var out []core.InvitationView
	err = au.store.InTx(ctx, func(tx *storage.Store) error {
		conf, err := tx.ActiveConference(ctx, conv.ID)
		if errors.Is(err, storage.ErrNotFound) {
			return core.Conflict("no_audio", "there is no audio conference running; start one with Join Conference first")
		}
		if err != nil {
			return err
		}
		if _, err := au.conversations.AddParticipantsTx(ctx, tx, conv, us); err != nil {
			return err
		}
		for _, u := range us {
			if l, err := tx.LiveLegOfUser(ctx, conf.ID, u.ID); err == nil {
				return core.Conflict("already_in_audio", "%s is already in the audio (%s)", u.DisplayName, l.State)
			}
			inv, err := au.engine.Invite(ctx, tx, conf, u.ID, a.UserID)
			if err != nil {
				return err
			}
			out = append(out, core.InvitationViewOf(inv))
		}
		return nil
	})
	return out, err
}

// InvitationResult answers accept / decline / redirect.
type InvitationResult struct {
	Invitation core.InvitationView `json:"invitation"`
	Leg        *core.LegView       `json:"leg,omitempty"`
}
