package link

import (
	"net"
	"sync/atomic"
	"time"
)

// Clock notes when something last happened (bytes arrived, a request was
// answered) on a monotonic clock of its own, so a watchdog can ask
// "anything since I asked?" without comparing wall times.
type Clock struct {
	origin time.Time
	last   atomic.Int64 // ns since origin
}

// NewClock starts a clock at now.
func NewClock() *Clock { return &Clock{origin: time.Now()} }

// Now is the time since the clock started.
func (c *Clock) Now() time.Duration { return time.Since(c.origin) }

// At is the wall time t on this clock.
func (c *Clock) At(t time.Time) time.Duration { return t.Sub(c.origin) }

// Note records that it happened now.
func (c *Clock) Note() { c.last.Store(int64(time.Since(c.origin))) }

// Since reports whether it happened at or after t (a value of Now).
func (c *Clock) Since(t time.Duration) bool { return time.Duration(c.last.Load()) >= t }

// Conn is a connection that notes when bytes last arrived: any frame — an
// event, a reply, a pong the protocol library swallows — proves the peer
// is alive, even while the answer to one request is queued behind others.
// Close is idempotent.
type Conn struct {
	net.Conn
	*Clock
	closed atomic.Bool
}

// Watch wraps c.
func Watch(c net.Conn) *Conn { return &Conn{Conn: c, Clock: NewClock()} }

// Read reads and notes the arrival of any bytes.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.Note()
	}
	return n, err
}

// Close closes the connection once; later calls do nothing.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.Conn.Close()
}
