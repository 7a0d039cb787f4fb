package engine

// Invitations are written here because the engine's own transitions write
// most of them: the conference's first connected call invites everyone
// else, joining answers one's own, the conference's end cancels the
// pending ones. The requests
// that answer them (accept, decline, redirect, invite someone) are audio's.

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// inviteOnFirstConnect invites the others when l, just connected, is the
// conference's first connected call. Inviting them when the conference
// starts made a first call that fails (busy, no answer, a wrong number)
// invite everyone and cancel it again at once, on every attempt; now the
// others are rung only once someone is there to talk to.
func (en *Engine) inviteOnFirstConnect(ctx context.Context, tx *storage.Store, l *storage.Leg) error {
	// Most answers are not the first: one indexed probe says so before
	// anything is read in full.
	if other, err := tx.OtherLegConnected(ctx, l.ConferenceID, l.ID); err != nil || other {
		return err
	}
	legs, err := tx.Legs(ctx, l.ConferenceID)
	if err != nil {
		return err
	}
	// Anyone with a call in this conference (and anyone already invited,
	// below) is not invited again.
	skip := map[string]bool{}
	for _, o := range legs {
		if o.ID != l.ID && (o.ConnectedAt != nil || o.State == storage.LegConnected) {
			return nil // not the first: the others were invited then
		}
		if o.UserID != nil {
			skip[*o.UserID] = true
		}
	}
	conf, err := tx.GetConference(ctx, l.ConferenceID)
	if err != nil || conf.State != storage.ConferenceActive {
		return err
	}
	invs, err := tx.Invitations(ctx, conf.ID)
	if err != nil {
		return err
	}
	for _, inv := range invs {
		skip[inv.UserID] = true
	}
	conv, err := tx.GetConversation(ctx, conf.ConversationID)
	if err != nil {
		return err
	}
	return en.inviteOthers(ctx, tx, conv, conf, conf.CreatedBy, skip)
}

// inviteOthers invites every present participant not in skip.
func (en *Engine) inviteOthers(ctx context.Context, tx *storage.Store, conv *storage.Conversation, conf *storage.Conference, by string, skip map[string]bool) error {
	ps, err := tx.Participants(ctx, conv.ID)
	if err != nil {
		return err
	}
	// Write them all, and their events, with one statement each rather
	// than four statements per person inside the writer's transaction.
	now := time.Now().UTC()
	var invs []storage.Invitation
	var datas []string
	for _, p := range ps {
		if p.LeftAt != nil || skip[p.UserID] {
			continue
		}
		inv := storage.Invitation{ID: core.NewID(), ConferenceID: conf.ID, ConversationID: conf.ConversationID, UserID: p.UserID,
			InvitedBy: by, State: storage.InvitationPending, CreatedAt: now, UpdatedAt: now}
		b, err := json.Marshal(core.InvitationViewOf(&inv))
		if err != nil {
			return err
		}
		invs = append(invs, inv)
		datas = append(datas, string(b))
	}
	if len(invs) == 0 {
		return nil
	}
	if err := tx.CreateInvitations(ctx, invs); err != nil {
		return err
	}
	return tx.RecordEvents(ctx, conv.ID, "invitation.updated", datas)
}

// Invite creates a pending invitation (or returns the pending one).
func (en *Engine) Invite(ctx context.Context, tx *storage.Store, conf *storage.Conference, userID, by string) (*storage.Invitation, error) {
	if inv, err := tx.PendingInvitation(ctx, conf.ID, userID); err == nil {
		return inv, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	now := time.Now().UTC()
	inv := &storage.Invitation{ID: core.NewID(), ConferenceID: conf.ID, ConversationID: conf.ConversationID, UserID: userID,
		InvitedBy: by, State: storage.InvitationPending, CreatedAt: now, UpdatedAt: now}
	if err := tx.CreateInvitation(ctx, inv); err != nil {
		return nil, err
	}
	return inv, core.AppendEvent(ctx, tx, conf.ConversationID, "invitation.updated", core.InvitationViewOf(inv))
}

// SetInvitationState changes an invitation in tx and logs it.
func (en *Engine) SetInvitationState(ctx context.Context, tx *storage.Store, inv *storage.Invitation, state string) error {
	inv.State = state
	if err := tx.SaveInvitation(ctx, inv); err != nil {
		return err
	}
	return core.AppendEvent(ctx, tx, inv.ConversationID, "invitation.updated", core.InvitationViewOf(inv))
}
