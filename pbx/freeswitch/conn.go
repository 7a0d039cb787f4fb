package freeswitch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fiorix/go-eventsocket/eventsocket"

	"github.com/convoice/convoice/pbx/link"
)

// Limits on what we accept from the server. FreeSWITCH itself refuses
// bodies over 16 MiB (mod_event_socket.c MAX_CONTENT_LENGTH).
const (
	maxBody       = 16 << 20
	maxHeaderSize = 64 << 10
)

// Errors of the event-socket connection.
var (
	// ErrRejected: FreeSWITCH's event-socket ACL refused our address
	// (text/rude-rejection instead of auth/request).
	ErrRejected = errors.New("freeswitch: refused by the event-socket ACL")
	// ErrAuth: the event-socket password was not accepted.
	ErrAuth = errors.New("freeswitch: event-socket password rejected")
	// ErrProtocol: the server sent something that is not an ESL frame
	// (bad header line, bad or huge Content-Length, a frame cut short).
	ErrProtocol = errors.New("freeswitch: event-socket protocol error")
)

// frame is one frame as read off the socket: the outer headers (names as
// sent; lookups are case-insensitive) and the body.
type frame struct {
	headers map[string]string
	body    string
}

func (f frame) get(k string) string {
	if v, ok := f.headers[k]; ok {
		return v
	}
	for hk, v := range f.headers {
		if strings.EqualFold(hk, k) {
			return v
		}
	}
	return ""
}

// readFrame reads one frame: "Name: value" lines, an empty line, then
// exactly Content-Length bytes (the format documented in "mod_event_socket",
// FreeSWITCH Explained, and written by mod_event_socket.c). Header order is
// not relied on: FreeSWITCH puts Content-Length first in events and second
// in replies. It never panics on bad input; it returns ErrProtocol.
func readFrame(br *bufio.Reader) (frame, error) {
	f := frame{headers: map[string]string{}}
	size := 0
	for {
		line, err := br.ReadString('\n')
		size += len(line)
		if err != nil {
			if len(f.headers) > 0 || line != "" {
				return f, fmt.Errorf("%w: connection ended inside a frame header", ErrProtocol)
			}
			return f, err
		}
		if size > maxHeaderSize {
			return f, fmt.Errorf("%w: header block over %d bytes", ErrProtocol, maxHeaderSize)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(f.headers) == 0 {
				continue // stray blank line between frames
			}
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return f, fmt.Errorf("%w: bad header line %q", ErrProtocol, truncate(line, 60))
		}
		f.headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if cl := f.get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 || n > maxBody {
			return f, fmt.Errorf("%w: bad Content-Length %q", ErrProtocol, truncate(cl, 20))
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return f, fmt.Errorf("%w: truncated frame (Content-Length %d, connection ended before the body did)", ErrProtocol, n)
		}
		f.body = string(b)
	}
	return f, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// decodeEvent turns a text/event-json or text/event-plain frame into the
// library's Event value type (headers keyed by their exact FreeSWITCH
// names, every value a string, the body of BACKGROUND_JOB in Body).
//
// The library's own decoder is not used: it capitalises names ("Job-UUID"
// becomes "Job-Uuid"), keeps JSON values of any type (its Event.Get panics
// on a non-string) and returns errors through a channel shared with
// command replies.
func decodeEvent(f frame) (*eventsocket.Event, error) {
	ev := &eventsocket.Event{Header: eventsocket.EventHeader{}}
	switch f.get("Content-Type") {
	case "text/event-json":
		var m map[string]string // FreeSWITCH sends only strings; anything else is refused
		if err := json.Unmarshal([]byte(f.body), &m); err != nil {
			return nil, fmt.Errorf("undecodable JSON event: %v", err)
		}
		for k, v := range m {
			if k == "_body" {
				ev.Body = v
				continue
			}
			ev.Header[k] = v
		}
	case "text/event-plain":
		// A URL-encoded header block, then optionally an inner
		// Content-Length, a blank line and the body (BACKGROUND_JOB).
		head, rest, _ := strings.Cut(f.body, "\n\n")
		for _, line := range strings.Split(head, "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				continue
			}
			if dv, err := url.PathUnescape(v); err == nil {
				v = dv
			}
			ev.Header[k] = v
		}
		if n, err := strconv.Atoi(ev.Get("Content-Length")); err == nil && n >= 0 && n <= len(rest) {
			ev.Body = rest[:n]
		}
	default:
		return nil, fmt.Errorf("not an event frame: %q", f.get("Content-Type"))
	}
	if ev.Get("Event-Name") == "" {
		return nil, errors.New("event without Event-Name")
	}
	return ev, nil
}

