// Package webhooks tells other systems what happens in convoice (issue
// 17): admins register HTTP(S) endpoints for event types of the stored
// log (leg.updated, invitation.updated, …), and every such event is POSTed
// to them as {"id","type","at","conversation_id","data"}, signed with the
// endpoint's secret in the Convoice-Signature header
// (t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">).
//
// Delivery is at least once and survives restarts: the delivery rows are
// written in the transaction of the event itself (storage's fan-out, the
// outbox), the dispatcher of any replica claims due rows under a lease,
// and retries back off exponentially with the next attempt's time stored
// in the row. The event id ("<conversation id>:<seq>") is the same on
// every attempt, so a receiver de-duplicates by it. An endpoint whose
// deliveries have all failed for DisableAfter (a day) is disabled and says
// why, until an admin enables it again (SetEnabled), which retries what it
// is still owed at once. Endpoints on loopback, private or link-local addresses are refused
// — at registration and again for the address actually dialed at each
// delivery, against DNS rebinding — unless AllowPrivate.
package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// Types are the event types an endpoint may subscribe to: those of the
// conversations' stored log.
var Types = []string{
	"conversation.created", "participant.joined", "participant.left", "presenter.changed", "message.created",
	"audio.started", "audio.ended", "leg.updated", "invitation.updated",
	"guest.waiting", "guest.updated", "join_link.created", "join_link.revoked",
}

// SignatureHeader carries the delivery's signature.
const SignatureHeader = "Convoice-Signature"

// Config tunes the webhooks; zero values take the defaults.
type Config struct {
	// AllowPrivate lets endpoints be on loopback, private and link-local
	// addresses (CONVOICE_WEBHOOK_ALLOW_PRIVATE).
	AllowPrivate bool
	// RetryBase is the wait after a first failure, doubled after each
	// further one up to RetryMax (defaults 10 s and 1 h).
	RetryBase, RetryMax time.Duration
	// DisableAfter: an endpoint whose deliveries all failed for this long
	// is disabled (default 24 h).
	DisableAfter time.Duration
	// Poll is how often the dispatcher looks for due deliveries (default
	// 500 ms).
	Poll time.Duration
	// Timeout bounds one POST (default 10 s); the lease on a claimed row
	// is a few times longer, so no other replica takes it meanwhile.
	Timeout time.Duration
	// KeepDelivered is how long delivered rows stay in the delivery log
	// (default 7 days).
	KeepDelivered time.Duration
	Registerer    prometheus.Registerer
	Logger        *slog.Logger
}

// Webhooks manages the endpoints and delivers to them.
type Webhooks struct {
	cfg     Config
	store   *storage.Store
	log     *slog.Logger
	client  *http.Client
	metrics metrics
}

type metrics struct {
	deliveries *prometheus.CounterVec
	depth      prometheus.Gauge
	oldest     prometheus.Gauge
}

// New makes the webhooks over store.
func New(store *storage.Store, cfg Config) *Webhooks {
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 10 * time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Hour
	}
	if cfg.DisableAfter <= 0 {
		cfg.DisableAfter = 24 * time.Hour
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.KeepDelivered <= 0 {
		cfg.KeepDelivered = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Webhooks{cfg: cfg, store: store, log: cfg.Logger}
	w.metrics = metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "convoice", Name: "webhook_deliveries_total",
			Help: "Webhook delivery attempts, by result (delivered, failed, refused: the address is not allowed, lost: the lease ran out)."}, []string{"result"}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "convoice", Name: "webhook_queue_depth",
			Help: "Webhook deliveries not yet delivered, of enabled endpoints."}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "convoice", Name: "webhook_oldest_undelivered_seconds",
			Help: "Age of the oldest webhook delivery not yet delivered (0: none)."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(w.metrics.deliveries, w.metrics.depth, w.metrics.oldest)
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout, Control: w.checkDial}
	w.client = &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, ForceAttemptHTTP2: true,
			MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: cfg.Timeout},
		// A redirect is an answer (3xx: not delivered), never followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return w
}

// NewEndpoint is what an admin registers.
type NewEndpoint struct {
	URL    string   `json:"url"`
	Secret string   `json:"secret"`
	Events []string `json:"events"`
}

