package storage

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// eventsChannel is the PostgreSQL NOTIFY channel that tells every replica
// a conversation's log grew: the payload is "<conversation id>:<seq>" (or a
// user's stream: "user:<user id>:<seq>", fanout.go).
// NOTIFY is transactional, so it is delivered at commit, in commit order,
// and only for committed events; the stored log stays the source of truth
// (a replica that hears of seq N reads the log up to it).
const eventsChannel = "convoice_events"

// ListenEvents follows the event notifications of every replica on a
// PostgreSQL store until ctx is done: poke(conversation, seq) for each, and
// pokeAll() after every (re)connect, when notifications may have been
// missed. It reconnects with backoff. On SQLite it returns at once: one
// process is the only writer.
func (s *Store) ListenEvents(ctx context.Context, dsn string, poke func(convID string, seq int64), pokeAll func()) {
	if s.dialect != "postgres" {
		return
	}
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, dsn, poke, pokeAll, func() { backoff = 250 * time.Millisecond })
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("event notifications lost; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, dsn string, poke func(string, int64), pokeAll func(), connected func()) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+eventsChannel); err != nil {
		return err
	}
	connected()
	// Whatever was notified while we were not listening is in the log:
	// let every stream re-read it.
	pokeAll()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		conv, seq, ok := parseNotify(n.Payload)
		if !ok {
			s.log.Warn("odd event notification ignored", "payload_len", len(n.Payload))
			continue
		}
		poke(conv, seq)
	}
}
