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

// Idempotent runs do at most once per (scope, key): the first call reserves
// the key in the database (so it holds across replicas and restarts), runs
// do and stores its answer; a repeat returns the stored answer, waiting for
// the first to finish if it is still running. A key reused with a different
// request is a 409 (`idempotency_key_reused`). Answers that are errors the
// client should retry (5xx) are not kept.
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
		ans := do()
		if ans.Status >= 500 {
			_ = c.store.DeleteIdempotency(context.WithoutCancel(ctx), scope, key)
			return ans, nil
		}
		if err := c.store.InTx(ctx, func(tx *storage.Store) error {
			return tx.FinishIdempotency(ctx, scope, key, ans.Status, string(ans.Body))
		}); err != nil {
			c.log.Error("storing idempotent answer failed", "err", err)
		}
		return ans, nil
	}
	if !errors.Is(err, storage.ErrConflict) {
		return Answer{}, err
	}
	// Someone has the key: wait for their answer.
	deadline := time.Now().Add(30 * time.Second)
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
		if time.Now().After(deadline) {
			return Answer{}, core.Conflict("idempotency_in_progress", "a request with this Idempotency-Key is still being processed")
		}
		select {
		case <-ctx.Done():
			return Answer{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
