package pbxtest

import (
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
)

// SlowConsumer is a handler that takes its time over every leg event and
// can be held still (a controller stuck on its database). It keeps the
// talking events per leg, the EventLost reports and which legs connected.
type SlowConsumer struct {
	delay   time.Duration
	owed    time.Duration // delay not slept yet (under sleepMu)
	sleepMu sync.Mutex
	hold    chan struct{} // while open, leg events wait
	notify  chan struct{}

	mu sync.Mutex
	// Read these only inside a Wait condition (it runs under the lock)
	// or after the events stopped.
	ByLeg     map[string][]pbx.Event // talking events, per leg, in order handled
	Lost      []pbx.Event            // EventLost reports
	Connected map[string]bool        // legs that got EventConnected
	Handled   int                    // talking events handled
}

// NewSlowConsumer takes delay over every leg event, on average: the delays
// add up and are slept once they reach a millisecond. (A sleep of 20 µs
// per event took milliseconds each on a loaded CI machine, which made
// 10,000 events outlast Wait's deadline; what the tests need is a handler
// slower than the socket, not a precise one.) With held, leg events wait
// until Release.
func NewSlowConsumer(delay time.Duration, held bool) *SlowConsumer {
	c := &SlowConsumer{delay: delay, notify: make(chan struct{}, 1),
		ByLeg: map[string][]pbx.Event{}, Connected: map[string]bool{}}
	if held {
		c.hold = make(chan struct{})
	}
	return c
}

// Release lets held leg events through (once).
func (c *SlowConsumer) Release() { close(c.hold) }

// HandleEvent is slow for leg events, quick for link events.
func (c *SlowConsumer) HandleEvent(e pbx.Event) {
	if e.LegID != "" {
		if c.hold != nil {
			<-c.hold
		}
		c.sleepMu.Lock()
		c.owed += c.delay
		nap := time.Duration(0)
		if c.owed >= time.Millisecond {
			nap, c.owed = c.owed, 0
		}
		c.sleepMu.Unlock()
		time.Sleep(nap)
	}
	c.mu.Lock()
	switch e.Type {
	case pbx.EventConnected:
		c.Connected[e.LegID] = true
	case pbx.EventLost:
		c.Lost = append(c.Lost, e)
	case pbx.EventTalkingStarted, pbx.EventTalkingFinished:
		c.ByLeg[e.LegID] = append(c.ByLeg[e.LegID], e)
		c.Handled++
	}
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Wait waits until cond holds; cond runs with the consumer locked. It
// gives up when 30 s pass with no event handled: the tests assert what
// is handled and in which order, not how fast, and under -race on a CI
// machine running other packages' tests a burst of 10,000 events takes
// tens of seconds where a quiet one takes under 2.
func (c *SlowConsumer) Wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	const stall = 30 * time.Second
	deadline, last := time.Now().Add(stall), -1
	for {
		c.mu.Lock()
		ok := cond()
		handled, lost := c.Handled, len(c.Lost)
		c.mu.Unlock()
		if ok {
			return
		}
		if handled != last {
			deadline, last = time.Now().Add(stall), handled
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: nothing handled for %s (handled %d, EventLost %d)", what, stall, handled, lost)
		}
		select {
		case <-c.notify:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// CheckOrder fails unless every leg's talking events were handled in the
// order sent: the i-th sent is stamped base+i ms and is Started for even
// i, Finished for odd; stamps must strictly increase. With complete > 0,
// each of legs must also have exactly complete of them (none lost).
func (c *SlowConsumer) CheckOrder(t testing.TB, base time.Time, legs []string, complete int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for leg, evs := range c.ByLeg {
		prev := -1
		for _, e := range evs {
			i := int(e.At.Sub(base) / time.Millisecond)
			if i <= prev {
				t.Fatalf("leg %s: event #%d handled after #%d", leg, i, prev)
			}
			want := pbx.EventTalkingStarted
			if i%2 == 1 {
				want = pbx.EventTalkingFinished
			}
			if e.Type != want {
				t.Fatalf("leg %s: event #%d is %s, sent as %s", leg, i, e.Type, want)
			}
			prev = i
		}
	}
	if complete <= 0 {
		return
	}
	for _, leg := range legs {
		if n := len(c.ByLeg[leg]); n != complete {
			t.Fatalf("leg %s: %d events handled, %d sent", leg, n, complete)
		}
	}
}
