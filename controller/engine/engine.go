package engine

import (
	"context"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// Config is the controller's behaviour knobs (the facade's Config).
type Config struct {
	Region         string         // default region for numbers without "+"
	Extensions     *regexp.Regexp // internal extensions (nil: none)
	CallerIDName   string         // what called phones display
	CallerIDNumber string
	RingTimeout    time.Duration // originate timeout; default 30 s
	// RingGrace is how long past RingTimeout we wait for the PBX to end a
	// ringing leg before we end it ourselves (the PBX went silent).
	RingGrace time.Duration // default 15 s
	// ResyncYoungLeg: legs younger than this are left alone by resync, their
	// originate may still be on its way to the PBX.
	ResyncYoungLeg time.Duration // default 5 s
	// NodeLostAfter is the long bound: a PBX node that has not been ready
	// for this long is given up, its live legs end ("PBX node <name>
	// unreachable") and its conferences with them. Until then its legs
	// keep their last known state (the PBX may well go on mixing them
	// behind a partition of the control link) and the conference view says
	// call control is unavailable. Default 10 min.
	NodeLostAfter time.Duration
	// HandoverAfter: a replica holding a PBX node's lease whose own event
	// connection to the node has been down this long hands the node over
	// when another replica reaches it (nodes.go; PostgreSQL). Default
	// 10 s: longer than the link supervision's reconnects, so a blip does
	// not move the node.
	HandoverAfter time.Duration
	// Policy is the dial policy: what may be dialed, by whom, how often.
	Policy policy.Config
	Logger *slog.Logger
	// Confirm is confirm-to-join: who must press a key before joining
	// the mix (confirm.go). The zero value is off.
	Confirm ConfirmConfig
	// IdempotencyAttempt bounds one dial request kept under an
	// Idempotency-Key: a key whose first attempt has no answer after this
	// long died half-way (the process was killed) and may be retried.
	// Default 2 min (a dial answers within the PBX request timeout).
	IdempotencyAttempt time.Duration
	// IdempotencyRetention is how long a key and its answer are kept;
	// older ones are purged in the background. Default 24 h.
	IdempotencyRetention time.Duration
}

// DefaultNodeLostAfter is Config.NodeLostAfter's default: long enough to
// ride out a partition of the control link or a PBX's planned maintenance
// without ending calls the PBX still mixes; a restart of the PBX is seen
// at once (pbx.EventPBXRestarted) and does not wait for it.
const DefaultNodeLostAfter = 10 * time.Minute

// DefaultHandoverAfter is Config.HandoverAfter's default.
const DefaultHandoverAfter = 10 * time.Second

// Node is one PBX the controller can place conferences on.
type Node struct {
	Name   string
	Weight int
	Driver pbx.Driver

	owner  atomic.Bool // this process holds the node's lease (nodes.go)
	ending atomic.Bool // a "node lost" sweep is running
	// switchUntil (unix ns) is set while the node's driver switches from
	// commands-only to its event connection after this replica won the
	// lease: dials wait for it instead of answering 503 (nodes.go).
	switchUntil atomic.Int64
	// catchUp: the store may be behind this node (resync.go).
	catchUp catchUp
}

// Engine places calls and follows them: it dials (after the dial policy),
// applies the PBX's events to legs and conferences, reconciles the store
// with each PBX (resync, watchdog), and holds the nodes' leases.
type Engine struct {
	// policy is cfg.Policy resolved once (country lists, prefix sets):
	// every dial consults it.
	policy  *policy.Policy
	cfg     Config
	store   *storage.Store
	audit   *audit.Log
	log     *slog.Logger
	numbers policy.Numbers
	nodes   []*Node
	byName  map[string]*Node
	metrics *Metrics
	// replica names this process among the replicas, for what it tells
	// them through the store (which nodes it reaches: nodes.go).
	replica string

	draining atomic.Bool
	inflight sync.WaitGroup

	// placing holds the legs (id → conference id) and new conferences (id
	// → "") whose originate or room may be on the PBX before their
	// records are visible to other connections: on SQLite the call is
	// placed once the leg is written, before the commit (InTxEarly). A
	// resync skips them instead of hanging them up as orphans.
	placing sync.Map

	// grantSweep is when (unix ns) old dial grants were last deleted.
	grantSweep atomic.Int64

	resyncMu   sync.Mutex
	resyncWant map[string]bool // nodes with a resync requested while one ran
	resyncBusy map[string]bool
}

// New makes the engine over store; refused dials and dial-outs are
// recorded in trail.
func New(cfg Config, store *storage.Store, trail *audit.Log, nodes []*Node, metrics *Metrics) *Engine {
	if cfg.RingTimeout <= 0 {
		cfg.RingTimeout = 30 * time.Second
	}
	if cfg.RingGrace <= 0 {
		cfg.RingGrace = 15 * time.Second
	}
	if cfg.ResyncYoungLeg <= 0 {
		cfg.ResyncYoungLeg = 5 * time.Second
	}
	if cfg.NodeLostAfter <= 0 {
		cfg.NodeLostAfter = DefaultNodeLostAfter
	}
	if cfg.HandoverAfter <= 0 {
		cfg.HandoverAfter = DefaultHandoverAfter
	}
	if cfg.CallerIDName == "" {
		cfg.CallerIDName = "convoice"
	}
	cfg.Confirm = cfg.Confirm.withDefaults()
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	en := &Engine{
		cfg: cfg, store: store, audit: trail, log: lg, metrics: metrics,
		numbers:    policy.Numbers{Region: cfg.Region, Extensions: cfg.Extensions},
		policy:     policy.Resolve(cfg.Policy, cfg.Region),
		nodes:      nodes,
		byName:     map[string]*Node{},
		replica:    core.NewID(),
		resyncWant: map[string]bool{},
		resyncBusy: map[string]bool{},
	}
	for _, n := range nodes {
		if n.Weight <= 0 {
			n.Weight = 1
		}
		en.byName[n.Name] = n
	}
	return en
}

// Run drives every PBX node until ctx is done: per node, the lease and the
// event loop or the command-only mode (nodes.go), and the watchdog that ends
// legs the PBX forgot.
func (en *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, n := range en.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			en.runNode(ctx, n)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		en.watchdog(ctx)
	}()
	wg.Wait()
	return ctx.Err()
}

