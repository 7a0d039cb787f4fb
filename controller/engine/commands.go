package engine

// What the engine asks a PBX on behalf of the other parts and of itself:
// hang up, mute, destroy a room. Each request is bounded (pbxCtx); a
// failure is logged and left to the watchdog and the next resync.

import (
	"context"
	"errors"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/leg"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// destroyOnPBX removes the room and every call in it from the PBX. Done
// in the background: the request has its answer; failures are logged and
// the next resync removes what is left.
func (en *Engine) destroyOnPBX(ctx context.Context, conf *storage.Conference) {
	node, err := en.nodeOf(conf)
	if err != nil {
		return
	}
	pctx, cancel := pbxCtx(ctx)
	defer cancel()
	if err := node.Driver.EndConference(pctx, conf.ID); err != nil && !errors.Is(err, pbx.ErrNotFound) {
		en.log.Warn("end conference on pbx failed; resync will retry", "conference", conf.ID, "node", node.Name, "err", err)
	}
}

// HangupOnPBX asks the PBX to hang a leg up. When the PBX no longer knows
// the leg, the leg is ended here (its end event will never come).
func (en *Engine) HangupOnPBX(ctx context.Context, conf *storage.Conference, l *storage.Leg) {
	if errors.Is(en.hangupOnNodeOf(ctx, conf, l.ID), pbx.ErrNotFound) {
		en.applyLeg(ctx, l.ID, leg.EvResyncGone, legInput{reason: "already gone from the PBX"})
	}
}

// hangupOnNodeOf asks the node of conf to hang the leg up, by its id (a
// driver hangs up legs it did not place, too); a failure other than "not
// found" is logged and left to the next resync.
func (en *Engine) hangupOnNodeOf(ctx context.Context, conf *storage.Conference, legID string) error {
	node, err := en.nodeOf(conf)
	if err != nil {
		return err
	}
	pctx, cancel := pbxCtx(ctx)
	err = node.Driver.Hangup(pctx, legID)
	cancel()
	if err != nil && !errors.Is(err, pbx.ErrNotFound) {
		en.log.Warn("hangup on pbx failed; the watchdog and resync will retry", "leg", legID, "node", node.Name, "err", err)
	}
	return err
}

// hangupByID hangs a leg up on the PBX by its id (ending it here when the
// PBX no longer knows it).
func (en *Engine) hangupByID(ctx context.Context, legID string) {
	l, err := en.store.GetLeg(ctx, legID)
	if err != nil {
		return
	}
	conf, err := en.store.GetConference(ctx, l.ConferenceID)
	if err != nil {
		return
	}
	en.HangupOnPBX(ctx, conf, l)
}

// hangupOnNode asks the PBX to hang a leg up, a transition's HangUp
// effect: no more (the leg's end comes as its event, or from the
// watchdog and resync).
func (en *Engine) hangupOnNode(ctx context.Context, legID string) {
	l, err := en.store.GetLeg(ctx, legID)
	if err != nil {
		return
	}
	conf, err := en.store.GetConference(ctx, l.ConferenceID)
	if err != nil {
		return
	}
	en.hangupOnNodeOf(ctx, conf, legID)
}

// MuteOnPBX mutes or unmutes a leg in its conference on the PBX; the
// error says to the caller why it could not.
func (en *Engine) MuteOnPBX(ctx context.Context, conf *storage.Conference, legID string, muted bool) error {
	node, err := en.nodeOf(conf)
	if err != nil {
		return err
	}
	pctx, cancel := pbxCtx(ctx)
	err = node.Driver.SetMute(pctx, conf.ID, legID, muted)
	cancel()
	switch {
	case errors.Is(err, pbx.ErrNotFound):
		return core.Conflict("leg_not_connected", "the call has just ended")
	case errors.Is(err, pbx.ErrNotReady):
		return core.Conflict("leg_not_connected", "the call is not in the conference yet")
	case err != nil:
		return en.pbxError(err)
	}
	return nil
}
