// Package emuserver is the scaffolding the PBX emulators share around their
// protocols: running until cancelled, the hung-PBX switch, the doorbell that
// wakes a connection's writer, timed waits, logging and ids.
// It never knows a protocol, a call or a phone: those live in ariemu,
// eslemu and emuphone.
package emuserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Logger is l tagged with the emulator's component name (none when
// component is empty), or a logger that discards everything when l is nil.
func Logger(l *slog.Logger, component string) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	if component == "" {
		return l
	}
	return l.With("component", component)
}

// Startable is an emulator as Serve runs it.
type Startable interface {
	Start(addr string) error
	Close() error
}

// Serve starts srv on addr and closes it once ctx is done (the CLI's
// `convoice emulate …`).
func Serve(ctx context.Context, addr string, srv Startable) error {
	if err := srv.Start(addr); err != nil {
		return err
	}
	<-ctx.Done()
	return srv.Close()
}

// Hang is the switch of a hung PBX: while it is on, connections stay open
// but nothing is read or written. The zero value is off.
type Hang struct {
	on      atomic.Bool // fast path for Held
	mu      sync.Mutex
	release chan struct{} // closed when the hang ends; nil while off
}

// Set turns the hang on or off; false when it already was so.
func (h *Hang) Set(on bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on == h.on.Load() {
		return false
	}
	if on {
		h.release = make(chan struct{})
	} else {
		close(h.release)
		h.release = nil
	}
	h.on.Store(on)
	return true
}

// Held is nil while the PBX answers, else a channel closed when the hang
// ends.
func (h *Hang) Held() <-chan struct{} {
	if !h.on.Load() {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.release
}

// Wait blocks while the PBX hangs, even through a hang that ends and starts
// again; false when done is closed first.
func (h *Hang) Wait(done <-chan struct{}) bool {
	for {
		release := h.Held()
		if release == nil {
			select {
			case <-done:
				return false
			default:
				return true
			}
		}
		select {
		case <-done:
			return false
		case <-release:
		}
	}
}

// Sleep waits for d; false when done is closed first.
func Sleep(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// Bell wakes one goroutine (a connection's writer): Ring never blocks, and
// rings while nobody waits fold into one.
type Bell chan struct{}

// NewBell makes a Bell.
func NewBell() Bell { return make(Bell, 1) }

// Ring wakes the waiter, now or when it next waits.
func (b Bell) Ring() {
	select {
	case b <- struct{}{}:
	default:
	}
}

// Link is one client connection as both emulators hold it apart from their
// output queues: the socket, the doorbell of its writer, and an end that
// comes once.
type Link struct {
	Conn net.Conn
	wake Bell
	done chan struct{}
	once sync.Once
}

// NewLink wraps an accepted (or hijacked) connection.
func NewLink(nc net.Conn) *Link {
	return &Link{Conn: nc, wake: NewBell(), done: make(chan struct{})}
}

// Ring wakes the writer: there is output.
func (l *Link) Ring() { l.wake.Ring() }

// Rung waits until the writer is rung; false once the link is cut.
func (l *Link) Rung() bool {
	select {
	case <-l.done:
		return false
	case <-l.wake:
		return true
	}
}

// Done is closed once the link is cut.
func (l *Link) Done() <-chan struct{} { return l.done }

// Cut ends the link at once with a bare TCP close (no goodbye, like a
// reset or a dead process). The first call runs discard, which drops the
// queued output, before the socket closes; later calls do nothing.
func (l *Link) Cut(discard func()) {
	l.once.Do(func() {
		discard()
		close(l.done)
		_ = l.Conn.Close()
	})
}

// UUID is a random version-4 UUID in lower-case hex, as both Asterisk and
// FreeSWITCH write them.
func UUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