// Endpoint is an endpoint as the API shows it (never its secret).
type Endpoint struct {
	ID             string     `json:"id"`
	URL            string     `json:"url"`
	Events         []string   `json:"events"`
	CreatedAt      time.Time  `json:"created_at"`
	Enabled        bool       `json:"enabled"`
	DisabledAt     *time.Time `json:"disabled_at,omitempty"`
	DisabledReason string     `json:"disabled_reason,omitempty"`
	FailingSince   *time.Time `json:"failing_since,omitempty"`
	LastAttemptAt  *time.Time `json:"last_attempt_at,omitempty"`
	LastSuccessAt  *time.Time `json:"last_success_at,omitempty"`
	LastStatus     int        `json:"last_status"`
	LastError      string     `json:"last_error,omitempty"`
	// Deliveries is the endpoint's delivery log, newest first (GET of one
	// endpoint only).
	Deliveries []Delivery `json:"deliveries,omitempty"`
}

// Delivery is one entry of an endpoint's delivery log.
type Delivery struct {
	EventID       string     `json:"event_id"`
	Type          string     `json:"type"`
	At            time.Time  `json:"at"`
	Attempts      int        `json:"attempts"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	LastStatus    int        `json:"last_status"`
	LastError     string     `json:"last_error,omitempty"`
}

// EventID is the id a delivery carries: the same on every attempt and to
// every endpoint.
func EventID(convID string, seq int64) string { return convID + ":" + strconv.FormatInt(seq, 10) }

func viewOf(e *storage.WebhookEndpoint, types []string) Endpoint {
	if types == nil {
		types = []string{}
	}
	return Endpoint{ID: e.ID, URL: e.URL, Events: types, CreatedAt: e.CreatedAt.UTC(), Enabled: e.DisabledAt == nil,
		DisabledAt: e.DisabledAt, DisabledReason: e.DisabledReason, FailingSince: e.FailingSince,
		LastAttemptAt: e.LastAttemptAt, LastSuccessAt: e.LastSuccessAt, LastStatus: e.LastStatus, LastError: e.LastError}
}

const (
	maxURL       = 2000
	minSecret    = 16
	maxSecret    = 500
	logEntries   = 50
	claimBatch   = 32
	parallelPost = 8
)

// Create registers an endpoint (admins only).
func (w *Webhooks) Create(ctx context.Context, a core.Actor, in NewEndpoint) (Endpoint, error) {
	if err := core.RequireAdmin(a); err != nil {
		return Endpoint{}, err
	}
	u, err := w.checkURL(ctx, in.URL)
	if err != nil {
		return Endpoint{}, err
	}
	if len(in.Secret) < minSecret || len(in.Secret) > maxSecret {
		return Endpoint{}, core.Invalid("secret", "secret: %d to %d characters (random, shared with the receiver only)", minSecret, maxSecret)
	}
	types := core.Dedupe(in.Events)
	if len(types) == 0 {
		return Endpoint{}, core.Invalid("events", "events: name at least one of %s", strings.Join(Types, ", "))
	}
	for _, t := range types {
		if !slices.Contains(Types, t) {
			return Endpoint{}, core.Invalid("events", "events: %q is not an event type; the types are %s", t, strings.Join(Types, ", "))
		}
	}
	slices.Sort(types)
	e := &storage.WebhookEndpoint{ID: core.NewID(), URL: u.String(), Secret: in.Secret, CreatedBy: a.Name,
		CreatedAt: time.Now().UTC()}
	if err := w.store.CreateWebhook(ctx, e, types); err != nil {
		return Endpoint{}, err
	}
	return viewOf(e, types), nil
}

// List shows every endpoint (admins only).
func (w *Webhooks) List(ctx context.Context, a core.Actor) ([]Endpoint, error) {
	if err := core.RequireAdmin(a); err != nil {
		return nil, err
	}
	es, types, err := w.store.Webhooks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Endpoint, 0, len(es))
	for i := range es {
		out = append(out, viewOf(&es[i], types[es[i].ID]))
	}
	return out, nil
}

// Get shows one endpoint with its newest deliveries (admins only).
func (w *Webhooks) Get(ctx context.Context, a core.Actor, id string) (Endpoint, error) {
	if err := core.RequireAdmin(a); err != nil {
		return Endpoint{}, err
	}
	e, types, err := w.store.GetWebhook(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return Endpoint{}, core.NotFound("webhook")
	}
	if err != nil {
		return Endpoint{}, err
	}
	v := viewOf(e, types)
	ds, err := w.store.Deliveries(ctx, id, logEntries)
	if err != nil {
		return Endpoint{}, err
	}
	v.Deliveries = make([]Delivery, 0, len(ds))
	for _, d := range ds {
		dv := Delivery{EventID: EventID(d.ConversationID, d.Seq), Type: d.Type, At: d.CreatedAt.UTC(), Attempts: d.Attempts,
			DeliveredAt: d.DeliveredAt, LastAttemptAt: d.LastAttemptAt, LastStatus: d.LastStatus, LastError: d.LastError}
		if d.DeliveredAt == nil {
			next := d.NextAttemptAt.UTC()
			dv.NextAttemptAt = &next
		}
		v.Deliveries = append(v.Deliveries, dv)
	}
	return v, nil
}

// Delete removes an endpoint and what it was still owed (admins only).
func (w *Webhooks) Delete(ctx context.Context, a core.Actor, id string) error {
	if err := core.RequireAdmin(a); err != nil {
		return err
	}
	if err := w.store.DeleteWebhook(ctx, id); errors.Is(err, storage.ErrNotFound) {
		return core.NotFound("webhook")
	} else if err != nil {
		return err
	}
	return nil
}

// Change is what an admin may change of an endpoint (PATCH): only
// whether it is enabled, for now.
type Change struct {
	Enabled *bool `json:"enabled"`
}

// SetEnabled switches an endpoint on or off by hand (admins only) and
// shows it as Get does. Enabling one that was disabled (for failing, or by
// hand) retries what it is still owed at once (storage's
// SetWebhookEnabled says how); disabling holds its deliveries and queues
// none for new events until it is enabled again. Asking for the state it
// is in changes nothing.
func (w *Webhooks) SetEnabled(ctx context.Context, a core.Actor, id string, ch Change) (Endpoint, error) {
	if err := core.RequireAdmin(a); err != nil {
		return Endpoint{}, err
	}
	if ch.Enabled == nil {
		return Endpoint{}, core.Invalid("enabled", "enabled: true (deliver again, retrying what is owed now) or false (hold the deliveries)")
	}
	on := *ch.Enabled
	by := a.Name
	if by == "" {
		by = "an admin"
	}
	changed, err := w.store.SetWebhookEnabled(ctx, id, on, time.Now(), "disabled by "+by)
	if errors.Is(err, storage.ErrNotFound) {
		return Endpoint{}, core.NotFound("webhook")
	}
	if err != nil {
		return Endpoint{}, err
	}
	if changed {
		w.log.Info("webhook endpoint switched by hand", "endpoint", id, "enabled", on, "by", by)
	}
	return w.Get(ctx, a, id)
}

// checkURL accepts absolute http(s) URLs whose host does not resolve to a
// refused address.
func (w *Webhooks) checkURL(ctx context.Context, raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil || len(raw) > maxURL || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Opaque != "" {
		return nil, core.Invalid("url", "url: an absolute http:// or https:// URL of at most %d characters", maxURL)
	}
	if u.User != nil {
		return nil, core.Invalid("url", "url: no user or password in the URL; the secret signs the deliveries")
	}
	u.Fragment = ""
	if w.cfg.AllowPrivate {
		return u, nil
	}
	host := u.Hostname()
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupIPAddr(rctx, host)
		if err != nil || len(addrs) == 0 {
			return nil, core.Invalid("url", "url: %s does not resolve", host)
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	for _, ip := range ips {
		if refused(ip) {
			return nil, core.Forbidden("webhook_address_not_allowed",
				"url: %s is a loopback, private or link-local address (%s); CONVOICE_WEBHOOK_ALLOW_PRIVATE=true allows it", host, ip)
		}
	}
	return u, nil
}

// cgnat is the shared address space of carrier-grade NAT (RFC 6598).
var cgnat = &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}

// refused reports whether ip is one webhooks may not reach by default.
func refused(ip net.IP) bool {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || cgnat.Contains(ip) ||
		(len(ip) == net.IPv4len && ip[0] == 0)
}

// errRefusedAddress marks a delivery refused for the address it reached.
var errRefusedAddress = errors.New("address not allowed")

// checkDial is the dialer's last word on every connection, after DNS: the
// address actually dialed must be allowed (DNS rebinding cannot slip a
// private address in after the check at registration).
func (w *Webhooks) checkDial(network, address string, _ syscall.RawConn) error {
	if w.cfg.AllowPrivate {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || refused(ip) {
		return fmt.Errorf("%w: %s is loopback, private or link-local", errRefusedAddress, host)
	}
	return nil
}

// Run delivers until ctx is done: every Poll it claims due deliveries and
// posts them, and now and then it updates the queue metrics and purges
// old delivered rows. Every replica runs it; the leases keep them apart.
func (w *Webhooks) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Poll)
	defer t.Stop()
	var lastGauge, lastPurge time.Time
	for {
		for w.dispatch(ctx) == claimBatch && ctx.Err() == nil {
		}
		now := time.Now()
		if now.Sub(lastGauge) >= 2*time.Second {
			lastGauge = now
			w.updateGauges(ctx)
		}
		if now.Sub(lastPurge) >= time.Hour {
			lastPurge = now
			if _, err := w.store.PurgeDeliveries(storage.LowPriority(ctx), now.Add(-w.cfg.KeepDelivered)); err != nil && ctx.Err() == nil {
				w.log.Warn("purging the webhook delivery log failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Webhooks) updateGauges(ctx context.Context) {
	n, oldest, err := w.store.DeliveryBacklog(ctx)
	if err != nil {
		return
	}
	w.metrics.depth.Set(float64(n))
	if oldest.IsZero() {
		w.metrics.oldest.Set(0)
	} else {
		w.metrics.oldest.Set(time.Since(oldest).Seconds())
	}
}

// dispatch claims one batch of due deliveries, posts them and records the
// outcomes; it returns how many it claimed.
func (w *Webhooks) dispatch(ctx context.Context) int {
	now := time.Now().UTC()
	token := core.NewID()
	lease := now.Add(2*w.cfg.Timeout + 2*time.Second)
	if due, err := w.store.DueDeliveries(ctx, now); err != nil || !due {
		return 0
	}
	ds, err := w.store.ClaimDeliveries(storage.LowPriority(ctx), now, lease, token, claimBatch)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("claiming webhook deliveries failed", "err", err)
		}
		return 0
	}
	sem := make(chan struct{}, parallelPost)
	var wg sync.WaitGroup
	for i := range ds {
		d := &ds[i]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w.deliver(ctx, d, token)
		}()
	}
	wg.Wait()
	return len(ds)
}

// Body is what a delivery posts.
type Body struct {
	ID             string          `json:"id"`
	Type           string          `json:"type"`
	At             time.Time       `json:"at"`
	ConversationID string          `json:"conversation_id"`
	Data           json.RawMessage `json:"data"`
}

// Sign is the Convoice-Signature header of body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// deliver posts one claimed delivery and records the outcome.
func (w *Webhooks) deliver(ctx context.Context, d *storage.ClaimedDelivery, token string) {
	body, err := json.Marshal(Body{ID: EventID(d.ConversationID, d.Seq), Type: d.Type, At: d.CreatedAt,
		ConversationID: d.ConversationID, Data: json.RawMessage(d.Data)})
	if err != nil {
		w.log.Error("webhook body", "err", err)
		return
	}
	status, perr := w.post(ctx, d.URL, d.Secret, body)
	if ctx.Err() != nil {
		return // shutting down: the lease runs out and another attempt follows
	}
	now := time.Now().UTC()
	o := storage.DeliveryOutcome{OK: perr == nil, Status: status, At: now, DisableAfter: w.cfg.DisableAfter}
	result := "delivered"
	if perr != nil {
		o.Error = perr.Error()
		o.Next = now.Add(w.backoff(d.Attempts))
		result = "failed"
		if errors.Is(perr, errRefusedAddress) {
			result = "refused"
		}
	}
	held, disabled, err := w.store.FinishDelivery(context.WithoutCancel(ctx), d, token, o)
	if err != nil {
		w.log.Warn("recording a webhook delivery failed; it will be retried", "err", err)
		return
	}
	if !held {
		result = "lost"
	}
	w.metrics.deliveries.WithLabelValues(result).Inc()
	if disabled {
		w.log.Warn("webhook endpoint disabled: its deliveries have failed for too long", "endpoint", d.EndpointID,
			"for", w.cfg.DisableAfter, "last_error", o.Error)
	}
}

// post sends one body; nil only for a 2xx answer.
func (w *Webhooks) post(ctx context.Context, target, secret string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "convoice-webhooks/1")
	req.Header.Set(SignatureHeader, Sign(secret, time.Now(), body))
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the endpoint already
		}
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// backoff is the wait before the next attempt after the attempts-th
// failed: RetryBase doubled per failure up to RetryMax, with up to 10 %
// jitter so that many deliveries failing together do not retry together.
func (w *Webhooks) backoff(attempts int) time.Duration {
	d := w.cfg.RetryBase
	for i := 1; i < attempts && d < w.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, w.cfg.RetryMax)
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}
