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
// order and are applied in that order, in the background: the call
// progress is queued to the store (storage.InTxAsync) and this returns
// before it is written, so that a driver's worker goes on with the next
// event instead of waiting for each commit. A duplicate or late event (a
// leg already past that state) changes nothing.
func (c *Controller) HandlePBXEvent(ctx context.Context, node string, e pbx.Event) {
	// Call progress is background work for the store: a click dialing
	// out goes first (storage.LowPriority).
	ctx = storage.LowPriority(ctx)
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
		c.transitionThen(ctx, e.LegID, func(l *storage.Leg) bool {
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
				go c.hangupByID(context.WithoutCancel(ctx), e.LegID)
			}
		})
	case pbx.EventEnded:
		c.endLegAsync(ctx, e.LegID, e.Cause, e.CauseText, e.Reason)
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

// transition applies f to a leg in one transaction and logs leg.updated
// when f changed it. It is queued, not waited for (storage.InTxAsync): the
// driver's worker for the channel goes on with its next event, which is
// applied after this one.
func (c *Controller) transition(ctx context.Context, legID string, f func(l *storage.Leg) bool) {
	c.transitionThen(ctx, legID, f, nil)
}

// transitionThen is transition with then called once the transaction is
// durable (not when it failed); then must not block.
func (c *Controller) transitionThen(ctx context.Context, legID string, f func(l *storage.Leg) bool, then func()) {
	if legID == "" {
		return
	}
	c.store.InTxAsync(ctx, func(tx *storage.Store) error {
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
		return appendEvent(ctx, tx, l.ConversationID, "leg.updated", legView(l))
	}, func(err error) {
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			c.log.Error("leg transition failed", "leg", legID, "err", err)
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
func (c *Controller) endLeg(ctx context.Context, legID string, cause int, causeText, reason string) {
	fn, ended := c.endLegTx(ctx, legID, cause, causeText, reason)
	err := c.store.InTx(ctx, fn)
	c.legEnded(ctx, legID, err, *ended)
}

// endLegAsync is endLeg queued, for the PBX's call progress (see
// transition).
func (c *Controller) endLegAsync(ctx context.Context, legID string, cause int, causeText, reason string) {
	fn, ended := c.endLegTx(ctx, legID, cause, causeText, reason)
	c.store.InTxAsync(ctx, fn, func(err error) {
		// On a goroutine of its own: this runs where the store answers
		// transactions, and legEnded may call the PBX.
		go c.legEnded(context.WithoutCancel(ctx), legID, err, *ended)
	})
}

// endLegTx is endLeg's transaction; *ended is set to the conference it
// ended, if any.
func (c *Controller) endLegTx(ctx context.Context, legID string, cause int, causeText, reason string) (func(tx *storage.Store) error, **storage.Conference) {
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
		l.Cause, l.CauseText, l.EndedAt, l.Talking = cause, clip(causeText, maxCauseText), &now, false
		if reason != "" && l.EndReason == "" {
			l.EndReason = clip(reason, maxEndReason)
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
			*ended = conf
		}
		return err
	}, ended
}

// legEnded finishes endLeg after its transaction: logs a failure, tells
// the PBX to destroy a conference that ended.
func (c *Controller) legEnded(ctx context.Context, legID string, err error, ended *storage.Conference) {
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		c.log.Error("ending leg failed", "leg", legID, "err", err)
		return
	}
	if ended != nil && err == nil {
		c.destroyOnPBX(ctx, ended)
	}
}

// Column sizes of legs.cause_text and legs.end_reason (storage.Leg); clip
// (audit.go) cuts on a character boundary.
const (
	maxCauseText = 100
	maxEndReason = 200
)

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
			// A leg the PBX reported alive (ringing, connected) before
			// this snapshot was asked for is gone. One it has said
			// nothing about may still have its originate on the way:
			// leave young ones to the next resync or the watchdog.
			if !aliveBefore(&l, started) && started.Sub(l.CreatedAt) < c.cfg.ResyncYoungLeg {
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

// ownsLeg reports whether this replica holds the lease of the leg's node
// (a leg of an unconfigured node is everybody's: nobody else would end it).
func (c *Controller) ownsLeg(l *storage.Leg) bool {
	node := l.Node
	if node == "" && len(c.nodes) == 1 {
		node = c.nodes[0].Name
	}
	n, ok := c.byName[node]
	return !ok || n.owner.Load()
}

// aliveBefore reports whether the PBX said the leg's call existed (it rang
// or was answered) before t.
func aliveBefore(l *storage.Leg, t time.Time) bool {
	return (l.RingingAt != nil && l.RingingAt.Before(t)) || (l.ConnectedAt != nil && l.ConnectedAt.Before(t))
}

// periodicResync is how often every ready node is reconciled even when no
// link event asked for it: the safety net for PBX requests that failed
// while the link stayed up (a hangup or a room's end that timed out during
// a blip), which the next resync retries.
const periodicResync = 30 * time.Second

// hangupRetry: a leg we hung up (or whose conference we ended) that is
// still live this long after is hung up again by a resync; the PBX may not
// have taken the first request.
const hangupRetry = 3 * time.Second

// hangupsPending reports whether a node has legs we hung up that are still
// live after hangupRetry.
func (c *Controller) hangupsPending(ctx context.Context, node string) bool {
	legs, err := c.store.AllLiveLegs(ctx, node)
	if err != nil {
		return false
	}
	old := time.Now().Add(-hangupRetry)
	for _, l := range legs {
		if l.HangupRequested && l.UpdatedAt.Before(old) {
			return true
		}
	}
	return false
}

// watchdog ends legs the PBX has said nothing about for too long: a leg
// cannot stay "dialing" or "ringing" forever even if the PBX goes silent.
// It also resyncs a node that becomes ready again without a reconnect (a
// blip of unanswered pings: the link never dropped, so no link event comes,
// but PBX requests may have failed meanwhile), a node with hangups that
// did not take (checked every few seconds), and every node every
// periodicResync.
func (c *Controller) watchdog(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	wasReady := map[string]bool{}
	lastResync := time.Now()
	tick := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		periodic := time.Since(lastResync) >= periodicResync
		if periodic {
			lastResync = time.Now()
		}
		tick++
		for _, n := range c.nodes {
			// Resyncs and the node's health are the lease holder's
			// duties (nodes.go): one replica per node.
			if !n.owner.Load() {
				delete(wasReady, n.Name)
				continue
			}
			ready := n.Driver.Status().Ready
			was, seen := wasReady[n.Name]
			wasReady[n.Name] = ready
			if ready && ((seen && !was) || periodic || (tick%3 == 0 && c.hangupsPending(ctx, n.Name))) {
				go c.Resync(ctx, n.Name)
			}
			c.checkNodeLost(ctx, n)
		}
		limit := c.cfg.RingTimeout + c.cfg.RingGrace
		legs, err := c.store.StaleRingingLegs(ctx, time.Now().UTC().Add(-limit))
		if err != nil {
			continue
		}
		for _, l := range legs {
			if !c.ownsLeg(&l) {
				continue // the owner of its node sees to it
			}
			c.metrics.WatchdogEnds.Inc()
			c.log.Warn("leg rang past the ring timeout with no word from the PBX; ending it", "leg", l.ID, "state", l.State)
			c.hangupByID(ctx, l.ID)
			c.endLeg(ctx, l.ID, pbx.CauseNoAnswer, "", "ring timeout: no answer reported by the PBX")
		}
	}
}
