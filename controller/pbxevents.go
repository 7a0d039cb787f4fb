package controller

import (
	"context"
	"errors"
	"time"

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
// order; a duplicate or late event (a leg already past that state) changes
// nothing.
func (c *Controller) HandlePBXEvent(ctx context.Context, node string, e pbx.Event) {
	c.metrics.PBXEvents.WithLabelValues(node, string(e.Type)).Inc()
	switch e.Type {
	case pbx.EventRinging:
		c.transition(ctx, e.LegID, func(l *storage.Leg) bool {
			if l.State != storage.LegDialing {
				return false
			}
			now := time.Now().UTC()
			l.State, l.RingingAt = storage.LegRinging, &now
			return true
		})
	case pbx.EventConnected:
		hangup := false
		c.transition(ctx, e.LegID, func(l *storage.Leg) bool {
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
		})
		if hangup {
			c.hangupByID(ctx, e.LegID)
		}
	case pbx.EventEnded:
		c.endLeg(ctx, e.LegID, e.Cause, e.CauseText, e.Reason)
	case pbx.EventTalkingStarted, pbx.EventTalkingFinished:
		talking := e.Type == pbx.EventTalkingStarted
		c.transition(ctx, e.LegID, func(l *storage.Leg) bool {
			if l.State != storage.LegConnected || l.Talking == talking || (talking && l.Muted) {
				return false
			}
			l.Talking = talking
			return true
		})
	case pbx.EventLinkUp, pbx.EventLost:
		c.log.Info("pbx link event; reconciling", "node", node, "event", e.Type, "reason", e.Reason)
		go c.Resync(context.WithoutCancel(ctx), node)
	case pbx.EventLinkDown:
		c.log.Warn("pbx event connection lost", "node", node, "reason", e.Reason)
	case pbx.EventPBXRestarted:
		c.log.Warn("pbx lost every call (restart)", "node", node, "reason", e.Reason)
		c.endNodeLegs(ctx, node, "pbx restarted")
	}
}

// transition applies f to a leg in one transaction (the conference row
// locked first so that "last leg ended" is decided once) and logs
// leg.updated when f changed it.
func (c *Controller) transition(ctx context.Context, legID string, f func(l *storage.Leg) bool) {
	if legID == "" {
		return
	}
	err := c.store.InTx(ctx, func(tx *storage.Store) error {
		l, err := tx.GetLegForUpdate(ctx, legID)
		if err != nil {
			return err
		}
		if !f(l) {
			return nil
		}
		if err := tx.SaveLeg(ctx, l); err != nil {
			return err
		}
		return appendEvent(ctx, tx, l.ConversationID, "leg.updated", legView(l))
	})
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		c.log.Error("leg transition failed", "leg", legID, "err", err)
	}
}

// endLeg records that a leg is gone from the PBX, and ends the conference
// when it was the last live leg.
func (c *Controller) endLeg(ctx context.Context, legID string, cause int, causeText, reason string) {
	var ended *storage.Conference
	err := c.store.InTx(ctx, func(tx *storage.Store) error {
		l, err := tx.GetLegForUpdate(ctx, legID)
		if err != nil {
			return err
		}
		if !storage.LegLive(l.State) {
			return nil // duplicate or late
		}
		now := time.Now().UTC()
		l.State = endStateFor(l, cause)
		l.Cause, l.CauseText, l.EndedAt, l.Talking = cause, causeText, &now, false
		if reason != "" && l.EndReason == "" {
			l.EndReason = reason
		}
		if err := tx.SaveLeg(ctx, l); err != nil {
			return err
		}
		c.metrics.LegEnds.WithLabelValues(l.State).Inc()
		if err := appendEvent(ctx, tx, l.ConversationID, "leg.updated", legView(l)); err != nil {
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
		ok, err := c.endConferenceTx(ctx, tx, conf, "the last call ended")
		if ok {
			ended = conf
		}
		return err
	})
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		c.log.Error("ending leg failed", "leg", legID, "err", err)
		return
	}
	if ended != nil {
		c.destroyOnPBX(ctx, ended)
	}
}

// failLeg ends a leg that never reached the PBX (or that the PBX refused).
func (c *Controller) failLeg(ctx context.Context, legID string, cause int, causeText, reason string) {
	c.endLeg(ctx, legID, cause, causeText, reason)
}

func (c *Controller) hangupByID(ctx context.Context, legID string) {
	l, err := c.store.GetLeg(ctx, legID)
	if err != nil {
		return
	}
	conf, err := c.store.GetConference(ctx, l.ConferenceID)
	if err != nil {
		return
	}
	c.hangupOnPBX(ctx, conf, l)
}

// endNodeLegs ends every live leg of a node that lost its calls.
func (c *Controller) endNodeLegs(ctx context.Context, node, reason string) {
	legs, err := c.store.AllLiveLegs(ctx, node)
	if err != nil {
		c.log.Error("listing live legs failed", "node", node, "err", err)
		return
	}
	for _, l := range legs {
		c.endLeg(ctx, l.ID, 0, "", reason)
	}
}

