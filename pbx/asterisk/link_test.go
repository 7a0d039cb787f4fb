package asterisk

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// wsFake adds an events websocket to a fakeREST: tests push frames, drop
// the connection, or stop answering pings.
type wsFake struct {
	*fakeREST
	mu       sync.Mutex
	conns    []*websocket.Conn
	connects atomic.Int32
	// handshakes counts the upgrades answered; a connection's handler
	// registers it in conns after that (see last).
	handshakes atomic.Int32
	deaf       atomic.Bool // stop reading: no pong to our pings
	stop       chan struct{}
	sawKey     atomic.Value
}

func newWSFake(t *testing.T) *wsFake {
	f := &wsFake{fakeREST: newFakeREST(t), stop: make(chan struct{})}
	t.Cleanup(func() { close(f.stop) })
	f.on("GET", "/asterisk/info", 200, `{"status": {"startup_time": "2026-11-27T05:07:59.489+0000"}}`)
	f.on("GET", "/asterisk/ping", 200, `{"ping": "pong", "asterisk_id": "02:fc:00:00:00:01"}`)
	f.on("GET", "/applications/convoice", 404, `{"message": "Application not found"}`)
	f.on("GET", "/channels", 200, `[]`)
	f.on("GET", "/bridges", 200, `[]`)
	ws := websocket.Server{Handshake: func(_ *websocket.Config, r *http.Request) error {
		// Noted before the handshake is answered: the driver's link up
		// can come before the handler below has run.
		f.sawKey.Store(r.URL.Query().Get("api_key") + "|" + r.URL.Query().Get("app"))
		f.handshakes.Add(1)
		return nil
	}, Handler: func(c *websocket.Conn) {
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		f.connects.Add(1)
		// Reading is what answers pings (x/net answers them inside
		// Receive); a deaf server holds the connection open silently.
		for {
			if f.deaf.Load() {
				<-f.stop
				return
			}
			var msg []byte
			if err := websocket.Message.Receive(c, &msg); err != nil && !f.deaf.Load() {
				return
			}
		}
	}}
	f.handle("GET", "/events", ws.ServeHTTP)
	return f
}

// last is the newest websocket. The driver's link up can come before the
// handler of the connection it is about has registered it (the upgrade is
// answered first), so it waits for every answered upgrade's connection.
func (f *wsFake) last() *websocket.Conn {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		f.mu.Lock()
		n := len(f.conns)
		if n > 0 && n >= int(f.handshakes.Load()) {
			c := f.conns[n-1]
			f.mu.Unlock()
			return c
		}
		f.mu.Unlock()
		if time.Now().After(deadline) {
			panic(fmt.Sprintf("wsFake: %d connections registered of %d upgrades after 5 s", n, f.handshakes.Load()))
		}
	}
}

// goDeaf stops reading the websocket (so no pong answers our pings) while
// keeping its TCP connection open: a half-open link as the client sees it.
func (f *wsFake) goDeaf() {
	f.deaf.Store(true)
	f.last().SetReadDeadline(time.Now()) // wake the reader blocked in Receive
}

func (f *wsFake) send(t *testing.T, frame []byte) {
	t.Helper()
	if err := websocket.Message.Send(f.last(), string(frame)); err != nil {
		t.Fatal(err)
	}
}

func runOnFake(t *testing.T, f *wsFake, ping time.Duration) (*Driver, *pbxtest.Recorder) {
	t.Helper()
	d, err := New(Config{URL: f.url(), User: "convoice", Password: "s3cret", RequestTimeout: time.Second,
		PingInterval: ping, Logger: pbxtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	rec := pbxtest.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, rec) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
	})
	rec.WaitEvent(t, "", pbx.EventLinkUp)
	return d, rec
}

// Connect with api_key and app; events flow; a bare close of the websocket
// gives link down, a reconnect and link up again, counted in Status.
func TestLink_givenWebsocket_whenDropped_thenLinkDownReconnectLinkUp(t *testing.T) {
	f := newWSFake(t)
	d, rec := runOnFake(t, f, time.Second)
	if got := f.sawKey.Load(); got != "convoice:s3cret|convoice" {
		t.Fatalf("websocket api_key|app = %v", got)
	}
	if !d.Status().Ready {
		t.Fatalf("status %+v", d.Status())
	}
	d.dialedForTest("1795756090.3", "conf-c")
	for _, fr := range loadFixture(t, "c_originate_noanswer_timeout.json").frames() {
		f.send(t, fr)
	}
	if e := rec.WaitEvent(t, "1795756090.3", pbx.EventEnded); e.Cause != 19 {
		t.Fatalf("ended %+v", e)
	}
	// The server ends the websocket (the driver treats a close frame
	// and a bare TCP close alike: the read fails).
	f.last().Close()
	rec.WaitEvent(t, "", pbx.EventLinkDown)
	rec.WaitFor(t, "link up again", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) == 2 })
	if st := d.Status(); !st.Ready || st.Reconnects != 1 {
		t.Fatalf("status %+v, want ready with 1 reconnect", st)
	}
}

// A server that keeps the TCP connection but answers nothing (no pong, REST
// hangs) is detected: not ready, then link down within 3×PingInterval.
func TestLink_givenHalfOpen_thenNotReadyThenLinkDownWithinBound(t *testing.T) {
	f := newWSFake(t)
	const ping = 200 * time.Millisecond
	d, rec := runOnFake(t, f, ping)
	// Let a few rounds pass answered.
	time.Sleep(3 * ping)
	if !d.Status().Ready {
		t.Fatalf("not ready while pings are answered: %+v", d.Status())
	}
	hang := make(chan struct{})
	defer close(hang)
	f.handle("GET", "/asterisk/ping", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	f.goDeaf()
	start := time.Now()
	e := rec.WaitEvent(t, "", pbx.EventLinkDown)
	took := time.Since(start)
	if !strings.Contains(e.Reason, "half-open") {
		t.Errorf("reason %q", e.Reason)
	}
	if took > 3*ping+2*time.Second {
		t.Errorf("detected after %v; bound %v", took, 3*ping)
	}
	if d.Status().Ready {
		t.Fatalf("ready after half-open: %+v", d.Status())
	}
	if d.Stats().HalfOpen != 1 {
		t.Errorf("stats %+v", d.Stats())
	}
}

// Only the websocket is dead (REST still answers): still detected, because
// a round needs a frame on the websocket too.
func TestLink_givenDeadWebsocketButLiveREST_thenDetected(t *testing.T) {
	f := newWSFake(t)
	const ping = 200 * time.Millisecond
	_, rec := runOnFake(t, f, ping)
	f.goDeaf()
	e := rec.WaitEvent(t, "", pbx.EventLinkDown)
	if !strings.Contains(e.Reason, "websocket ping") {
		t.Errorf("reason %q", e.Reason)
	}
}
