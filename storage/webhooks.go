package storage

// Webhook endpoints and their outbox (issue 17). A delivery row is written
// in the transaction of the event it carries (fanOut), one per endpoint
// subscribed to the event's type; dispatchers on every replica claim due
// rows with a lease (FOR UPDATE SKIP LOCKED on PostgreSQL, the single
// writer on SQLite), post them, and record the outcome only while they
// still hold the lease. The rows stay after delivery as the endpoint's
// delivery log until they are purged.

import (
	"context"
	"database/sql"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
)

// WebhookEndpoint is a URL an admin registered for some event types.
type WebhookEndpoint struct {
	ID  string `gorm:"primaryKey;size:36"`
	URL string `gorm:"size:2000;not null"`
	// Secret signs the deliveries (HMAC-SHA256): it has to be kept as
	// given, unlike tokens, which are kept only as hashes.
	Secret    string `gorm:"size:500;not null"`
	CreatedBy string `gorm:"size:200;not null;default:''"`
	CreatedAt time.Time
	// FailingSince is the first failure after the last success (nil while
	// deliveries succeed); an endpoint failing long enough is disabled.
	FailingSince   *time.Time
	DisabledAt     *time.Time
	DisabledReason string `gorm:"size:500;not null;default:''"`
	LastAttemptAt  *time.Time
	LastSuccessAt  *time.Time
	LastStatus     int    `gorm:"not null;default:0"`
	LastError      string `gorm:"size:500;not null;default:''"`
}

// WebhookSubscription says an endpoint wants events of Type.
type WebhookSubscription struct {
	EndpointID string `gorm:"primaryKey;size:36"`
	Type       string `gorm:"primaryKey;size:64;index"`
}

// WebhookDelivery is one event owed to one endpoint: the outbox row, then
// its log entry.
type WebhookDelivery struct {
	ID             int64     `gorm:"primaryKey;autoIncrement"`
	EndpointID     string    `gorm:"size:36;not null;uniqueIndex:ux_delivery_event,priority:1;index:ix_delivery_endpoint,priority:1"`
	ConversationID string    `gorm:"size:36;not null;uniqueIndex:ux_delivery_event,priority:2"`
	Seq            int64     `gorm:"not null;uniqueIndex:ux_delivery_event,priority:3"`
	Type           string    `gorm:"size:64;not null"`
	CreatedAt      time.Time `gorm:"index:ix_delivery_endpoint,priority:2"`
	Attempts       int       `gorm:"not null;default:0"`
	NextAttemptAt  time.Time `gorm:"not null;index"`
	LeaseUntil     *time.Time
	LeaseToken     string     `gorm:"size:36;not null;default:''"`
	DeliveredAt    *time.Time `gorm:"index"`
	LastAttemptAt  *time.Time
	LastStatus     int    `gorm:"not null;default:0"`
	LastError      string `gorm:"size:500;not null;default:''"`
}

// enqueueDeliveries writes, for each of evs, a delivery to every enabled
// endpoint subscribed to its type (SQLite; PostgreSQL's is part of
// finishPG). One cheap read first: with no enabled endpoint at all (the
// usual case) nothing else runs.
func (s *Store) enqueueDeliveries(ctx context.Context, evs []Event) error {
	row, err := s.queryRowRaw(ctx, `SELECT COUNT(*) FROM webhook_endpoints WHERE disabled_at IS NULL`)
	if err != nil {
		return err
	}
	var n int
	if err := row.Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	for _, ev := range evs {
		if ev.ForUser != "" {
			continue
		}
		if _, err := s.execRaw(ctx, `INSERT INTO webhook_deliveries (endpoint_id, conversation_id, seq, type, created_at, attempts, next_attempt_at, lease_token, last_status, last_error)
 SELECT w.id, ?, ?, ?, ?, 0, ?, '', 0, '' FROM webhook_endpoints w JOIN webhook_subscriptions ws ON ws.endpoint_id = w.id
 WHERE ws.type = ? AND w.disabled_at IS NULL`,
			ev.ConversationID, ev.Seq, ev.Type, ev.CreatedAt, ev.CreatedAt, ev.Type); err != nil {
			return err
		}
	}
	return nil
}

// CreateWebhook inserts an endpoint with its subscriptions.
func (s *Store) CreateWebhook(ctx context.Context, w *WebhookEndpoint, types []string) error {
	return s.InTx(ctx, func(tx *Store) error {
		if err := tx.q(ctx).Create(w).Error; err != nil {
			return notFound(err)
		}
		subs := make([]WebhookSubscription, 0, len(types))
		for _, t := range types {
			subs = append(subs, WebhookSubscription{EndpointID: w.ID, Type: t})
		}
		return notFound(tx.q(ctx).Create(&subs).Error)
	})
}

