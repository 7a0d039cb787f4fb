package ariemu

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// A minimal RFC 6455 server, written here rather than taken from
// golang.org/x/net/websocket because the emulator needs what a library
// hides: ending a socket as a bare TCP close with no close frame (what
// Asterisk does on restart, recording f), not answering pings while
// "half-open", and one writer goroutine per socket fed by a bounded queue
// that is filled under the emulator's lock without ever blocking it.

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// maxClientFrame bounds what we accept from a client (it should send
// nothing but control frames).
const maxClientFrame = 1 << 20

// wsWriteTimeout: a consumer that does not read for this long is cut.
const wsWriteTimeout = 10 * time.Second

type wsConn struct {
	s            *Server
	link         *emuserver.Link
	br           *bufio.Reader
	apps         []string
	subscribeAll bool
	remote       string

	mu       sync.Mutex
	q        [][]byte // queued text messages
	spare    [][]byte // the writer's drained batch, reused
	ctrl     [][]byte // queued control frames (pong, close)
	draining bool     // close once q is empty (Restart)
	closed   bool

	registered bool // guarded by s.mu
}

func newWS(s *Server, conn net.Conn, br *bufio.Reader) *wsConn {
	return &wsConn{
		s:      s,
		link:   emuserver.NewLink(conn),
		br:     br,
		remote: conn.RemoteAddr().String(),
	}
}

// push queues one event. It is called under s.mu and never blocks: a
// consumer too slow for a queue of EventQueue events is cut off (Asterisk
// would drop events silently; a visible cut is easier to notice and to
// recover from by resync).
func (ws *wsConn) push(msg []byte) {
	ws.mu.Lock()
	if ws.closed || ws.draining {
		ws.mu.Unlock()
		return
	}
	if len(ws.q) >= ws.s.cfg.EventQueue {
		ws.mu.Unlock()
		ws.s.log.Warn("event websocket too slow: queue full, closing it", "remote", ws.remote, "apps", ws.apps, "queued", ws.s.cfg.EventQueue)
		ws.closeNow()
		return
	}
	ws.q = append(ws.q, msg)
	ws.mu.Unlock()
	ws.link.Ring()
}

// pushControl queues a control frame (pong, close echo); unlike events they
// still go out while the socket drains.
func (ws *wsConn) pushControl(frame []byte) {
	ws.mu.Lock()
	if !ws.closed {
		ws.ctrl = append(ws.ctrl, frame)
	}
	ws.mu.Unlock()
	ws.link.Ring()
}

// closeNow ends the socket at once with a bare TCP close; queued events are
// discarded. The reader goroutine notices and unregisters the socket.
func (ws *wsConn) closeNow() { ws.link.Cut(ws.discard) }

// discard empties the event queue for good: nothing more is queued.
func (ws *wsConn) discard() {
	ws.mu.Lock()
	ws.closed = true
	ws.q = nil
	ws.mu.Unlock()
}

// closeAfterDrain sends what is queued, then closes bare (Restart: the
// hangup events go out before the socket ends, recording f).
func (ws *wsConn) closeAfterDrain() {
	ws.mu.Lock()
	ws.draining = true
	ws.mu.Unlock()
	ws.link.Ring()
}

func (ws *wsConn) writeLoop() {
	bw := bufio.NewWriterSize(ws.link.Conn, 32<<10)
	var hdr [10]byte
	for ws.link.Rung() {
		ws.mu.Lock()
		batch := ws.q
		ws.q = ws.spare[:0]
		ctrl := ws.ctrl
		ws.ctrl = nil
		draining := ws.draining
		ws.mu.Unlock()

		if off := ws.s.hang.Held(); off != nil && !draining {
			// Half-open: hold everything back until the mode ends.
			select {
			case <-off:
			case <-ws.link.Done():
				return
			}
		}
		ws.link.Conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
		var err error
		for _, f := range ctrl {
			if _, err = bw.Write(f); err != nil {
				break
			}
		}
		for i, msg := range batch {
			if err != nil {
				break
			}
			h := frameHeader(hdr[:0], opText, len(msg))
			if _, err = bw.Write(h); err == nil {
				_, err = bw.Write(msg)
			}
			batch[i] = nil
		}
		if err == nil {
			err = bw.Flush()
		}
		ws.mu.Lock()
		ws.spare = batch[:0]
		empty := len(ws.q) == 0
		ws.mu.Unlock()
		if err != nil {
			ws.s.log.Info("event websocket write failed, closing", "remote", ws.remote, "err", err)
			ws.closeNow()
			return
		}
		if draining && empty {
			ws.closeNow()
			return
		}
		if !empty {
			ws.link.Ring()
		}
	}
}

func frameHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return b
}

func controlFrame(op byte, payload []byte) []byte {
	f := frameHeader(make([]byte, 0, 2+len(payload)), op, len(payload))
	return append(f, payload...)
}

