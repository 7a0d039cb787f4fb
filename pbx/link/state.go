package link

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/convoice/convoice/pbx"
)

// State is a driver's link state, what Status reports: ready or not and
// why, since when, and the counts of reconnects and lost events. All
// methods are safe for concurrent use and never block on I/O.
type State struct {
	mu     sync.Mutex
	ready  bool
	detail string
	since  time.Time

	reconnects atomic.Int64
	lost       atomic.Int64
	running    atomic.Bool // Run or RunPassive holds the driver (see HoldRun)
}

// NewState is a state not ready, "not started", since now.
func NewState() *State {
	return &State{detail: "not started", since: time.Now()}
}

// Set says whether the link is ready and why; Since moves only when
// readiness changes.
func (s *State) Set(ready bool, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready != ready {
		s.since = time.Now()
	}
	s.ready, s.detail = ready, detail
}

// Ready reports readiness and its detail.
func (s *State) Ready() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready, s.detail
}

// Status is the state as the contract reports it.
func (s *State) Status() pbx.Status {
	s.mu.Lock()
	st := pbx.Status{Ready: s.ready, Detail: s.detail, Since: s.since}
	s.mu.Unlock()
	st.Reconnects = s.reconnects.Load()
	st.LostEvents = s.lost.Load()
	return st
}

// Reconnected counts one more re-established event link and returns the
// count.
func (s *State) Reconnected() int64 { return s.reconnects.Add(1) }

// Reconnects is the number of re-established event links since start.
func (s *State) Reconnects() int64 { return s.reconnects.Load() }

// Lost counts one more dropped or undecodable event.
func (s *State) Lost() { s.lost.Add(1) }

// LostEvents is the number of dropped or undecodable events since start.
func (s *State) LostEvents() int64 { return s.lost.Load() }
