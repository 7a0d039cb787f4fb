// Package controller is convoice's behaviour behind one entry point: it
// wires the parts below (directory, conversations, audio, guests, the call
// engine, the audit log) and is all the api layer sees. It holds no
// behaviour of its own beyond the wiring and the replay of dial requests
// (idempotency.go); it knows no HTTP and writes no SQL. Every state change
// is stored (with its event in the conversation's log) in one transaction,
// and announced only after commit.
package controller

import (
	"context"
	"log/slog"
	"time"

	"github.com/convoice/convoice/controller/audio"
	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/conversations"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/directory"
	"github.com/convoice/convoice/controller/engine"
	"github.com/convoice/convoice/controller/guests"
	"github.com/convoice/convoice/controller/history"
	"github.com/convoice/convoice/controller/identity"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/controller/userevents"
	"github.com/convoice/convoice/controller/webhooks"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// Controller is convoice's behaviour. The requests of each part are its
// embedded parts' methods (JoinAudio is audio's, JoinAsGuest guests', …);
// the engine's and the audit log's are forwarded below, so that only what
// the api layer needs of them is on the Controller.
type Controller struct {
	*directory.Directory
	*conversations.Conversations
	*audio.Audio
	*guests.Guests

	engine  *engine.Engine
	audit   *audit.Log
	store   *storage.Store
	hub     *Hub
	numbers Numbers
	log     *slog.Logger

	idemAttempt, idemRetention time.Duration // idempotency.go
	confirmKey                 string        // confirm-to-join's key, for the web UI's words

	// issue 17 (notify.go)
	streams  *userevents.Streams
	history  *history.History
	webhooks *webhooks.Webhooks
	identity *identity.Identity // identity.go
	revs     *core.Revocations
}

// New wires a controller. The store's commits are published on hub.
func New(cfg Config, store *storage.Store, hub *Hub, nodes []*Node, metrics *Metrics) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IdempotencyAttempt <= 0 {
		cfg.IdempotencyAttempt = defaultIdempotencyAttempt
	}
	if cfg.IdempotencyRetention <= 0 {
		cfg.IdempotencyRetention = defaultIdempotencyRetention
	}
	numbers := policy.Numbers{Region: cfg.Region, Extensions: cfg.Extensions}
	trail := audit.New(store, cfg.Logger)
	eng := engine.New(cfg, store, trail, nodes, metrics)
	convs := conversations.New(store, eng)
	c := &Controller{
		Directory:     directory.New(store, numbers, trail),
		Conversations: convs,
		Audio:         audio.New(store, numbers, eng, convs, trail),
		Guests:        guests.New(store, cfg.Logger, numbers, eng, convs, trail),
		engine:        eng, audit: trail, store: store, hub: hub, numbers: numbers, log: cfg.Logger,
		idemAttempt: cfg.IdempotencyAttempt, idemRetention: cfg.IdempotencyRetention,
		confirmKey: cfg.Confirm.Key,
	}
	if c.confirmKey == "" {
		c.confirmKey = DefaultConfirmKey
	}
	c.streams = userevents.New(store)
	c.notifyDefaults(cfg.Logger)
	c.wireIdentity()
	store.OnCommit(hub.Publish)
	commits := eng.Metrics().Commit.WithLabelValues(store.Dialect())
	store.OnCommitTime(func(d time.Duration) { commits.Observe(d.Seconds()) })
	batches := eng.Metrics().ProgressBatch
	store.OnProgressBatch(func(n int) { batches.Observe(float64(n)) })
	return c
}

// ObserveEventToStream records how long an event took from its append to
// its write on a live event stream (the API's streams tell it).
func (c *Controller) ObserveEventToStream(d time.Duration) {
	c.engine.Metrics().EventToStream.Observe(d.Seconds())
}

// Store gives the store (for the API's readiness check).
func (c *Controller) Store() *storage.Store { return c.store }

// Hub gives the event hub (for the API's event streams).
func (c *Controller) Hub() *Hub { return c.hub }

// ConfirmKey is the key a called phone presses to join when
// confirm-to-join asks for one (CONVOICE_CONFIRM_KEY), for the words of
// the web UI.
func (c *Controller) ConfirmKey() string { return c.confirmKey }

// Numbers gives the number normaliser.
func (c *Controller) Numbers() Numbers { return c.numbers }

// Run drives every PBX node until ctx is done (engine.Engine.Run), and
// purges old idempotency keys, purges old call records and delivers
// webhooks meanwhile.
func (c *Controller) Run(ctx context.Context) error {
	go c.purgeIdempotency(ctx)
	c.runNotify(ctx)
	return c.engine.Run(ctx)
}

// Drain stops taking new dial requests and waits (up to ctx) for the ones
// in flight to finish (engine.Engine.Drain).
func (c *Controller) Drain(ctx context.Context) { c.engine.Drain(ctx) }

// Ready reports whether a PBX node can take calls and convoice is not
// draining.
func (c *Controller) Ready() bool { return c.engine.Ready() }

// Draining reports whether this replica is shutting down (readiness).
func (c *Controller) Draining() bool { return c.engine.Draining() }

// PBXStatus reports every node.
func (c *Controller) PBXStatus() []NodeStatus { return c.engine.PBXStatus() }

// Owner reports whether this replica holds the lease of the named node.
func (c *Controller) Owner(node string) bool { return c.engine.Owner(node) }

// HandlePBXEvent applies one driver event (engine/transitions.go).
func (c *Controller) HandlePBXEvent(ctx context.Context, node string, e pbx.Event) {
	c.engine.HandlePBXEvent(ctx, node, e)
}

// Resync reconciles the store with what the PBX node holds.
func (c *Controller) Resync(ctx context.Context, node string) { c.engine.Resync(ctx, node) }

// Audit records e in the audit log, outside any transaction (audit.Log.Add).
func (c *Controller) Audit(ctx context.Context, e AuditEntry) { c.audit.Add(ctx, e) }

// AuditTx records e in tx: it is kept only if tx commits.
func (c *Controller) AuditTx(ctx context.Context, tx *storage.Store, e AuditEntry) error {
	return c.audit.AddTx(ctx, tx, e)
}

// AuditAuthFailure records a failed authentication, throttled per remote
// address (audit.Log.AddAuthFailure).
func (c *Controller) AuditAuthFailure(ctx context.Context, remote, route, reason string) {
	c.audit.AddAuthFailure(ctx, remote, route, reason)
}

// AuditLog pages through the audit log, newest first (admins only).
func (c *Controller) AuditLog(ctx context.Context, a Actor, q AuditQuery) (AuditPage, error) {
	return c.audit.Read(ctx, a, q)
}

// ExportAudit hands every matching entry to emit, oldest first (admins
// only).
func (c *Controller) ExportAudit(ctx context.Context, a Actor, q AuditQuery, emit func(AuditRecord) error) error {
	return c.audit.Export(ctx, a, q, emit)
}
