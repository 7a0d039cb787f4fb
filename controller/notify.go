package controller

// The facade of issue 17: a person's own event stream, call history and
// CDR export, webhooks. Each lives in its part (userevents, history,
// webhooks); this file wires them and forwards the requests the api needs.

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoice/convoice/controller/history"
	"github.com/convoice/convoice/controller/webhooks"
)

// The names of issue 17's parts.
type (
	LegRecord        = history.LegRecord
	ConferenceRecord = history.ConferenceRecord
	HistoryPage      = history.Page
	WebhookInput     = webhooks.NewEndpoint
	WebhookEndpoint  = webhooks.Endpoint
	WebhookChange    = webhooks.Change
	WebhookBody      = webhooks.Body
)

// WebhookSignatureHeader carries a webhook delivery's signature.
const WebhookSignatureHeader = webhooks.SignatureHeader

// SignWebhook is the signature header value of body sent at t.
func SignWebhook(secret string, t time.Time, body []byte) string {
	return webhooks.Sign(secret, t, body)
}

// NotifyConfig tunes issue 17's parts; zero values take the defaults.
type NotifyConfig struct {
	// CDRRetention: conferences that ended longer ago are purged with
	// their legs (CONVOICE_CDR_RETENTION; default 400 days).
	CDRRetention time.Duration
	// WebhookAllowPrivate lets webhooks reach loopback, private and
	// link-local addresses (CONVOICE_WEBHOOK_ALLOW_PRIVATE).
	WebhookAllowPrivate bool
	// WebhookRetryBase and WebhookRetryMax bound the backoff between
	// attempts (10 s doubling up to 1 h); WebhookDisableAfter disables an
	// endpoint failing that long (24 h); WebhookPoll is how often due
	// deliveries are looked for (500 ms); WebhookTimeout bounds one POST.
	WebhookRetryBase, WebhookRetryMax, WebhookDisableAfter, WebhookPoll, WebhookTimeout time.Duration
	// Registerer gets the webhook metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// SetNotify configures call history and webhooks; call it before Run.
func (c *Controller) SetNotify(cfg NotifyConfig) {
	c.history = history.New(c.store, c.log, cfg.CDRRetention)
	c.webhooks = webhooks.New(c.store, webhooks.Config{AllowPrivate: cfg.WebhookAllowPrivate, RetryBase: cfg.WebhookRetryBase,
		RetryMax: cfg.WebhookRetryMax, DisableAfter: cfg.WebhookDisableAfter, Poll: cfg.WebhookPoll, Timeout: cfg.WebhookTimeout,
		Registerer: cfg.Registerer, Logger: c.log.With("part", "webhooks")})
}

// runNotify runs the retention purge and the webhook dispatcher until ctx
// is done.
func (c *Controller) runNotify(ctx context.Context) {
	go c.history.Run(ctx)
	go c.webhooks.Run(ctx)
}

func (c *Controller) notifyDefaults(lg *slog.Logger) {
	c.history = history.New(c.store, lg, 0)
	c.webhooks = webhooks.New(c.store, webhooks.Config{Logger: lg.With("part", "webhooks")})
}

// MyStream checks a may follow their own stream and gives its hub key.
func (c *Controller) MyStream(a Actor) (string, error) { return c.streams.Open(a) }

// MyEventsAfter reads a's own stream after seq after.
func (c *Controller) MyEventsAfter(ctx context.Context, a Actor, after int64, limit int) ([]Event, error) {
	return c.streams.After(ctx, a, after, limit)
}

// MyLastEventID is the newest id of a's own stream.
func (c *Controller) MyLastEventID(ctx context.Context, a Actor) (int64, error) {
	return c.streams.Last(ctx, a)
}

// LegRecord answers GET /api/v1/legs/{id} for a person (guestID "") or a
// guest.
func (c *Controller) LegRecord(ctx context.Context, a Actor, guestID, legID string) (LegRecord, error) {
	return c.history.Leg(ctx, a, guestID, legID)
}

// AudioHistory is a conversation's past conferences, newest first.
func (c *Controller) AudioHistory(ctx context.Context, a Actor, convID, cursor string, limit int) (HistoryPage, error) {
	return c.history.Conversation(ctx, a, convID, cursor, limit)
}

// ExportCDR hands every leg dialed in [from, to) to emit (admins only).
func (c *Controller) ExportCDR(ctx context.Context, a Actor, from, to time.Time, emit func(LegRecord) error) error {
	return c.history.Export(ctx, a, from, to, emit)
}

// PurgeHistory purges the call records past the retention as of now.
func (c *Controller) PurgeHistory(ctx context.Context, now time.Time) int {
	return c.history.Purge(ctx, now)
}

// CreateWebhook registers a webhook endpoint (admins only).
func (c *Controller) CreateWebhook(ctx context.Context, a Actor, in WebhookInput) (WebhookEndpoint, error) {
	return c.webhooks.Create(ctx, a, in)
}

// ListWebhooks lists the endpoints (admins only).
func (c *Controller) ListWebhooks(ctx context.Context, a Actor) ([]WebhookEndpoint, error) {
	return c.webhooks.List(ctx, a)
}

// GetWebhook shows one endpoint and its delivery log (admins only).
func (c *Controller) GetWebhook(ctx context.Context, a Actor, id string) (WebhookEndpoint, error) {
	return c.webhooks.Get(ctx, a, id)
}

// SetWebhookEnabled enables or disables an endpoint by hand (admins
// only); enabling retries what it is owed at once.
func (c *Controller) SetWebhookEnabled(ctx context.Context, a Actor, id string, ch WebhookChange) (WebhookEndpoint, error) {
	return c.webhooks.SetEnabled(ctx, a, id, ch)
}

// DeleteWebhook removes an endpoint (admins only).
func (c *Controller) DeleteWebhook(ctx context.Context, a Actor, id string) error {
	return c.webhooks.Delete(ctx, a, id)
}