// eslConn is one authenticated event-socket connection.
//
// It replaces the library's Connection, whose reader cannot be made safe
// from outside: it calls log.Fatal (killing the process) on a Content-Type
// it does not know such as text/rude-rejection, panics on a short
// Reply-Text or a one-byte api/response ("0" from "conference count"),
// sends "-ERR" replies to the same error channel ReadEvent reads (so a
// failed command can be mistaken for a dead connection and the command
// waits 60 s), blocks its single reader on an unbuffered reply channel
// when nobody waits for a reply and on its 16-slot event channel when
// events are not read fast enough, and its Send writes without a lock or
// deadline. Here: one reader that never blocks (events go to a callback
// that queues them), replies matched to commands in order (FreeSWITCH
// answers every command of a socket in order), writes serialised under a
// lock with a deadline, every request bounded by a timeout, and any
// protocol surprise turned into an error for the supervisor.
type eslConn struct {
	// nc notes when bytes last arrived: a server that keeps sending is
	// alive even when the answer to a command is queued behind a burst of
	// events.
	nc      *link.Conn
	br      *bufio.Reader
	timeout time.Duration
	onEvent func(*eventsocket.Event)
	onLost  func(reason string)

	wmu     sync.Mutex // serialises writes and the order of pending replies
	pending []pendingReply

	done    chan struct{}
	errOnce sync.Once
	err     error

	// core is the Core-UUID of the first event read on this connection;
	// coreKnown is closed once it is set (reader goroutine only writes).
	core      string
	coreKnown chan struct{}
}

// pendingReply is a command waiting for its reply, with when it was sent
// (on the connection's clock).
type pendingReply struct {
	ch   chan frame
	sent time.Duration
}

// oldestWait is how long the oldest command still waiting for its reply
// has waited (0: none waits).
func (c *eslConn) oldestWait() time.Duration {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.pending) == 0 {
		return 0
	}
	return c.nc.Now() - c.pending[0].sent
}

// dial connects and authenticates. The password is only written to the
// socket, never logged or put in an error.
func dial(ctx context.Context, addr, password string, timeout time.Duration) (*eslConn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc := link.Watch(raw)
	c := &eslConn{nc: nc, br: bufio.NewReader(nc), timeout: timeout, done: make(chan struct{}), coreKnown: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	defer stop()
	_ = nc.SetDeadline(time.Now().Add(timeout))
	f, err := readFrame(c.br)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("waiting for auth/request: %w", err)
	}
	switch ct := f.get("Content-Type"); ct {
	case "auth/request":
	case "text/rude-rejection":
		nc.Close()
		return nil, fmt.Errorf("%w: %s", ErrRejected, strings.TrimSpace(f.body))
	default:
		nc.Close()
		return nil, fmt.Errorf("%w: expected auth/request, got %q", ErrProtocol, ct)
	}
	if strings.ContainsAny(password, "\r\n") {
		nc.Close()
		return nil, fmt.Errorf("%w: the password contains a line break", ErrAuth)
	}
	if _, err := io.WriteString(nc, "auth "+password+"\n\n"); err != nil {
		nc.Close()
		return nil, err
	}
	f, err = readFrame(c.br)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("waiting for the auth reply: %w", err)
	}
	if reply := f.get("Reply-Text"); !strings.HasPrefix(reply, "+OK") {
		nc.Close()
		if f.get("Content-Type") == "text/rude-rejection" {
			return nil, fmt.Errorf("%w: %s", ErrRejected, strings.TrimSpace(f.body))
		}
		return nil, fmt.Errorf("%w (%s)", ErrAuth, reply)
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

// start runs the reader; events and lost-event notices go to the callbacks.
func (c *eslConn) start(onEvent func(*eventsocket.Event), onLost func(string)) {
	c.onEvent, c.onLost = onEvent, onLost
	go c.readLoop()
}

func (c *eslConn) fail(err error) {
	c.errOnce.Do(func() {
		c.err = err
		close(c.done)
		_ = c.nc.Close()
	})
}

// Err says why the connection ended (nil while it is up).
func (c *eslConn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *eslConn) readLoop() {
	defer func() {
		// Defence in depth: nothing the server sends may take the
		// process down.
		if r := recover(); r != nil {
			c.fail(fmt.Errorf("%w: reader panic: %v", ErrProtocol, r))
		}
	}()
	for {
		f, err := readFrame(c.br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("FreeSWITCH closed the connection")
			}
			c.fail(err)
			return
		}
		switch ct := f.get("Content-Type"); ct {
		case "command/reply", "api/response":
			c.wmu.Lock()
			var w chan frame
			if len(c.pending) > 0 {
				w, c.pending = c.pending[0].ch, c.pending[1:]
			}
			c.wmu.Unlock()
			if w == nil {
				c.onLost("a reply nobody asked for: " + truncate(f.get("Reply-Text")+f.body, 60))
				continue
			}
			w <- f // buffered: never blocks
		case "text/event-json", "text/event-plain":
			ev, err := decodeEvent(f)
			if err != nil {
				c.onLost(err.Error())
				continue
			}
			if c.core == "" && c.coreKnown != nil {
				if core := ev.Get("Core-UUID"); core != "" {
					c.core = core
					close(c.coreKnown)
				}
			}
			c.onEvent(ev)
		case "text/disconnect-notice":
			c.fail(fmt.Errorf("FreeSWITCH closed the connection: %s", strings.TrimSpace(f.body)))
			return
		case "text/rude-rejection":
			c.fail(fmt.Errorf("%w: %s", ErrRejected, strings.TrimSpace(f.body)))
			return
		default:
			// The frame is self-delimited and could be skipped, but a
			// server that sends what we do not understand may be in a
			// state we cannot follow: start over (reconnect + resync).
			c.fail(fmt.Errorf("%w: unknown Content-Type %q", ErrProtocol, truncate(ct, 40)))
			return
		}
	}
}

