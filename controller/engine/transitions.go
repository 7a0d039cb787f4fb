package engine

// Every change of a leg's or a conference's state is made here: the PBX's
// events (HandlePBXEvent), a leg's end and the conference's end with its
// last leg, and ending a conference on request. A leg state table
// ((state, event) → (next state, effects)) belongs in this file.

import (
	"context"
	"errors"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// endStateFor maps how a leg ended onto its final state (API-CONTRACT.md):
// a leg that was connected ends as "ended" whatever the cause; one we hung
// up before the answer is "cancelled" (ARI reports the same cause 16 for
// that as for a normal hangup, so the flag, not the cause, decides); else
// the Q.850 cause decides.
func endStateFor(l *storage.Leg, cause int) string {
	if l.State == storage.LegConnected {
		return storage.LegEnded
	}
	if l.HangupRequested {
		return storage.LegCancelled
	}
	switch cause {
	case pbx.CauseUserBusy:
		return storage.LegBusy
	case pbx.CauseNoUserResponse, pbx.CauseNoAnswer:
		return storage.LegNoAnswer
	case pbx.CauseCallRejected:
		return storage.LegRejected
	}
	return storage.LegFailed
}

// HandlePBXEvent applies one driver event. Events of one leg arrive in
// order and are applied in that order, in the background: the call
// progress is queued to the store (storage.InTxAsync) and this returns
// before it is written, so that a driver's worker goes on with the next
// event instead of waiting for each commit. A duplicate or late event (a
// leg already past that state) changes nothing.
func (en *Engine) HandlePBXEvent(ctx context.Context, node string, e pbx.Event) {
	// Call progress is background work for the store: a click dialing
	// out goes first (storage.LowPriority).
	ctx = storage.LowPriority(ctx)
	en.metrics.PBXEvents.WithLabelValues(node, string(e.Type)).Inc()
	switch e.Type {
	case pbx.EventRinging:
		en.transition(ctx, e.LegID, func(l *storage.Leg) bool {
			if l.State != storage.LegDialing {
				return false
			}
			now := time.Now().UTC()
			l.State, l.RingingAt = storage.LegRinging, &now
			return true
		})
	case pbx.EventConnected:
		hangup := false
		en.transitionThen(ctx, e.LegID, func(l *storage.Leg) bool {
			if l.State != storage.LegDialing && l.State != storage.LegRinging {
				return false
			}
			if l.HangupRequested {
				// Answered just as we hung it up: make sure it goes.
				hangup = true
				return false
			}
			now := time.Now().UTC()
			l.State, l.ConnectedAt = storage.LegConnected, &now
			if l.RingingAt == nil {
				l.RingingAt = &now
			}
			return true
		}, func() {
			if hangup {
				go en.hangupByID(context.WithoutCancel(ctx), e.LegID)
			}
		})
	case pbx.EventEnded:
		en.endLegAsync(ctx, e.LegID, e.Cause, e.CauseText, e.Reason)
	case pbx.EventTalkingStarted, pbx.EventTalkingFinished:
		talking := e.Type == pbx.EventTalkingStarted
		en.transition(ctx, e.LegID, func(l *storage.Leg) bool {
			if l.State != storage.LegConnected || l.Talking == talking || (talking && l.Muted) {
				return false
			}
			l.Talking = talking
			return true
		})
	case pbx.EventLinkUp, pbx.EventLost:
		en.log.Info("pbx link event; reconciling", "node", node, "event", e.Type, "reason", e.Reason)
		go en.Resync(context.WithoutCancel(ctx), node)
	case pbx.EventLinkDown:
		en.log.Warn("pbx event connection lost", "node", node, "reason", e.Reason)
	case pbx.EventPBXRestarted:
		en.log.Warn("pbx lost every call (restart)", "node", node, "reason", e.Reason)
		en.endNodeLegs(ctx, node, "pbx restarted")
	}
}

// transition applies f to a leg in one transaction and logs leg.updated
// when f changed it. It is queued, not waited for (storage.InTxAsync): the
// driver's worker for the channel goes on with its next event, which is
// applied after this one.
func (en *Engine) transition(ctx context.Context, legID string, f func(l *storage.Leg) bool) {
	en.transitionThen(ctx, legID, f, nil)
}

// transitionThen is transition with then called once the transaction is
// durable (not when it failed); then must not block.
func (en *Engine) transitionThen(ctx context.Context, legID string, f func(l *storage.Leg) bool, then func()) {
	if legID == "" {
		return
	}
	en.store.InTxAsync(ctx, func(tx *storage.Store) error {
		l, err := lockLeg(ctx, tx, legID)
		if err != nil {
			return err
		}
		if !f(l) {
			return nil
		}
		if err := tx.SaveLeg(ctx, l); err != nil {
			return err
		}
		return core.AppendEvent(ctx, tx, l.ConversationID, "leg.updated", core.LegViewOf(l))
	}, func(err error) {
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			en.log.Error("leg transition failed", "leg", legID, "err", err)
			return
		}
		if err == nil && then != nil {
			then()
		}
	})
}

// lockLeg loads a leg for change: its conversation's lock first, then the
// leg's (the lock order of every transaction, see LockConversation).
func lockLeg(ctx context.Context, tx *storage.Store, legID string) (*storage.Leg, error) {
	l, err := tx.GetLeg(ctx, legID)
	if err != nil || tx.Dialect() != "postgres" {
		// SQLite runs one transaction at a time: what was read stays true.
		return l, err
	}
	if err := tx.LockConversation(ctx, l.ConversationID); err != nil {
		return nil, err
	}
	return tx.GetLegForUpdate(ctx, legID)
}

