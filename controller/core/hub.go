package core

import (
	"sync"

	"github.com/convoice/convoice/storage"
)

// Event is one entry of a conversation's log, as stored and as streamed.
type Event = storage.Event

// Hub fans committed events out to the live streams of their conversation,
// and the copies of events on a user's own stream to that stream (keyed
// UserStreamKey).
// It never is the source of truth: a subscriber that falls behind is told
// so and re-reads the stored log, so the stream has no gap and no
// duplicate whatever the load (see Subscription.Next).
type Hub struct {
	mu   sync.Mutex
	subs map[string]map[*Subscription]struct{}
}

// NewHub makes an empty hub.
func NewHub() *Hub { return &Hub{subs: map[string]map[*Subscription]struct{}{}} }

// subQueueMax is how many events a subscriber may have queued before it is
// switched to reading the store.
const subQueueMax = 512

// Subscription is one live listener on one conversation.
type Subscription struct {
	hub    *Hub
	convID string
	// Wake has a value whenever there is something to take.
	Wake chan struct{}

	mu      sync.Mutex
	queue   []Event
	lagged  bool
	maxSeen int64
}

// Subscribe registers a listener on a conversation (or, with
// UserStreamKey, on a user's own stream).
func (h *Hub) Subscribe(convID string) *Subscription {
	s := &Subscription{hub: h, convID: convID, Wake: make(chan struct{}, 1)}
	h.mu.Lock()
	m := h.subs[convID]
	if m == nil {
		m = map[*Subscription]struct{}{}
		h.subs[convID] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Close unregisters the listener.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	if m := h.subs[s.convID]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(h.subs, s.convID)
		}
	}
	h.mu.Unlock()
}

// Publish hands committed events (in seq order per conversation) to the
// listeners. It never blocks.
func (h *Hub) Publish(events []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range events {
		key := ev.ConversationID
		if ev.ForUser != "" {
			key = storage.UserStreamKey(ev.ForUser) // a user's own stream
		}
		for s := range h.subs[key] {
			s.push(ev)
		}
	}
}

// Poke tells the listeners of a conversation that events up to seq exist
// that they may not have been handed (another replica wrote them): they
// re-read the store.
func (h *Hub) Poke(convID string, seq int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[convID] {
		s.mu.Lock()
		if seq > s.maxSeen {
			s.lagged = true
			s.queue = nil
		}
		s.mu.Unlock()
		s.wake()
	}
}

// PokeAll makes every listener re-read the store (notifications from other
// replicas may have been missed).
func (h *Hub) PokeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, subs := range h.subs {
		for s := range subs {
			s.mu.Lock()
			s.lagged = true
			s.queue = nil
			s.mu.Unlock()
			s.wake()
		}
	}
}

func (s *Subscription) push(ev Event) {
	s.mu.Lock()
	if ev.Seq > s.maxSeen {
		s.maxSeen = ev.Seq
	}
	if !s.lagged {
		if len(s.queue) >= subQueueMax {
			s.lagged = true
			s.queue = nil
		} else {
			s.queue = append(s.queue, ev)
		}
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Subscription) wake() {
	select {
	case s.Wake <- struct{}{}:
	default:
	}
}

// Take returns the queued events, or lagged=true when the listener must
// re-read the store from its last seq (the queue overflowed or another
// replica wrote).
func (s *Subscription) Take() (events []Event, lagged bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	events, lagged = s.queue, s.lagged
	s.queue, s.lagged = nil, false
	return events, lagged
}

// UserStreamKey is what Subscribe takes for a user's own stream.
func UserStreamKey(userID string) string { return storage.UserStreamKey(userID) }
