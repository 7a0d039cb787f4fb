package audio

import (
	"context"
	"errors"

	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// legFor loads a leg the caller may see (a participant of its
// conversation); others get the unknown answer.
func (au *Audio) legFor(ctx context.Context, a core.Actor, legID string) (*storage.Leg, *storage.Conversation, error) {
	l, err := au.store.GetLeg(ctx, legID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, core.NotFound("leg")
	}
	if err != nil {
		return nil, nil, err
	}
	conv, _, err := core.Member(ctx, au.store, a, l.ConversationID)
	if err != nil {
		if a.Admin {
			conv, err = au.store.GetConversation(ctx, l.ConversationID)
			if err == nil {
				return l, conv, nil
			}
		}
		return nil, nil, core.NotFound("leg")
	}
	return l, conv, nil
}

func ownsLeg(a core.Actor, l *storage.Leg) bool {
	return l.UserID != nil && *l.UserID == a.UserID && a.UserID != ""
}

// SetLegMute mutes or unmutes a connected leg: the organiser any leg, a
// participant their own.
func (au *Audio) SetLegMute(ctx context.Context, a core.Actor, legID string, muted bool) (core.LegView, error) {
	l, conv, err := au.legFor(ctx, a, legID)
	if err != nil {
		return core.LegView{}, err
	}
	if !ownsLeg(a, l) && !isModerator(a, conv) {
		return core.LegView{}, core.Forbidden("organizer_only", "only the organiser can mute someone else")
	}
	if l.State != storage.LegConnected {
		return core.LegView{}, core.Conflict("leg_not_connected", "the call is %s, not connected; only a connected call can be muted", l.State)
	}
	conf, err := au.store.GetConference(ctx, l.ConferenceID)
	if err != nil {
		return core.LegView{}, err
	}
	if err := au.engine.MuteOnPBX(ctx, conf, l.ID, muted); err != nil {
		return core.LegView{}, err
	}
	var out core.LegView
	err = au.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.LockLeg(ctx, l.ID)
		if err != nil {
			return err
		}
		if cur.Muted != muted {
			cur.Muted = muted
			if muted {
				cur.Talking = false
			}
			if err := tx.SaveLeg(ctx, cur); err != nil {
				return err
			}
			if err := core.AppendEvent(ctx, tx, cur.ConversationID, "leg.updated", core.LegViewOf(cur)); err != nil {
				return err
			}
		}
		out = core.LegViewOf(cur)
		return nil
	})
	au.auditLeg(ctx, a, muteAction(muted), l, err)
	return out, err
}

// HangupLeg hangs up one leg: anyone their own, the organiser any.
func (au *Audio) HangupLeg(ctx context.Context, a core.Actor, legID string) error {
	l, conv, err := au.legFor(ctx, a, legID)
	if err != nil {
		return err
	}
	if !ownsLeg(a, l) && !isModerator(a, conv) {
		return core.Forbidden("organizer_only", "only the organiser can hang up someone else; you can hang up your own call")
	}
	if !storage.LegLive(l.State) {
		return core.Conflict("leg_not_live", "the call has already ended (%s)", l.State)
	}
	conf, err := au.store.GetConference(ctx, l.ConferenceID)
	if err != nil {
		return err
	}
	reason := "hung up by " + a.Name
	if ownsLeg(a, l) {
		reason = "hung up by the participant"
	}
	err = au.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.LockLeg(ctx, l.ID)
		if err != nil {
			return err
		}
		if !au.engine.RequestHangup(cur, reason) {
			return core.Conflict("leg_not_live", "the call has already ended (%s)", cur.State)
		}
		*l = *cur
		return tx.SaveLeg(ctx, cur)
	})
	if err != nil {
		return err
	}
	au.engine.HangupOnPBX(ctx, conf, l)
	au.auditLeg(ctx, a, audit.ActionLegHangup, l, nil)
	return nil
}

// auditLeg records a moderation action on a leg when it succeeded.
func (au *Audio) auditLeg(ctx context.Context, a core.Actor, action string, l *storage.Leg, err error) {
	if err != nil || l == nil {
		return
	}
	detail := "someone else's call"
	if ownsLeg(a, l) {
		detail = "own call"
	}
	au.audit.Add(ctx, audit.Entry{Actor: a, Action: action, ConversationID: l.ConversationID, TargetID: l.ID, Number: l.Number, Detail: detail})
}

func muteAction(muted bool) string {
	if muted {
		return audit.ActionLegMute
	}
	return audit.ActionLegUnmute
}
