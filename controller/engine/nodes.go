package engine

import (
	"context"
	"errors"
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
// database stayed out of reach: storage.Options.LeaseRegain) stops the event loop
// at once and goes back to command-only mode and to trying to take the
// lease again; a session that merely ended is replaced without the event
// loop noticing. On SQLite there is one process: it holds every lease at
// once.
//
//	loop {
//	    run passive until the lease is acquired
//	    run the event loop (link up → resync) until the lease is lost or ctx is done
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
		go func() {
			select {
			case <-lease.Lost():
				cancel()
			case <-lctx.Done():
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
