package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// Answer is a stored HTTP-level answer (status and JSON body) to a dial
// request, replayed for a repeated Idempotency-Key.
type Answer struct {
	Status int
	Body   []byte
}

// maxIdempotencyKey bounds the header.
const maxIdempotencyKey = 200

// Default bounds of the idempotency keys (engine.Config documents them).
const (
	defaultIdempotencyAttempt   = 2 * time.Minute
	defaultIdempotencyRetention = 24 * time.Hour
	// idempotencyWait bounds how long a repeat waits for a first attempt
	// that is still running before it answers 409 idempotency_in_progress.
	idempotencyWait = 30 * time.Second
)

// Idempotent runs do at most once per (scope, key): the first call reserves
// the key in the database (so it holds across replicas and restarts), runs
// do and stores its answer; a repeat returns the stored answer, waiting for
// the first to finish if it is still running. A key reused with a different
// request is a 409 (`idempotency_key_reused`). Answers that are errors the
// client should retry (5xx) are not kept. A reservation that has had no
// answer for IdempotencyAttempt belongs to an attempt that died half-way
// (the process was killed between the reservation and the answer): the
// next request with that key takes it over and runs do. Keys are kept for
// IdempotencyRetention (purgeIdempotency).
func (c *Controller) Idempotent(ctx context.Context, scope, key string, request []byte, do func() Answer) (Answer, error) {
	if key == "" {
		return do(), nil
	}
	if len(key) > maxIdempotencyKey {
		return Answer{}, core.Invalid("Idempotency-Key", "Idempotency-Key: at most %d characters", maxIdempotencyKey)
	}
	h := sha256.Sum256(request)
	reqHash := hex.EncodeToString(h[:])
	rec := &storage.IdempotencyRecord{Scope: scope, Key: key, RequestHash: reqHash, Status: 0, Body: "", CreatedAt: time.Now().UTC()}
	err := c.store.InTx(ctx, func(tx *storage.Store) error { return tx.PutIdempotency(ctx, rec) })
	if err == nil {
		return c.runIdempotent(ctx, scope, key, do), nil
	}
	if !errors.Is(err, storage.ErrConflict) {
		return Answer{}, err
	}
	// Someone has the key: wait for their answer.
	deadline := time.Now().Add(idempotencyWait)
	for {
		got, err := c.store.GetIdempotency(ctx, scope, key)
		if errors.Is(err, storage.ErrNotFound) {
			// The first attempt failed with a retryable error: try again.
			return c.Idempotent(ctx, scope, key, request, do)
		}
		if err != nil {
			return Answer{}, err
		}
		if got.RequestHash != reqHash {
			return Answer{}, core.Conflict("idempotency_key_reused", "this Idempotency-Key was used for a different request")
		}
		if got.Status != 0 {
			return Answer{Status: got.Status, Body: []byte(got.Body)}, nil
		}
		now := time.Now().UTC()
		if now.Sub(got.CreatedAt) >= c.idemAttempt {
			var mine bool
			err := c.store.InTx(ctx, func(tx *storage.Store) (err error) {
				mine, err = tx.ReclaimIdempotency(ctx, scope, key, reqHash, now.Add(-c.idemAttempt), now)
				return err
			})
			if err != nil {
				return Answer{}, err
			}
			if mine {
				c.log.Warn("idempotency key taken over from an attempt that never answered", "scope", scope, "reserved_at", got.CreatedAt)
				return c.runIdempotent(ctx, scope, key, do), nil
			}
			continue // another request took it over: wait for its answer
		}
		if now.After(deadline) {
			return Answer{}, core.Conflict("idempotency_in_progress", "a request with this Idempotency-Key is still being processed")
		}
		select {
		case <-ctx.Done():
			return Answer{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// runIdempotent runs do for the reservation this caller holds and keeps
// its answer (or gives the key back when the answer says "retry").
func (c *Controller) runIdempotent(ctx context.Context, scope, key string, do func() Answer) Answer {
	ans := do()
	if ans.Status >= 500 {
		_ = c.store.DeleteIdempotency(context.WithoutCancel(ctx), scope, key)
		return ans
	}
	if err := c.store.InTx(ctx, func(tx *storage.Store) error {
		return tx.FinishIdempotency(ctx, scope, key, ans.Status, string(ans.Body))
	}); err != nil {
		c.log.Error("storing idempotent answer failed", "err", err)
	}
	return ans
}

// purgeIdempotency forgets keys older than the retention, now and then
// every hour (or every retention/4 when that is shorter), until ctx ends.
// Every replica runs it; the deletes are the same.
func (c *Controller) purgeIdempotency(ctx context.Context) {
	every := min(time.Hour, c.idemRetention/4)
	for {
		err := c.store.InTx(ctx, func(tx *storage.Store) error {
			return tx.DeleteIdempotencyBefore(ctx, time.Now().UTC().Add(-c.idemRetention))
		})
		if err != nil && ctx.Err() == nil {
			c.log.Warn("purging old idempotency keys failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}
