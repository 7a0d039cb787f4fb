package storage

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
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
func (s *Store) ListenEvents(ctx context.Context, poke func(convID string, seq int64), pokeAll func()) {
	if s.dialect != "postgres" {
		return
	}
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, poke, pokeAll, func() { backoff = 250 * time.Millisecond })
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

func (s *Store) listenOnce(ctx context.Context, poke func(string, int64), pokeAll func(), connected func()) error {
	conn, err := s.pgConnect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+eventsChannel); err != nil {
		return err
	}
	connected()
	s.notify.pokeAll.Store(&pokeAll)
	// Whatever was notified while we were not listening is in the log:
	// let every stream re-read it.
	pokeAll()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if s.notify.fromUs(n.PID) {
			continue // published at commit already (afterCommit)
		}
		conv, seq, ok := parseNotify(n.Payload)
		if !ok {
			s.log.Warn("odd event notification ignored", "payload_len", len(n.Payload))
			continue
		}
		poke(conv, seq)
	}
}

// notifyState tells a replica's own notifications from the others'. A
// replica publishes the events it commits itself, in process, once COMMIT
// has answered (afterCommit); the NOTIFY of the same commit reaches its
// listener at about the same moment, usually first, and made every stream
// of the conversation read the log again for events it was about to be
// handed (1.5 reads of the events per dial-out on one replica). A
// notification carries the PID of the server backend that sent it: one of
// this replica's pool connections that committed events within ownWindow
// is this replica's. PIDs are not reused within seconds, and a stale
// entry only ever names a connection of this replica's pool.
type notifyState struct {
	pids sync.Map // backend PID (uint32) → unix nanos of its last commit with events
	// pokeAll is ListenEvents' pokeAll: after a commit whose outcome is
	// unknown (the connection failed after COMMIT went out) the events may
	// be committed and published by nobody, so every stream re-reads.
	pokeAll atomic.Pointer[func()]
}

const ownWindow = 10 * time.Second

// committing notes that the backend pid is about to commit events.
func (n *notifyState) committing(pid uint32) {
	n.pids.Store(pid, time.Now().UnixNano())
}

func (n *notifyState) fromUs(pid uint32) bool {
	v, ok := n.pids.Load(pid)
	return ok && time.Now().UnixNano()-v.(int64) < int64(ownWindow)
}

// unsure is told of a commit with events whose outcome is unknown.
func (n *notifyState) unsure() {
	if f := n.pokeAll.Load(); f != nil {
		(*f)()
	}
}