// Resync reconciles the store with what the PBX node holds. It runs after
// every (re)connect and after lost events; requests for a node that is
// already resyncing are coalesced into one more run.
func (c *Controller) Resync(ctx context.Context, nodeName string) {
	c.resyncMu.Lock()
	if c.resyncBusy[nodeName] {
		c.resyncWant[nodeName] = true
		c.resyncMu.Unlock()
		return
	}
	c.resyncBusy[nodeName] = true
	c.resyncMu.Unlock()
	for {
		if err := c.resyncOnce(ctx, nodeName); err != nil {
			c.metrics.Resyncs.WithLabelValues(nodeName, "error").Inc()
			c.log.Warn("resync failed", "node", nodeName, "err", err)
		} else {
			c.metrics.Resyncs.WithLabelValues(nodeName, "ok").Inc()
		}
		c.resyncMu.Lock()
		if !c.resyncWant[nodeName] {
			c.resyncBusy[nodeName] = false
			c.resyncMu.Unlock()
			return
		}
		c.resyncWant[nodeName] = false
		c.resyncMu.Unlock()
	}
}

func (c *Controller) resyncOnce(ctx context.Context, nodeName string) error {
	node, ok := c.byName[nodeName]
	if !ok {
		return errors.New("unknown node")
	}
	started := time.Now().UTC()
	pctx, cancel := pbxCtx(ctx)
	snap, err := node.Driver.Snapshot(pctx)
	cancel()
	if err != nil {
		return err
	}
	onPBX := map[string]pbx.LegSnapshot{}
	for _, l := range snap.Legs {
		onPBX[l.LegID] = l
	}
	fix := func(what string) { c.metrics.ResyncFixes.WithLabelValues(nodeName, what).Inc() }

	live, err := c.store.AllLiveLegs(ctx, nodeName)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, l := range live {
		known[l.ID] = true
		s, there := onPBX[l.ID]
		switch {
		case !there:
			// Its originate may still be on the way: leave young legs to
			// the next resync or the watchdog.
			if started.Sub(l.CreatedAt) < c.cfg.ResyncYoungLeg {
				continue
			}
			fix("leg_gone")
			c.endLeg(ctx, l.ID, 0, "", "gone from the PBX while convoice was not listening")
		case s.InConference && l.State != storage.LegConnected:
			fix("leg_connected")
			c.HandlePBXEvent(ctx, nodeName, pbx.Event{Type: pbx.EventConnected, LegID: l.ID})
		case l.HangupRequested:
			fix("leg_hangup_retry")
			c.hangupByID(ctx, l.ID)
		}
	}
	// Calls of ours the store does not hold as live: hang them up.
	for id := range onPBX {
		if known[id] {
			continue
		}
		l, err := c.store.GetLeg(ctx, id)
		if err == nil && storage.LegLive(l.State) {
			continue // became live after our list was read
		}
		fix("orphan_leg")
		pctx, cancel := pbxCtx(ctx)
		if err := node.Driver.Hangup(pctx, id); err != nil && !errors.Is(err, pbx.ErrNotFound) {
			c.log.Warn("hanging up orphan call failed", "node", nodeName, "leg", id, "err", err)
		}
		cancel()
	}
	// Rooms of ours that no active conference owns: destroy them.
	active, err := c.store.ActiveConferences(ctx)
	if err != nil {
		return err
	}
	activeIDs := map[string]*storage.Conference{}
	for i := range active {
		if active[i].Node == nodeName || (active[i].Node == "" && len(c.nodes) == 1) {
			activeIDs[active[i].ID] = &active[i]
		}
	}
	for _, room := range snap.Conferences {
		if _, ok := activeIDs[room]; ok {
			continue
		}
		fix("orphan_conference")
		pctx, cancel := pbxCtx(ctx)
		if err := node.Driver.EndConference(pctx, room); err != nil && !errors.Is(err, pbx.ErrNotFound) {
			c.log.Warn("destroying orphan conference failed", "node", nodeName, "conference", room, "err", err)
		}
		cancel()
	}
	// Active conferences with no live leg left: end them.
	for _, conf := range activeIDs {
		if started.Sub(conf.CreatedAt) < c.cfg.ResyncYoungLeg {
			continue
		}
		legs, err := c.store.LiveLegs(ctx, conf.ID)
		if err != nil {
			return err
		}
		if len(legs) == 0 {
			fix("conference_empty")
			if err := c.endConference(ctx, conf, "no calls left after resync"); err != nil {
				return err
			}
		}
	}
	return nil
}

// watchdog ends legs the PBX has said nothing about for too long: a leg
// cannot stay "dialing" or "ringing" forever even if the PBX goes silent.
func (c *Controller) watchdog(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		limit := c.cfg.RingTimeout + c.cfg.RingGrace
		legs, err := c.store.StaleRingingLegs(ctx, time.Now().UTC().Add(-limit))
		if err != nil {
			continue
		}
		for _, l := range legs {
			c.metrics.WatchdogEnds.Inc()
			c.log.Warn("leg rang past the ring timeout with no word from the PBX; ending it", "leg", l.ID, "state", l.State)
			c.hangupByID(ctx, l.ID)
			c.endLeg(ctx, l.ID, pbx.CauseNoAnswer, "", "ring timeout: no answer reported by the PBX")
		}
	}
}
