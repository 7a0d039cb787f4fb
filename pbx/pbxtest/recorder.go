package pbxtest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
)

// waitLimit is how long a wait lasts before the test fails: generous, so
// a busy machine running tests in parallel does not make them flaky.
const waitLimit = 20 * time.Second

// Recorder is a pbx.Handler that keeps every event, in the order handled.
type Recorder struct {
	mu     sync.Mutex
	events []pbx.Event
	notify chan struct{}
	block  chan struct{} // when not nil, HandleEvent waits on it
}

// NewRecorder is an empty recorder.
func NewRecorder() *Recorder { return &Recorder{notify: make(chan struct{}, 1)} }

// HandleEvent keeps e (after waiting for the channel given to Block).
func (r *Recorder) HandleEvent(e pbx.Event) {
	r.mu.Lock()
	block := r.block
	r.mu.Unlock()
	if block != nil {
		<-block
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Block makes HandleEvent wait until ch is closed (a controller stuck on
// its database); Block(nil) stops that for the events that come later.
func (r *Recorder) Block(ch chan struct{}) {
	r.mu.Lock()
	r.block = ch
	r.mu.Unlock()
}

// All is every event so far.
func (r *Recorder) All() []pbx.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pbx.Event(nil), r.events...)
}

// Of is the events of one leg ("" for link events), in order.
func (r *Recorder) Of(leg string) []pbx.Event {
	var out []pbx.Event
	for _, e := range r.All() {
		if e.LegID == leg {
			out = append(out, e)
		}
	}
	return out
}

// Types is the types of the events of one leg, in order.
func (r *Recorder) Types(leg string) []pbx.EventType {
	var out []pbx.EventType
	for _, e := range r.Of(leg) {
		out = append(out, e.Type)
	}
	return out
}

// Count is the number of events so far that match pred.
func (r *Recorder) Count(pred func(pbx.Event) bool) int {
	n := 0
	for _, e := range r.All() {
		if pred(e) {
			n++
		}
	}
	return n
}

// WaitFor waits until pred holds for the events so far and returns them.
func (r *Recorder) WaitFor(t testing.TB, what string, pred func([]pbx.Event) bool) []pbx.Event {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		evs := r.All()
		if pred(evs) {
			return evs
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; events so far:\n%s", what, Dump(evs))
		}
	}
}

// WaitFirst waits for an event that matches pred and returns the first.
func (r *Recorder) WaitFirst(t testing.TB, what string, pred func(pbx.Event) bool) pbx.Event {
	t.Helper()
	var found pbx.Event
	r.WaitFor(t, what, func(evs []pbx.Event) bool {
		for _, e := range evs {
			if pred(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// WaitEvent waits for an event of this type for this leg ("" = link
// events) and returns the first.
func (r *Recorder) WaitEvent(t testing.TB, leg string, typ pbx.EventType) pbx.Event {
	t.Helper()
	return r.WaitFirst(t, fmt.Sprintf("%s %s", leg, typ), Is(typ, leg))
}

// Is matches the events of this type for this leg ("" = link events).
func Is(typ pbx.EventType, leg string) func(pbx.Event) bool {
	return func(e pbx.Event) bool { return e.Type == typ && e.LegID == leg }
}

// IsType matches the events of this type, of any leg.
func IsType(typ pbx.EventType) func(pbx.Event) bool {
	return func(e pbx.Event) bool { return e.Type == typ }
}

// CountType is the number of events of evs of this type for this leg.
func CountType(evs []pbx.Event, leg string, typ pbx.EventType) int {
	n := 0
	for _, e := range evs {
		if e.LegID == leg && e.Type == typ {
			n++
		}
	}
	return n
}

// Dump renders events one a line, for a failure message.
func Dump(evs []pbx.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s leg=%s conf=%s cause=%d %q reason=%q\n", e.Type, e.LegID, e.ConferenceID, e.Cause, e.CauseText, e.Reason)
	}
	return b.String()
}