// endLeg records that a leg is gone from the PBX, and ends the conference
// when it was the last live leg.
func (en *Engine) endLeg(ctx context.Context, legID string, cause int, causeText, reason string) {
	fn, ended := en.endLegTx(ctx, legID, cause, causeText, reason)
	err := en.store.InTx(ctx, fn)
	en.legEnded(ctx, legID, err, *ended)
}

// endLegAsync is endLeg queued, for the PBX's call progress (see
// transition).
func (en *Engine) endLegAsync(ctx context.Context, legID string, cause int, causeText, reason string) {
	fn, ended := en.endLegTx(ctx, legID, cause, causeText, reason)
	en.store.InTxAsync(ctx, fn, func(err error) {
		// On a goroutine of its own: this runs where the store answers
		// transactions, and legEnded may call the PBX.
		go en.legEnded(context.WithoutCancel(ctx), legID, err, *ended)
	})
}

// endLegTx is endLeg's transaction; *ended is set to the conference it
// ended, if any.
func (en *Engine) endLegTx(ctx context.Context, legID string, cause int, causeText, reason string) (func(tx *storage.Store) error, **storage.Conference) {
	ended := new(*storage.Conference)
	return func(tx *storage.Store) error {
		*ended = nil
		l, err := lockLeg(ctx, tx, legID)
		if err != nil {
			return err
		}
		if !storage.LegLive(l.State) {
			return nil // duplicate or late
		}
		now := time.Now().UTC()
		l.State = endStateFor(l, cause)
		// Clipped to their columns: PostgreSQL refuses a longer value,
		// and the leg would stay live (a reason can quote a PBX error).
		l.Cause, l.CauseText, l.EndedAt, l.Talking = cause, core.Clip(causeText, maxCauseText), &now, false
		if reason != "" && l.EndReason == "" {
			l.EndReason = core.Clip(reason, maxEndReason)
		}
		if err := tx.SaveLeg(ctx, l); err != nil {
			return err
		}
		en.metrics.LegEnds.WithLabelValues(l.State).Inc()
		if err := core.AppendEvent(ctx, tx, l.ConversationID, "leg.updated", core.LegViewOf(l)); err != nil {
			return err
		}
		live, err := tx.LiveLegs(ctx, l.ConferenceID)
		if err != nil || len(live) > 0 {
			return err
		}
		conf, err := tx.GetConference(ctx, l.ConferenceID)
		if err != nil {
			return err
		}
		ok, err := en.endConferenceTx(ctx, tx, conf, "the last call ended")
		if ok {
			*ended = conf
		}
		return err
	}, ended
}

// legEnded finishes endLeg after its transaction: logs a failure, tells
// the PBX to destroy a conference that ended.
func (en *Engine) legEnded(ctx context.Context, legID string, err error, ended *storage.Conference) {
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		en.log.Error("ending leg failed", "leg", legID, "err", err)
		return
	}
	if ended != nil && err == nil {
		en.destroyOnPBX(ctx, ended)
	}
}

// Column sizes of legs.cause_text and legs.end_reason (storage.Leg);
// core.Clip cuts on a character boundary.
const (
	maxCauseText = 100
	maxEndReason = 200
)

// failLeg ends a leg that never reached the PBX (or that the PBX refused).
func (en *Engine) failLeg(ctx context.Context, legID string, cause int, causeText, reason string) {
	en.endLeg(ctx, legID, cause, causeText, reason)
}

// EndConference marks the conference ended (cancelling pending invitations
// and flagging live legs as hung up by us), then tells the PBX to hang up
// everything and destroy the room.
func (en *Engine) EndConference(ctx context.Context, conf *storage.Conference, reason string) error {
	ended := false
	err := en.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.LockConversation(ctx, conf.ConversationID); err != nil {
			return err
		}
		var err error
		ended, err = en.endConferenceTx(ctx, tx, conf, reason)
		if err != nil {
			return err
		}
		legs, err := tx.LiveLegs(ctx, conf.ID)
		if err != nil {
			return err
		}
		for i := range legs {
			legs[i].HangupRequested = true
			if legs[i].EndReason == "" {
				legs[i].EndReason = "audio " + reason
			}
			if err := tx.SaveLeg(ctx, &legs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if ended {
		en.destroyOnPBX(ctx, conf)
	}
	return nil
}

// endConferenceTx ends the conference in tx: state, invitations, event.
func (en *Engine) endConferenceTx(ctx context.Context, tx *storage.Store, conf *storage.Conference, reason string) (bool, error) {
	now := time.Now().UTC()
	ok, err := tx.EndConference(ctx, conf.ID, reason, now)
	if err != nil || !ok {
		return false, err
	}
	invs, err := tx.Invitations(ctx, conf.ID)
	if err != nil {
		return false, err
	}
	for i := range invs {
		if invs[i].State == storage.InvitationPending {
			if err := en.SetInvitationState(ctx, tx, &invs[i], storage.InvitationCancelled); err != nil {
				return false, err
			}
		}
	}
	conf.State, conf.EndedAt, conf.EndReason = storage.ConferenceEnded, &now, reason
	return true, core.AppendEvent(ctx, tx, conf.ConversationID, "audio.ended", core.ConferenceViewOf(conf))
}
