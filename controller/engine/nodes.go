package engine

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// leaseName is the name of a node's ownership lease.
func leaseName(node string) string { return "pbx-node:" + node }

// runNode drives one PBX node until ctx is done. Exactly one replica (the
// holder of the node's lease, a PostgreSQL advisory lock) runs the
// driver's event loop and, with it, the node's resyncs and watchdog duties;
// the others run the driver command-only (pbx.Passive), so that any
// replica can place calls and run commands on any node. Losing the lease
// (another replica won it while our database session was down, or the
// database stayed out of reach: storage.Options.LeaseRegain) stops the
// event loop at once and goes back to command-only mode and to trying to
// take the lease again; a session that merely ended is replaced without
// the event loop noticing. A holder that cannot reach its node while
// another replica can hands the node over (shouldHandOver). On SQLite
// there is one process: it holds every lease at once.
//
//	loop {
//	    run passive until the lease is acquired (saying whether we reach the node)
//	    run the event loop (link up → resync) until the lease is lost,
//	        the node is handed over, or ctx is done
//	}
func (en *Engine) runNode(ctx context.Context, n *Node) {
	h := pbx.HandlerFunc(func(e pbx.Event) { en.HandlePBXEvent(context.WithoutCancel(ctx), n.Name, e) })
	en.setOwner(n, false)
	var yield time.Duration
	for ctx.Err() == nil {
		lease, wasReady, err := en.acquireNode(ctx, n, yield)
		yield = 0
		if err != nil {
			return // ctx done
		}
		if wasReady {
			// The node answered commands a moment ago; until the event
			// connection is up (well under a second) dials wait for it.
			en.startSwitch(ctx, n)
		}
		en.setOwner(n, true)
		en.log.Info("holding the PBX node's lease: running its event connection", "node", n.Name, "was_ready", wasReady)
		lctx, cancel := context.WithCancel(ctx)
		var handover atomic.Bool
		go func() {
			owned := time.Now()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-lease.Lost():
					cancel()
					return
				case <-lctx.Done():
					return
				case <-t.C:
					if en.shouldHandOver(lctx, n, owned) {
						handover.Store(true)
						cancel()
						return
					}
				}
			}
		}()
		err = n.Driver.Run(lctx, h)
		lost := lctx.Err() != nil && ctx.Err() == nil
		cancel()
		en.setOwner(n, false)
		lease.Release()
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			// The configuration can never work (Run's contract).
			en.log.Error("pbx driver stopped", "node", n.Name, "err", err)
			return
		case lost && handover.Load():
			// Another replica reaches the node: it takes the lease
			// while we wait (it tries every LeaseRetry).
			en.metrics.NodeHandovers.WithLabelValues(n.Name).Inc()
			yield = leaseYield
		case lost:
			// Our database session failed and we could not take the
			// lease again: we are the suspect replica. Let a healthy one
			// take it first.
			en.log.Warn("lost the PBX node's lease: back to commands only", "node", n.Name)
			yield = leaseYield
		case ctx.Err() == nil:
			// Run returned by itself: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(storage.LeaseRetry):
			}
		}
	}
}

// shouldHandOver reports whether this replica, holding n's lease since
// owned, should hand n over: its own connection to the node has been down
// for HandoverAfter (during this holding: a node down for everyone is not
// passed on and on) and another replica said since then (after
// reachMargin, within reachFresh) that it reaches the node. A PBX that is
// down, or a partition of every replica from it, keeps the node where it
// is: the holder's long bound (NodeLostAfter) decides then.
func (en *Engine) shouldHandOver(ctx context.Context, n *Node, owned time.Time) bool {
	st := n.Driver.Status()
	if st.Ready {
		return false
	}
	down := st.Since
	if down.Before(owned) {
		down = owned
	}
	if time.Since(down) < en.cfg.HandoverAfter {
		return false
	}
	// Only what another replica said since we lost the node counts, and
	// not what it said in the first reachMargin of that: a replica that
	// still took the node for reachable a moment after it went down for
	// everyone must not draw it away.
	window := min(time.Since(down)-reachMargin, reachFresh)
	if window <= 0 {
		return false
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	others, err := en.store.OthersReachNode(qctx, n.Name, en.replica, window)
	if err != nil || !others {
		return false
	}
	en.log.Warn("this replica cannot reach the PBX node but another can: handing the node over",
		"node", n.Name, "down_for", time.Since(down).Round(time.Second), "detail", st.Detail)
	return true
}

// reachNote is how often a replica that does not hold a node's lease but
// reaches the node says so (storage.NoteNodeReach); reachFresh is how
// recent that must be for the holder to hand the node over, and
// reachMargin how long after the holder lost the node it must be (a
// replica's link supervision takes a ping round or two to see the node
// gone).
const (
	reachNote   = 2 * time.Second
	reachFresh  = 3 * reachNote
	reachMargin = 2 * time.Second
)

// noteReach says, every reachNote until ctx is done, that this replica
// reaches n, while it does (its passive driver is ready).
func (en *Engine) noteReach(ctx context.Context, n *Node) {
	t := time.NewTicker(reachNote)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if i%300 == 0 {
			// What replicas that stopped long ago said (every process
			// has an id of its own): every 10 minutes.
			_ = en.store.ForgetNodeReach(ctx, time.Hour)
		}
		if !n.Driver.Status().Ready {
			continue
		}
		if err := en.store.NoteNodeReach(ctx, n.Name, en.replica); err != nil && ctx.Err() == nil {
			en.log.Debug("could not note that this replica reaches the node", "node", n.Name, "err", err)
		}
	}
}