// readLoop reads what the client sends: it answers pings and close frames
// and otherwise ignores text (Asterisk 22 would take REST requests over the
// socket; convoice never sends any). When the socket ends it unregisters it.
func (ws *wsConn) readLoop() {
	defer func() {
		ws.s.websocketGone(ws)
		ws.closeNow()
	}()
	for {
		op, payload, err := readFrame(ws.br)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				ws.s.log.Debug("event websocket read ended", "remote", ws.remote, "err", err)
			}
			return
		}
		if off := ws.s.hang.Held(); off != nil {
			// Half-open: whatever came in was "lost", and nothing more is
			// read until the mode ends.
			select {
			case <-off:
				continue
			case <-ws.link.Done():
				return
			}
		}
		switch op {
		case opPing:
			ws.pushControl(controlFrame(opPong, payload))
		case opClose:
			// The client closes: echo its status through the writer (so it
			// does not interleave with an event), then end the socket.
			if len(payload) > 2 {
				payload = payload[:2]
			}
			ws.pushControl(controlFrame(opClose, payload))
			ws.closeAfterDrain()
			select {
			case <-ws.link.Done():
			case <-time.After(time.Second):
			}
			return
		}
	}
}

func readFrame(r *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	op = h[0] & 0x0F
	masked := h[1]&0x80 != 0
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var ext [2]byte
		if _, err = io.ReadFull(r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err = io.ReadFull(r, ext[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > maxClientFrame {
		return 0, nil, errors.New("websocket frame too large")
	}
	var mask [4]byte
	if masked {
		if _, err = io.ReadFull(r, mask[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
	}
	return op, payload, nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

func isWebsocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket") && headerHasToken(r.Header, "Connection", "upgrade")
}

// serveEvents is GET /ari/events: the handshake, then the socket joins its
// applications. Auth and the boot state were checked by the caller.
func (s *Server) serveEvents(rc *reqCtx) {
	r := rc.r
	if !isWebsocketUpgrade(r) {
		rc.html(http.StatusUpgradeRequired, "Upgrade Required", "Upgrade Required")
		return
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" && v != "8" && v != "7" {
		rc.html(http.StatusBadRequest, "Bad Request", "Unsupported websocket version")
		return
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" {
		rc.html(http.StatusBadRequest, "Bad Request", "Missing Sec-WebSocket-Key")
		return
	}
	if d := time.Duration(s.wsDelay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	var apps []string
	for _, a := range strings.Split(rc.p.str("app"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			apps = append(apps, a)
		}
	}
	if len(apps) == 0 {
		rc.html(http.StatusBadRequest, "Bad Request", "Missing param 'app'")
		return
	}
	protocol := ""
	if req := r.Header.Get("Sec-WebSocket-Protocol"); req != "" {
		if !headerHasToken(r.Header, "Sec-WebSocket-Protocol", "ari") {
			rc.html(http.StatusBadRequest, "Bad Request", "No protocols acceptable")
			return
		}
		protocol = "ari"
	}
	hj, ok := rc.w.(http.Hijacker)
	if !ok {
		rc.err(http.StatusInternalServerError, "websocket upgrade unsupported")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		s.log.Warn("websocket hijack failed", "err", err)
		return
	}
	rc.hijacked = true
	// The applications are registered before the 101 goes out, as Asterisk
	// does in session_attempted: a client may originate as soon as its
	// handshake completes and must not miss the channel's events. Events
	// queued meanwhile wait for the writer, started after the handshake.
	ws := newWS(s, conn, brw.Reader)
	ws.apps = apps
	ws.subscribeAll = astTrue(rc.p.str("subscribeAll"))
	if !s.registerWS(ws) {
		conn.Close()
		return
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	var resp strings.Builder
	resp.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	resp.WriteString("Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n")
	if protocol != "" {
		resp.WriteString("Sec-WebSocket-Protocol: " + protocol + "\r\n")
	}
	resp.WriteString("\r\n")
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = brw.WriteString(resp.String())
	if err == nil {
		err = brw.Flush()
	}
	conn.SetWriteDeadline(time.Time{})
	// The loops own the socket from here; a failed handshake write ends in
	// the reader, which unregisters it.
	if err != nil {
		ws.closeNow()
	}
	go func() { defer s.wg.Done(); ws.writeLoop() }()
	go func() { defer s.wg.Done(); ws.readLoop() }()
}

// registerWS activates the socket's applications.
func (s *Server) registerWS(ws *wsConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.phase != phaseRunning {
		return false
	}
	s.websocks[ws] = struct{}{}
	ws.registered = true
	s.wg.Add(2) // its two loops; under mu so that Close cannot be waiting yet
	for _, name := range ws.apps {
		a := s.apps[name]
		if a == nil {
			a = &app{name: name}
			s.apps[name] = a
		}
		a.socks = append(a.socks, ws)
		if ws.subscribeAll {
			s.subAll[name]++
		}
	}
	s.log.Info("event websocket connected", "remote", ws.remote, "apps", ws.apps, "subscribe_all", ws.subscribeAll)
	return true
}

func (s *Server) websocketGone(ws *wsConn) {
	s.mu.Lock()
	was := ws.registered
	s.unregisterLocked(ws)
	s.mu.Unlock()
	if was {
		s.log.Info("event websocket closed", "remote", ws.remote, "apps", ws.apps)
	}
}

// unregisterLocked removes the socket from its applications; an application
// left with no socket and holding nothing ceases to exist (recording m).
func (s *Server) unregisterLocked(ws *wsConn) {
	if !ws.registered {
		return
	}
	ws.registered = false
	delete(s.websocks, ws)
	for _, name := range ws.apps {
		a := s.apps[name]
		if a == nil {
			continue
		}
		for i, x := range a.socks {
			if x == ws {
				a.socks = append(a.socks[:i], a.socks[i+1:]...)
				break
			}
		}
		if ws.subscribeAll {
			if s.subAll[name]--; s.subAll[name] <= 0 {
				delete(s.subAll, name)
			}
		}
		s.gcAppLocked(a)
	}
}