// errUnsent marks a request error where the command never went out whole
// (the connection was already closed, or the write failed): the server
// cannot have run it. Any other request error leaves that open.
var errUnsent = errors.New("command not sent")

// request sends one command and waits for its reply. A timeout means the
// server stopped answering: the connection is closed so that the
// supervisor reconnects. A cancelled ctx leaves the reply to be dropped.
func (c *eslConn) request(ctx context.Context, cmd string) (frame, error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return frame{}, fmt.Errorf("freeswitch: command contains a line break")
	}
	w := make(chan frame, 1)
	c.wmu.Lock()
	select {
	case <-c.done:
		c.wmu.Unlock()
		return frame{}, fmt.Errorf("%w: %w", errUnsent, c.err)
	default:
	}
	sent := c.nc.Now()
	c.pending = append(c.pending, pendingReply{ch: w, sent: sent})
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	_, err := io.WriteString(c.nc, cmd+"\n\n")
	c.wmu.Unlock()
	if err != nil {
		err = fmt.Errorf("sending %s: %w", commandName(cmd), err)
		c.fail(err)
		return frame{}, fmt.Errorf("%w: %w", errUnsent, err)
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case f := <-w:
		return f, nil
	case <-c.done:
		return frame{}, c.err
	case <-ctx.Done():
		return frame{}, ctx.Err()
	case <-t.C:
		if c.nc.Since(sent) {
			// Frames keep coming: FreeSWITCH lives and the answer is
			// queued behind them (a burst of events). The caller gets
			// its timeout; the connection stays, the late answer is
			// dropped when it comes. (A server that sends but never
			// answers is caught by the supervisor: oldestWait.)
			return frame{}, fmt.Errorf("no answer to %s within %s (FreeSWITCH is busy sending events)", commandName(cmd), c.timeout)
		}
		err := fmt.Errorf("no answer to %s for %s", commandName(cmd), c.timeout)
		c.fail(err)
		return frame{}, err
	}
}

// close says goodbye ("exit") when the server still answers, then closes.
func (c *eslConn) close() {
	select {
	case <-c.done:
		return
	default:
	}
	w := make(chan frame, 1)
	c.wmu.Lock()
	c.pending = append(c.pending, pendingReply{ch: w, sent: c.nc.Now()})
	_ = c.nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := io.WriteString(c.nc, "exit\n\n")
	c.wmu.Unlock()
	if err == nil {
		t := time.NewTimer(500 * time.Millisecond)
		defer t.Stop()
		select { // "+OK bye", then the disconnect notice ends the reader
		case <-c.done:
		case <-t.C:
		}
	}
	c.fail(errors.New("closed by convoice"))
}

// commandName is what may be logged of a command: its first two words
// (never arguments that could hold secrets or personal data).
func commandName(cmd string) string {
	f := strings.Fields(cmd)
	if len(f) > 2 {
		f = f[:2]
	}
	return strings.Join(f, " ")
}
