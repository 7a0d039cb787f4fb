package ariemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/convoice/convoice/emulator/internal/emutest"
)

const testdataDir = "../../testdata/asterisk"

// testLogger sends the emulator's logs to t.Log, so a failing test shows
// what the emulator thought.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s := New(cfg)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ---- REST ----

type restResp struct {
	Status int
	Body   []byte
	Header http.Header
}

func (r restResp) json(t testing.TB) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("response %d is not JSON: %q", r.Status, r.Body)
	}
	return v
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// rest sends one request with ari:ari-style basic auth (user/password from
// the server's config). body: nil, a string (sent as is) or anything else
// (sent as JSON).
func rest(t testing.TB, s *Server, method, pathQuery string, body any) restResp {
	t.Helper()
	r, err := restErr(s.Addr(), s.cfg.User, s.cfg.Password, method, pathQuery, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, pathQuery, err)
	}
	return r
}

func restErr(addr, user, pass, method, pathQuery string, body any) (restResp, error) {
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
		ct = "application/json"
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
		ct = "application/json"
	}
	req, err := http.NewRequest(method, "http://"+addr+pathQuery, rd)
	if err != nil {
		return restResp{}, err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return restResp{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return restResp{Status: resp.StatusCode, Body: b, Header: resp.Header}, nil
}

func mustStatus(t testing.TB, r restResp, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %d, want %d; body %s", r.Status, want, r.Body)
	}
}

// ---- websocket client (the same library CyCoreSystems/ari v5 uses) ----

type event struct {
	raw  []byte
	m    map[string]any
	at   time.Time
	conn int
}

func (e event) typ() string { s, _ := e.m["type"].(string); return s }

func (e event) str(path ...string) string {
	var v any = e.m
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return fmt.Sprint(x)
	case bool:
		return fmt.Sprint(x)
	}
	return ""
}

// chanID is the channel an event is about (Dial carries it in "peer").
func (e event) chanID() string {
	if id := e.str("channel", "id"); id != "" {
		return id
	}
	return e.str("peer", "id")
}

// wsClient collects every event of one or more successive websockets.
type wsClient struct {
	t     interface{ Errorf(string, ...any) }
	inbox *emutest.Inbox[event] // every event of every socket; End: the latest socket's end

	mu    sync.Mutex
	conn  *websocket.Conn
	nc    net.Conn
	ended chan struct{}
	n     int
}

func newWSClient(t interface{ Errorf(string, ...any) }) *wsClient {
	return &wsClient{t: t, inbox: emutest.NewInbox[event]()}
}

func (c *wsClient) connect(addr, query string) error {
	cfg, err := websocket.NewConfig("ws://"+addr+"/ari/events?"+query, "http://localhost/")
	if err != nil {
		return err
	}
	// Dial the TCP connection ourselves so that drop can close it without a
	// close frame.
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	ws, err := websocket.NewClient(cfg, nc)
	if err != nil {
		nc.Close()
		return err
	}
	c.mu.Lock()
	c.n++
	n := c.n
	c.conn = ws
	c.nc = nc
	ended := make(chan struct{})
	c.ended = ended
	c.mu.Unlock()
	go func() {
		defer close(ended)
		for {
			var msg []byte
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				c.inbox.End(err)
				return
			}
			var m map[string]any
			if err := json.Unmarshal(msg, &m); err != nil {
				c.t.Errorf("event is not JSON: %q", msg)
				continue
			}
			c.inbox.Add(event{raw: msg, m: m, at: time.Now(), conn: n})
		}
	}()
	return nil
}

// drop closes the client side abruptly (TCP close, no close frame), as the
// recorder of m did.
func (c *wsClient) drop() {
	c.mu.Lock()
	nc, ended := c.nc, c.ended
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
		<-ended
	}
}

func (c *wsClient) waitEnded(d time.Duration) bool {
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended == nil {
		return false
	}
	select {
	case <-ended:
		return true
	case <-time.After(d):
		return false
	}
}

func (c *wsClient) events() []event {
	evs, _ := c.inbox.Snapshot()
	return evs
}

// waitFor waits until pred holds over the events collected so far.
func (c *wsClient) waitFor(d time.Duration, pred func([]event) bool) bool {
	return c.inbox.WaitFor(d, func(evs []event, _ error) bool { return pred(evs) })
}

// waitEvent waits for an event of the given type about the given channel
// (or any channel when id is empty) and returns it.
func (c *wsClient) waitEvent(t testing.TB, typ, id string) event {
	t.Helper()
	var got event
	ok := c.waitFor(5*time.Second, func(evs []event) bool {
		for _, e := range evs {
			if e.typ() == typ && (id == "" || e.chanID() == id || e.str("bridge", "id") == id) {
				got = e
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no %s for %q; got %s", typ, id, summarize(c.events()))
	}
	return got
}

func summarize(evs []event) string {
	var b strings.Builder
	for _, e := range evs {
		if e.typ() == "ChannelVarset" {
			continue
		}
		fmt.Fprintf(&b, "\n  %s %s", e.typ(), e.chanID())
		for _, k := range []string{"cause", "dialstatus", "soft"} {
			if v := e.str(k); v != "" {
				fmt.Fprintf(&b, " %s=%s", k, v)
			}
		}
		if st := e.str("channel", "state"); st != "" {
			b.WriteString(" " + st)
		}
		if br := e.str("bridge", "id"); br != "" {
			b.WriteString(" bridge=" + br)
		}
	}
	return b.String()
}

// typesFor lists the event types about one channel, ChannelVarset left out.
func typesFor(evs []event, id string) []string {
	var out []string
	for _, e := range evs {
		if e.chanID() == id && e.typ() != "ChannelVarset" {
			out = append(out, e.typ())
		}
	}
	return out
}

// ---- raw websocket, to see frames a library hides ----

type rawWS struct {
	conn net.Conn
	br   *bufio.Reader
}

// dialRawWS performs the handshake by hand and returns the connection and
// the HTTP status of the answer.
func dialRawWS(addr, query string) (*rawWS, int, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, 0, err
	}
	var key [16]byte
	rand.Read(key[:])
	fmt.Fprintf(conn, "GET /ari/events?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		query, addr, base64.StdEncoding.EncodeToString(key[:]))
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	conn.SetReadDeadline(time.Time{})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		io.Copy(io.Discard, resp.Body)
		conn.Close()
		return nil, resp.StatusCode, nil
	}
	return &rawWS{conn: conn, br: br}, resp.StatusCode, nil
}

// next reads one frame (server frames are unmasked).
func (w *rawWS) next(d time.Duration) (op byte, payload []byte, err error) {
	w.conn.SetReadDeadline(time.Now().Add(d))
	return readFrame(w.br)
}

// send writes one masked client frame.
func (w *rawWS) send(op byte, payload []byte) error {
	var mask [4]byte
	rand.Read(mask[:])
	f := frameHeader(nil, op, len(payload))
	f[1] |= 0x80
	f = append(f, mask[:]...)
	for i, c := range payload {
		f = append(f, c^mask[i&3])
	}
	_, err := w.conn.Write(f)
	return err
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