// leaseYield is how long a replica that lost a node's lease waits before it
// tries to take it again, so that the others (retrying every LeaseRetry)
// take it first.
const leaseYield = 3 * storage.LeaseRetry

// switchGrace bounds how long dials wait for a node whose driver is
// switching from commands-only to its event connection.
const switchGrace = 5 * time.Second

// startSwitch opens n's switch window: until its driver is ready (or
// switchGrace has passed) dials wait for it. It closes as soon as the driver
// is ready, so a fault right after still fails dials fast.
func (en *Engine) startSwitch(ctx context.Context, n *Node) {
	deadline := time.Now().Add(switchGrace).UnixNano()
	n.switchUntil.Store(deadline)
	go func() {
		en.awaitSwitch(ctx, n)
		n.switchUntil.CompareAndSwap(deadline, 0)
	}()
}

// awaitSwitch waits (within ctx) while n is switching to its event
// connection and not ready yet.
func (en *Engine) awaitSwitch(ctx context.Context, n *Node) {
	for !n.Driver.Status().Ready && time.Now().UnixNano() < n.switchUntil.Load() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// acquireNode waits for the node's lease (trying after yield), serving
// commands in passive mode meanwhile (on PostgreSQL, when the driver can).
// wasReady says the passive driver was ready when the lease came.
func (en *Engine) acquireNode(ctx context.Context, n *Node, yield time.Duration) (*storage.Lease, bool, error) {
	p, ok := n.Driver.(pbx.Passive)
	if en.store.Dialect() != "postgres" || !ok {
		lease, err := en.store.AcquireLease(ctx, leaseName(n.Name))
		return lease, false, err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.RunPassive(pctx); err != nil {
			en.log.Error("pbx driver: passive mode stopped", "node", n.Name, "err", err)
		}
	}()
	go en.noteReach(pctx, n)
	var lease *storage.Lease
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(yield):
		lease, err = en.store.AcquireLease(ctx, leaseName(n.Name))
	}
	wasReady := err == nil && n.Driver.Status().Ready
	cancel()
	<-done
	return lease, wasReady, err
}

func (en *Engine) setOwner(n *Node, owner bool) {
	n.owner.Store(owner)
	v := 0.0
	if owner {
		v = 1
	}
	en.metrics.NodeOwner.WithLabelValues(n.Name).Set(v)
}

// Owner reports whether this replica holds the lease of the named node.
func (en *Engine) Owner(node string) bool {
	n, ok := en.byName[node]
	return ok && n.owner.Load()
}

// checkNodeLost gives up a node this replica owns that has not been ready
// for NodeLostAfter, the long bound (default 10 min): its live legs end
// ("PBX node <name> unreachable", the table's pbx_gone) and their
// conferences with the last of them. Before that, a node that does not
// answer keeps its legs in their last known state: a partition of the
// control link is not a lost call (the PBX goes on mixing), and the resync
// when the link is back tells which calls are still up. New conferences
// avoid the node meanwhile (placeConference takes ready nodes only). Runs
// from the watchdog; one sweep per node at a time.
func (en *Engine) checkNodeLost(ctx context.Context, n *Node) {
	st := n.Driver.Status()
	if st.Ready || !n.owner.Load() || time.Since(st.Since) < en.cfg.NodeLostAfter {
		return
	}
	if !n.ending.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer n.ending.Store(false)
		legs, err := en.store.AllLiveLegs(ctx, n.Name)
		if err != nil || len(legs) == 0 {
			return
		}
		en.log.Warn("PBX node unreachable past the long bound: ending its calls", "node", n.Name,
			"not_ready_since", st.Since, "bound", en.cfg.NodeLostAfter, "detail", st.Detail, "legs", len(legs))
		ended := en.endNodeLegs(ctx, n.Name, "PBX node "+n.Name+" unreachable")
		en.metrics.NodeLost.WithLabelValues(n.Name).Add(float64(ended))
	}()
}