// Drain stops taking new dial requests and waits (up to ctx) for the ones in
// flight to finish. Calls stay up: the PBX keeps them, and the next start
// resyncs.
func (en *Engine) Drain(ctx context.Context) {
	en.draining.Store(true)
	done := make(chan struct{})
	go func() { en.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// NodeStatus is one PBX node's health.
type NodeStatus struct {
	Name   string     `json:"name"`
	Kind   string     `json:"kind"`
	Owner  bool       `json:"owner"` // this replica holds the node's lease
	Status pbx.Status `json:"status"`
}

// PBXStatus reports every node.
func (en *Engine) PBXStatus() []NodeStatus {
	out := make([]NodeStatus, 0, len(en.nodes))
	for _, n := range en.nodes {
		out = append(out, NodeStatus{Name: n.Name, Kind: n.Driver.Kind(), Owner: n.owner.Load(), Status: n.Driver.Status()})
	}
	return out
}

// Ready reports whether at least one PBX node can take calls, and
// convoice is not draining (so a load balancer stops sending new calls).
func (en *Engine) Ready() bool {
	if en.draining.Load() {
		return false
	}
	for _, n := range en.nodes {
		if n.Driver.Status().Ready {
			return true
		}
	}
	return false
}

// placeConference picks a healthy node for a new conference: the one with
// the fewest live legs per unit of weight.
func (en *Engine) placeConference(ctx context.Context) (*Node, error) {
	var ready []*Node
	for _, n := range en.nodes {
		if n.Driver.Status().Ready {
			ready = append(ready, n)
		}
	}
	if len(ready) == 0 {
		return nil, core.Unavailable("the PBX is not reachable right now; no call was placed, try again shortly")
	}
	if len(ready) == 1 {
		return ready[0], nil
	}
	load, err := en.store.CountLiveLegs(ctx)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(ready, func(i, j int) bool {
		return float64(load[ready[i].Name])/float64(ready[i].Weight) < float64(load[ready[j].Name])/float64(ready[j].Weight)
	})
	return ready[0], nil
}

// Control values of the conference view (core.ConferenceView.Control).
const (
	ControlAvailable   = "available"
	ControlUnavailable = "unavailable"
)

// Control says whether convoice can control conf's calls now: available,
// or unavailable with why (its node's control link does not answer; the
// calls keep their last known state until it does, or until
// NodeLostAfter).
func (en *Engine) Control(conf *storage.Conference) (control, reason string) {
	node, err := en.nodeOf(conf)
	if err != nil {
		return ControlUnavailable, err.Error()
	}
	st := node.Driver.Status()
	if st.Ready {
		return ControlAvailable, ""
	}
	reason = "call control is unavailable: PBX node " + node.Name + " does not answer"
	if st.Detail != "" {
		reason += " (" + st.Detail + ")"
	}
	if !st.Since.IsZero() {
		reason += " since " + st.Since.UTC().Format(time.RFC3339)
	}
	return ControlUnavailable, reason + "; the calls keep their last known state"
}

// nodeOf returns the node a conference lives on.
func (en *Engine) nodeOf(conf *storage.Conference) (*Node, error) {
	if n, ok := en.byName[conf.Node]; ok {
		return n, nil
	}
	if len(en.nodes) == 1 && conf.Node == "" {
		return en.nodes[0], nil
	}
	return nil, core.Unavailable("the PBX node %q of this conference is not configured", conf.Node)
}

// pbxCtx bounds one PBX request made on behalf of a request; detached from
// the HTTP request so a client hanging up mid-dial cannot leave a leg half
// placed.
func pbxCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}