// Webhooks lists every endpoint, oldest first, with its types.
func (s *Store) Webhooks(ctx context.Context) ([]WebhookEndpoint, map[string][]string, error) {
	var ws []WebhookEndpoint
	if err := s.q(ctx).Order("created_at, id").Find(&ws).Error; err != nil {
		return nil, nil, err
	}
	var subs []WebhookSubscription
	if err := s.q(ctx).Order("endpoint_id, type").Find(&subs).Error; err != nil {
		return nil, nil, err
	}
	types := map[string][]string{}
	for _, sub := range subs {
		types[sub.EndpointID] = append(types[sub.EndpointID], sub.Type)
	}
	return ws, types, nil
}

// GetWebhook loads one endpoint and its types.
func (s *Store) GetWebhook(ctx context.Context, id string) (*WebhookEndpoint, []string, error) {
	var w WebhookEndpoint
	if err := s.q(ctx).First(&w, "id = ?", id).Error; err != nil {
		return nil, nil, notFound(err)
	}
	var types []string
	err := s.q(ctx).Model(&WebhookSubscription{}).Where("endpoint_id = ?", id).Order("type").Pluck("type", &types).Error
	return &w, types, err
}

// DeleteWebhook removes an endpoint, its subscriptions and its deliveries;
// ErrNotFound when there is none.
func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	return s.InTx(ctx, func(tx *Store) error {
		res := tx.q(ctx).Where("id = ?", id).Delete(&WebhookEndpoint{})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		if err := tx.q(ctx).Where("endpoint_id = ?", id).Delete(&WebhookSubscription{}).Error; err != nil {
			return err
		}
		return tx.q(ctx).Where("endpoint_id = ?", id).Delete(&WebhookDelivery{}).Error
	})
}

// SetWebhookEnabled switches an endpoint on or off by hand; ErrNotFound
// when there is none, changed false when it already was so (nothing is
// touched then: a disabled endpoint keeps its first reason and time).
//
// Disabling holds its deliveries as being disabled for failing does:
// nothing undelivered is claimed, and no delivery is written for events
// that happen meanwhile. Enabling clears the disabled and failing state
// and makes every undelivered delivery due at now with its attempts
// counted from zero, so the dispatcher retries them at once and, should
// they fail again, backs off from RetryBase and disables the endpoint only
// after a further DisableAfter of failures. Each delivery keeps its last
// status and error until the next attempt. Events of the time it was
// disabled are not delivered: they never were queued for it.
func (s *Store) SetWebhookEnabled(ctx context.Context, id string, enabled bool, now time.Time, reason string) (changed bool, err error) {
	now = now.UTC()
	err = s.InTx(ctx, func(tx *Store) error {
		var res sql.Result
		var err error
		if enabled {
			res, err = tx.execRaw(ctx, `UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = '', failing_since = NULL
 WHERE id = ? AND disabled_at IS NOT NULL`, id)
		} else {
			res, err = tx.execRaw(ctx, `UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ?
 WHERE id = ? AND disabled_at IS NULL`, now, truncate(reason, 500), id)
		}
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if changed = n == 1; !changed {
			row, err := tx.queryRowRaw(ctx, `SELECT 1 FROM webhook_endpoints WHERE id = ?`, id)
			if err != nil {
				return err
			}
			var one int
			return rowErr(row.Scan(&one))
		}
		if !enabled {
			return nil
		}
		_, err = tx.execRaw(ctx, `UPDATE webhook_deliveries SET next_attempt_at = ?, attempts = 0
 WHERE endpoint_id = ? AND delivered_at IS NULL`, now, id)
		return err
	})
	return changed, err
}

