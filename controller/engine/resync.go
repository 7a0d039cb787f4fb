package engine

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/convoice/convoice/leg"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// endNodeLegs ends every live leg of a node that really lost its calls
// (it restarted, or stayed unreachable past NodeLostAfter); it returns how
// many it ended.
func (en *Engine) endNodeLegs(ctx context.Context, node, reason string) int {
	legs, err := en.store.AllLiveLegs(ctx, node)
	if err != nil {
		en.log.Error("listing live legs failed", "node", node, "err", err)
		return 0
	}
	en.applyLegs(ctx, legs, leg.EvPBXGone, legInput{reason: reason})
	return len(legs)
}

// resyncBatch bounds how many legs one transaction of applyLegs changes:
// few enough that it holds the SQLite writer (or, on PostgreSQL, its
// conversations' locks) for milliseconds, not seconds.
const resyncBatch = 200

// applyLegs applies ev to many legs by the table, as applyLeg does to one,
// but resyncBatch legs to a transaction: a resync that finds 100 legs gone
// waited for 100 commits one after the other, each queued behind the call
// progress of the whole node. Once a batch is durable, each leg's PBX work
// is done (afterLeg). When a batch fails (a leg gone from the store, a
// database error), its legs are applied one by one, so that one leg does
// not hold the others back and each gets applyLeg's own handling.
func (en *Engine) applyLegs(ctx context.Context, legs []storage.Leg, ev leg.Event, in legInput) {
	// On PostgreSQL each leg locks its conversation first (lockLeg):
	// taken in one order by every batch.
	legs = slices.Clone(legs)
	slices.SortFunc(legs, func(a, b storage.Leg) int {
		return cmp.Or(strings.Compare(a.ConversationID, b.ConversationID), strings.Compare(a.ID, b.ID))
	})
	for batch := range slices.Chunk(legs, resyncBatch) {
		steps := make([]legStep, len(batch))
		err := en.store.InTx(ctx, func(tx *storage.Store) error {
			for i := range batch {
				var err error
				if steps[i], err = en.applyLegTx(ctx, tx, batch[i].ID, ev, in); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			en.log.Warn("applying a batch of leg events failed; applying them one by one", "event", ev, "legs", len(batch), "err", err)
			for i := range batch {
				en.applyLeg(ctx, batch[i].ID, ev, in)
			}
			continue
		}
		for i := range batch {
			en.afterLeg(ctx, batch[i].ID, ev, nil, steps[i])
		}
	}
}

// Resync reconciles the store with what the PBX node holds. It runs after
// every (re)connect and after lost events; requests for a node that is
// already resyncing are coalesced into one more run.
func (en *Engine) Resync(ctx context.Context, nodeName string) {
	en.resyncMu.Lock()
	if en.resyncBusy[nodeName] {
		en.resyncWant[nodeName] = true
		en.resyncMu.Unlock()
		return
	}
	en.resyncBusy[nodeName] = true
	en.resyncMu.Unlock()
	for {
		err := en.resyncOnce(ctx, nodeName)
		if node := en.byName[nodeName]; node != nil {
			if n := node.catchUp.resynced(err, time.Now()); err != nil && (n == 1 || n%10 == 0) {
				// Tried again while it fails (backing off to every
				// 16 s): one warning, then one every tenth failure.
				en.log.Warn("resync failed; trying again", "node", nodeName, "failures_in_a_row", n, "in", catchUpBackoff(n), "err", err)
			} else if err == nil && n > 0 {
				en.log.Info("resync succeeded again", "node", nodeName, "failures_before", n)
			}
		}
		if err != nil {
			en.metrics.Resyncs.WithLabelValues(nodeName, "error").Inc()
		} else {
			en.metrics.Resyncs.WithLabelValues(nodeName, "ok").Inc()
		}
		en.resyncMu.Lock()
		if !en.resyncWant[nodeName] {
			en.resyncBusy[nodeName] = false
			en.resyncMu.Unlock()
			return
		}
		en.resyncWant[nodeName] = false
		en.resyncMu.Unlock()
	}
}

func (en *Engine) resyncOnce(ctx context.Context, nodeName string) error {
	node, ok := en.byName[nodeName]
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
	fix := func(what string) { en.metrics.ResyncFixes.WithLabelValues(nodeName, what).Inc() }

	// One read of the node's live legs, and the fixes in batches: when
	// everything agrees (the common case) the resync writes nothing.
	live, err := en.store.AllLiveLegs(ctx, nodeName)
	if err != nil {
		return err
	}
	known := make(map[string]bool, len(live))
	var gone, inConf []storage.Leg
	for _, l := range live {
		known[l.ID] = true
		s, there := onPBX[l.ID]
		switch {
		case !there:
			// A leg the PBX reported alive (ringing, connected) before
			// this snapshot was asked for is gone. One it has said
			// nothing about may still have its originate on the way:
			// leave young ones to the next resync or the watchdog.
			if !aliveBefore(&l, started) && started.Sub(l.CreatedAt) < en.cfg.ResyncYoungLeg {
				continue
			}
			fix("leg_gone")
			gone = append(gone, l)
		case s.InConference && l.State != storage.LegConnected:
			fix("leg_connected")
			inConf = append(inConf, l)
		case l.HangupRequested:
			fix("leg_hangup_retry")
			en.hangupByID(ctx, l.ID)
		}
	}
	en.applyLegs(ctx, gone, leg.EvResyncGone, legInput{reason: "gone from the PBX while convoice was not listening"})
	en.applyLegs(ctx, inConf, leg.EvResyncInConference, legInput{})
	// Calls of ours the store does not hold as live: hang them up. A call
	// being placed may be on the PBX before its record is committed: the
	// placing set is asked first, the store after (a dial leaves the set
	// only once its record is committed).
	for id := range onPBX {
		if known[id] || en.isPlacing(id) {
			continue
		}
		l, err := en.store.GetLeg(ctx, id)
		if err == nil && storage.LegLive(l.State) {
			continue // became live after our list was read
		}
		fix("orphan_leg")
		pctx, cancel := pbxCtx(ctx)
		if err := node.Driver.Hangup(pctx, id); err != nil && !errors.Is(err, pbx.ErrNotFound) {
			en.log.Warn("hanging up orphan call failed", "node", nodeName, "leg", id, "err", err)
		}
		cancel()
	}
	// Rooms of ours that no active conference owns: destroy them.
	active, err := en.store.ActiveConferences(ctx)
	if err != nil {
		return err
	}
	activeIDs := map[string]*storage.Conference{}
	for i := range active {
		if active[i].Node == nodeName || (active[i].Node == "" && len(en.nodes) == 1) {
			activeIDs[active[i].ID] = &active[i]
		}
	}
	for _, room := range snap.Conferences {
		if _, ok := activeIDs[room]; ok || en.isPlacing(room) {
			continue
		}
		if c, err := en.store.GetConference(ctx, room); err == nil && c.State == storage.ConferenceActive {
			continue // started after our list was read
		}
		fix("orphan_conference")
		pctx, cancel := pbxCtx(ctx)
		if err := node.Driver.EndConference(pctx, room); err != nil && !errors.Is(err, pbx.ErrNotFound) {
			en.log.Warn("destroying orphan conference failed", "node", nodeName, "conference", room, "err", err)
		}
		cancel()
	}
	// Active conferences with no live leg left: end them (endConference
	// checks again in its transaction: a leg may have joined since).
	counts, err := en.store.CountLiveLegsByConference(ctx)
	if err != nil {
		return err
	}
	for _, conf := range activeIDs {
		if started.Sub(conf.CreatedAt) < en.cfg.ResyncYoungLeg || en.placingIn(conf.ID) || counts[conf.ID] > 0 {
			continue
		}
		fix("conference_empty")
		if err := en.endConference(ctx, conf, "no calls left after resync", true); err != nil {
			return err
		}
	}
	return nil
}

// ownsLeg reports whether this replica holds the lease of the leg's node
// (a leg of an unconfigured node is everybody's: nobody else would end it).
func (en *Engine) ownsLeg(l *storage.Leg) bool {
	node := l.Node
	if node == "" && len(en.nodes) == 1 {
		node = en.nodes[0].Name
	}
	n, ok := en.byName[node]
	return !ok || n.owner.Load()
}

// nodeReady reports whether the named node (a leg's or a conference's)
// answers; an unknown node counts as ready (nothing will say otherwise).
func (en *Engine) nodeReady(name string) bool {
	if name == "" && len(en.nodes) == 1 {
		name = en.nodes[0].Name
	}
	n, ok := en.byName[name]
	return !ok || n.Driver.Status().Ready
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

// catchUpBackoff is how long the watchdog waits before the next catch-up
// resync after failures resyncs of a node in a row: after the first, only
// to its next tick (a database blip is over by then, as a rule); then 2,
// 4, 8 and at most 16 s.
func catchUpBackoff(failures int64) time.Duration {
	if failures <= 1 {
		return 0
	}
	return time.Second << min(failures-1, 4)
}

// catchUp is whether the store may be behind a node: a transition of one
// of its events could not be written (the database failed under it) or
// its resync failed. The owner's watchdog resyncs it at its next tick, and
// again after a back-off while its resyncs fail (catchUpBackoff), until
// one succeeds. Kept per node: a node whose resyncs fail backs off by its
// own failures, whatever the others do.
type catchUp struct {
	behind atomic.Bool
	fails  atomic.Int64 // the node's resyncs failed in a row
	next   atomic.Int64 // unix ns before which no catch-up runs
}

// mark says the store may be behind the node.
func (c *catchUp) mark() { c.behind.Store(true) }

// resynced counts the outcome of a resync that ended at now: a failure
// marks the node again, not due before the back-off of its failures in a
// row, and returns them; a success returns how many there were.
func (c *catchUp) resynced(err error, now time.Time) int64 {
	if err != nil {
		n := c.fails.Add(1)
		c.next.Store(now.Add(catchUpBackoff(n)).UnixNano())
		c.behind.Store(true)
		return n
	}
	return c.fails.Swap(0)
}

// due reports whether a catch-up resync should run now, taking the mark.
func (c *catchUp) due(now time.Time) bool {
	return c.behind.Load() && now.UnixNano() >= c.next.Load() && c.behind.Swap(false)
}

// storeBehind marks every node as possibly ahead of the store: a
// transition failed whose node is not at hand (the watchdog acts on the
// nodes this replica owns).
func (en *Engine) storeBehind() {
	for _, n := range en.nodes {
		n.catchUp.mark()
	}
}

// hangupRetry: a leg we hung up (or whose conference we ended) that is
// still live this long after is hung up again by a resync; the PBX may not
// have taken the first request.
const hangupRetry = 3 * time.Second

// hangupsPending reports whether a node has legs we hung up that are still
// live after hangupRetry.
func (en *Engine) hangupsPending(ctx context.Context, node string) bool {
	pending, err := en.store.HangupsPending(ctx, node, time.Now().Add(-hangupRetry))
	return err == nil && pending
}

// watchdog ends legs the PBX has said nothing about for too long: a leg
// cannot stay "dialing" or "ringing" forever even if the PBX goes silent,
// nor "confirming" (confirmWatchdog).
// It also resyncs a node that becomes ready again without a reconnect (a
// blip of unanswered pings: the link never dropped, so no link event comes,
// but PBX requests may have failed meanwhile), a node with hangups that
// did not take (checked every few seconds), every node whose store may be
// behind it (catchUp: at the next tick, and while its resyncs fail after a
// back-off up to 16 s, until one succeeds), and every node every
// periodicResync.
func (en *Engine) watchdog(ctx context.Context) {
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
		for _, n := range en.nodes {
			// Resyncs and the node's health are the lease holder's
			// duties (nodes.go): one replica per node.
			if !n.owner.Load() {
				delete(wasReady, n.Name)
				continue
			}
			ready := n.Driver.Status().Ready
			was, seen := wasReady[n.Name]
			wasReady[n.Name] = ready
			// A catch-up resync asks the PBX for every call: while the
			// node's resyncs keep failing (a database that is down, a
			// full disk) they back off.
			catchUp := n.catchUp.due(time.Now())
			if ready && ((seen && !was) || periodic || catchUp || (tick%3 == 0 && en.hangupsPending(ctx, n.Name))) {
				go en.Resync(ctx, n.Name)
			} else if catchUp && !ready {
				n.catchUp.mark() // once the node is back
			}
			en.checkNodeLost(ctx, n)
		}
		en.confirmWatchdog(ctx)
		limit := en.cfg.RingTimeout + en.cfg.RingGrace
		legs, err := en.store.StaleRingingLegs(ctx, time.Now().UTC().Add(-limit))
		if err != nil {
			continue
		}
		for _, l := range legs {
			if !en.ownsLeg(&l) {
				continue // the owner of its node sees to it
			}
			if !en.nodeReady(l.Node) {
				// Call control is unavailable: the leg keeps its last
				// known state; the resync when the link is back (or
				// the long bound) decides.
				continue
			}
			en.metrics.WatchdogEnds.Inc()
			en.log.Warn("leg rang past the ring timeout with no word from the PBX; ending it", "leg", l.ID, "state", l.State)
			en.applyLeg(ctx, l.ID, leg.EvRingTimeout, legInput{cause: pbx.CauseNoAnswer, reason: "ring timeout: no answer reported by the PBX"})
		}
	}
}
