package freeswitch

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/eslemu"
	"github.com/convoice/convoice/pbx"
)

const testPassword = "s3cret-test"

// fastTiming keeps phone scripts short so tests run quickly.
var fastTiming = emuphone.Timing{Ring: 150 * time.Millisecond, Hold: 300 * time.Millisecond, SlowRing: time.Second}

func startEmu(t *testing.T, mod func(*eslemu.Config)) *eslemu.Server {
	t.Helper()
	cfg := eslemu.Config{Password: testPassword, Timing: fastTiming, SignalDelay: 10 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	emu := eslemu.New(cfg)
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu
}

// recorder is a pbx.Handler that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []pbx.Event
	wake   chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) HandleEvent(e pbx.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []pbx.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pbx.Event(nil), r.events...)
}

// waitFor returns the first event (from index 0) matching pred.
func (r *recorder) waitFor(t *testing.T, what string, pred func(pbx.Event) bool) pbx.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for _, e := range r.all() {
			if pred(e) {
				return e
			}
		}
		select {
		case <-r.wake:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; events: %s", what, describeEvents(r.all()))
		}
	}
}

func (r *recorder) count(pred func(pbx.Event) bool) int {
	n := 0
	for _, e := range r.all() {
		if pred(e) {
			n++
		}
	}
	return n
}

func describeEvents(es []pbx.Event) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\n  %s leg=%s conf=%s cause=%d %s %s", e.Type, short(e.LegID), e.ConferenceID, e.Cause, e.CauseText, e.Reason)
	}
	return b.String()
}

func short(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

func is(t pbx.EventType, leg string) func(pbx.Event) bool {
	return func(e pbx.Event) bool { return e.Type == t && e.LegID == leg }
}

func isType(t pbx.EventType) func(pbx.Event) bool {
	return func(e pbx.Event) bool { return e.Type == t }
}

type testDriver struct {
	*Driver
	rec    *recorder
	cancel context.CancelFunc
	done   chan error
}

// startDriver runs a driver against addr and waits until it is ready
// (unless wantReady is false).
func startDriver(t *testing.T, addr string, wantReady bool, mod func(*Config)) *testDriver {
	t.Helper()
	routes, err := pbx.ParseRoutes(`^\+1555=sofia/gateway/nosuchgw/{e164};.*=sofia/gateway/pbx/{e164}`)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Addr: addr, Password: testPassword, Routes: routes, RingTimeout: 5 * time.Second,
		RequestTimeout: 500 * time.Millisecond, PingInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDriver{Driver: d, rec: newRecorder(), cancel: cancel, done: make(chan error, 1)}
	go func() { td.done <- d.Run(ctx, td.rec) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-td.done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	})
	if wantReady {
		td.waitReady(t)
	}
	return td
}

func (td *testDriver) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !td.Status().Ready {
		if time.Now().After(deadline) {
			t.Fatalf("driver not ready: %+v", td.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (td *testDriver) waitNotReady(t *testing.T) pbx.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := td.Status()
		if !st.Ready {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver still ready: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (td *testDriver) dial(t *testing.T, conf, number string) string {
	t.Helper()
	leg := newID()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := td.CreateConference(ctx, conf); err != nil {
		t.Fatalf("CreateConference: %v", err)
	}
	if err := td.Dial(ctx, pbx.DialRequest{LegID: leg, ConferenceID: conf, Number: number,
		CallerIDName: "Convoice, Inc.", CallerIDNumber: "+12025550100"}); err != nil {
		t.Fatalf("Dial %s: %v", number, err)
	}
	return leg
}

func emuChannel(emu *eslemu.Server, uuid string) (eslemu.Channel, bool) {
	for _, c := range emu.Channels() {
		if c.UUID == uuid {
			return c, true
		}
	}
	return eslemu.Channel{}, false
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// raw is a bare ESL client standing for another program on the same
// FreeSWITCH (an operator's fs_cli, another service).
type raw struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func rawClient(t *testing.T, addr string) *raw {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &raw{t: t, nc: nc, br: bufio.NewReader(nc)}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if f, err := readFrame(r.br); err != nil || f.get("Content-Type") != "auth/request" {
		t.Fatalf("raw client: %v %v", f, err)
	}
	if reply := r.send("auth " + testPassword); !strings.HasPrefix(reply.get("Reply-Text"), "+OK") {
		t.Fatalf("raw client auth: %v", reply)
	}
	return r
}

func (r *raw) send(cmd string) frame {
	r.t.Helper()
	if _, err := io.WriteString(r.nc, cmd+"\n\n"); err != nil {
		r.t.Fatal(err)
	}
	for {
		f, err := readFrame(r.br)
		if err != nil {
			r.t.Fatalf("raw client %q: %v", cmd, err)
		}
		if ct := f.get("Content-Type"); ct == "command/reply" || ct == "api/response" {
			return f
		}
	}
}

func (r *raw) api(cmd string) string { return r.send("api " + cmd).body }