// DueDeliveries reports whether any delivery of an enabled endpoint is due
// at now and not leased: a plain read, so an idle dispatcher costs no
// write transaction (the claim that follows decides under its lock).
func (s *Store) DueDeliveries(ctx context.Context, now time.Time) (bool, error) {
	row, err := s.queryRowRaw(ctx, `SELECT 1 FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
 WHERE d.delivered_at IS NULL AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)
 AND w.disabled_at IS NULL LIMIT 1`, now, now)
	if err != nil {
		return false, err
	}
	var one int
	if err := rowErr(row.Scan(&one)); err == ErrNotFound {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, nil
}

// ClaimedDelivery is a delivery a dispatcher holds the lease of, with the
// event it carries and where it goes.
type ClaimedDelivery struct {
	WebhookDelivery
	URL, Secret string
	Data        string // the event's payload as in the log
}

// ClaimDeliveries leases up to limit due deliveries of enabled endpoints
// until leaseUntil under token, counting the attempt. Rows leased by
// another dispatcher are passed over (SKIP LOCKED) and come back when
// their lease runs out. Runs in its own transaction.
func (s *Store) ClaimDeliveries(ctx context.Context, now, leaseUntil time.Time, token string, limit int) ([]ClaimedDelivery, error) {
	lock := ""
	if s.dialect == "postgres" {
		lock = " FOR UPDATE OF d SKIP LOCKED"
	}
	var ids []int64
	err := s.InTx(ctx, func(tx *Store) error {
		rows, err := tx.queryRaw(ctx, `SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
 WHERE d.delivered_at IS NULL AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)
 AND w.disabled_at IS NULL ORDER BY d.next_attempt_at, d.id LIMIT ?`+lock, now, now, limit)
		if err != nil {
			return err
		}
		ids = ids[:0]
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		return tx.q(ctx).Model(&WebhookDelivery{}).Where("id IN ?", ids).
			Updates(map[string]any{"lease_until": leaseUntil, "lease_token": token, "attempts": gorm.Expr("attempts + 1")}).Error
	})
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	rows, err := s.q(ctx).Raw(`SELECT d.*, w.url, w.secret, e.data FROM webhook_deliveries d
 JOIN webhook_endpoints w ON w.id = d.endpoint_id
 JOIN events e ON e.conversation_id = d.conversation_id AND e.seq = d.seq
 WHERE d.id IN ? AND d.lease_token = ? ORDER BY d.id`, ids, token).Rows()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ClaimedDelivery
	for rows.Next() {
		var c ClaimedDelivery
		if err := s.q(ctx).ScanRows(rows, &c); err != nil {
			return nil, err
		}
		c.CreatedAt = c.CreatedAt.UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// DeliveryOutcome is what one attempt came to.
type DeliveryOutcome struct {
	OK     bool
	Status int    // the HTTP status (0: none)
	Error  string // why it failed
	At     time.Time
	// Next is when to try again after a failure.
	Next time.Time
	// DisableAfter: an endpoint failing for this long is disabled.
	DisableAfter time.Duration
}

// FinishDelivery records an attempt of a claimed delivery, and the
// endpoint's last status, if the lease under token is still held: false
// when it was lost (another dispatcher has the row by now). It reports
// whether the endpoint was disabled by this failure.
func (s *Store) FinishDelivery(ctx context.Context, d *ClaimedDelivery, token string, o DeliveryOutcome) (held, disabled bool, err error) {
	errText := truncate(o.Error, 500)
	err = s.InTx(ctx, func(tx *Store) error {
		upd := map[string]any{"lease_until": nil, "lease_token": "", "last_attempt_at": o.At, "last_status": o.Status, "last_error": errText}
		if o.OK {
			upd["delivered_at"] = o.At
		} else {
			upd["next_attempt_at"] = o.Next
		}
		res := tx.q(ctx).Model(&WebhookDelivery{}).Where("id = ? AND lease_token = ?", d.ID, token).Updates(upd)
		if res.Error != nil {
			return res.Error
		}
		held = res.RowsAffected == 1
		if !held {
			return nil
		}
		var w WebhookEndpoint
		if err := tx.q(ctx).First(&w, "id = ?", d.EndpointID).Error; err != nil {
			return notFound(err)
		}
		eu := map[string]any{"last_attempt_at": o.At, "last_status": o.Status, "last_error": errText}
		if o.OK {
			eu["last_success_at"] = o.At
			eu["failing_since"] = nil
		} else {
			since := o.At
			if w.FailingSince != nil {
				since = *w.FailingSince
			} else {
				eu["failing_since"] = o.At
			}
			if w.DisabledAt == nil && o.DisableAfter > 0 && o.At.Sub(since) >= o.DisableAfter {
				eu["disabled_at"] = o.At
				eu["disabled_reason"] = "every delivery failed since " + since.UTC().Format(time.RFC3339) + "; last: " + errText
				disabled = true
			}
		}
		return tx.q(ctx).Model(&WebhookEndpoint{}).Where("id = ?", w.ID).Updates(eu).Error
	})
	return held, disabled, err
}

// Deliveries lists an endpoint's newest deliveries (its log), newest first.
func (s *Store) Deliveries(ctx context.Context, endpointID string, limit int) ([]WebhookDelivery, error) {
	var ds []WebhookDelivery
	err := s.q(ctx).Where("endpoint_id = ?", endpointID).Order("created_at DESC, id DESC").Limit(limit).Find(&ds).Error
	return ds, err
}

// DeliveryBacklog counts the undelivered deliveries of enabled endpoints
// and gives the creation time of the oldest (zero when none).
func (s *Store) DeliveryBacklog(ctx context.Context) (int64, time.Time, error) {
	row, err := s.queryRowRaw(ctx, `SELECT COUNT(*) FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
 WHERE d.delivered_at IS NULL AND w.disabled_at IS NULL`)
	if err != nil {
		return 0, time.Time{}, err
	}
	var n int64
	if err := row.Scan(&n); err != nil || n == 0 {
		return 0, time.Time{}, err
	}
	row, err = s.queryRowRaw(ctx, `SELECT d.created_at FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
 WHERE d.delivered_at IS NULL AND w.disabled_at IS NULL ORDER BY d.created_at LIMIT 1`)
	if err != nil {
		return 0, time.Time{}, err
	}
	var oldest time.Time
	if err := rowErr(row.Scan(&oldest)); err != nil && err != ErrNotFound {
		return 0, time.Time{}, err
	}
	return n, oldest.UTC(), nil
}

// PurgeDeliveries forgets delivered deliveries older than t.
func (s *Store) PurgeDeliveries(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := s.InTx(ctx, func(tx *Store) error {
		res := tx.q(ctx).Where("delivered_at IS NOT NULL AND delivered_at < ?", t).Delete(&WebhookDelivery{})
		n = res.RowsAffected
		return res.Error
	})
	return n, err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
