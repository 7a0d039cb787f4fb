// Package apitest starts a whole convoice for tests: a real SQLite file, the
// ARI emulator on a loopback port, the real Asterisk driver talking to it
// over HTTP and websocket, the controller, and the HTTP API on a real
// listener. Tests then speak plain HTTP to it, as any client would.
package apitest

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, for FreshPostgres
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/ariemu"
	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/eslemu"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/asterisk"
	"github.com/convoice/convoice/pbx/freeswitch"
	"github.com/convoice/convoice/storage"
)

// AdminToken is the admin bearer token of every test environment.
const AdminToken = "test-admin-token-0123456789abcdef"

// Options tune an Env.
type Options struct {
	// Limits bound connections and event streams (api.Limits; zero:
	// production's defaults).
	Limits api.Limits
	// WriteFault fails SQLite write batches as a full disk would
	// (storage.Options.WriteFault).
	WriteFault func() error
	// DB is the database (default: a new SQLite file in t.TempDir()).
	DB string
	// Emu is an already running emulator to use (default: a new one).
	Emu *ariemu.Server
	// RingTimeout for originates (default 30 s).
	RingTimeout time.Duration
	// Timing of the emulated phones (default: 50 ms rings, fast tests).
	Timing emuphone.Timing
	// Logs receives every log line (default: discarded).
	Logs io.Writer
	// NoPBX starts convoice with no PBX node at all.
	NoPBX bool
	// PBX is the emulated PBX kind: "asterisk" (default: the ARI emulator
	// and the Asterisk driver) or "freeswitch" (the event-socket emulator
	// and the FreeSWITCH driver).
	PBX string
	// ExternalARI is the ARI URL of an emulator running elsewhere (another
	// process); with it no emulator is started here.
	ExternalARI string
	// PublicURL is the base URL convoice is published at (default: its own).
	PublicURL string
	// Routes are the dial routes (default pbx.DefaultRoutes).
	Routes string
	// Extensions is the internal-extension pattern (default none).
	Extensions *regexp.Regexp
	// PingInterval and RequestTimeout tune the driver's link supervision
	// (half-open detection) and its per-request timeout (default: the
	// driver's, 2 s and 5 s).
	PingInterval, RequestTimeout time.Duration
	// RingGrace is how long past RingTimeout the controller's watchdog
	// waits for the PBX before it ends a ringing leg itself (default 15 s).
	RingGrace time.Duration
	// ResyncYoungLeg: legs younger than this are left alone by a resync
	// (default 5 s).
	ResyncYoungLeg time.Duration
	// Policy is the dial policy. nil: the default policy's number rules
	// (the US only, no premium rate, …) with every rate limit and cap off,
	// so that scenario tests and benchmarks are not throttled; give one to
	// test the policy itself (a zero PolicyConfig is the production
	// default, limits included).
	Policy *controller.PolicyConfig
	// Nodes is the number of PBX nodes (Asterisk only; default 1): each is
	// an ARI emulator of its own with its own driver, named "emulator"
	// (Emu, Driver), "emulator2", … (Emus[i], Drivers[i]).
	Nodes int
	// TrustedProxies: the proxies whose X-Forwarded-For convoice believes
	// (tests that need many client addresses use 127.0.0.0/8).
	TrustedProxies []*net.IPNet
	// NodeLostAfter: a node not ready this long has its legs ended
	// (default the controller's, 10 min).
	NodeLostAfter time.Duration
	// Notify tunes call history and webhooks (its Registerer is the
	// Env's own registry); a test whose webhook receiver is on loopback
	// sets WebhookAllowPrivate.
	Notify controller.NotifyConfig
	// Identity is OpenID Connect sign-in and SCIM (default: neither).
	Identity api.IdentityConfig
	// IdentityLimits are the session and auth-failure limits (default the
	// controller's).
	IdentityLimits controller.IdentityConfig
	// PrincipalRecheck: how often event streams re-check their sign-in
	// (default the API's, 5 s).
	PrincipalRecheck time.Duration
	// Confirm is confirm-to-join (CONVOICE_CONFIRM_*). The zero value is
	// off, unlike the service's default (mobile): scenario tests and
	// benchmarks then join on answer as they always did, and the tests of
	// confirm-to-join ask for it (Confirm.Mode "mobile" or "all", a short
	// Timeout, and for the watchdog a short Grace).
	Confirm controller.ConfirmConfig
}

// Env is one running convoice.
type Env struct {
	t      testing.TB
	opts   Options
	URL    string
	Emu    *ariemu.Server // the ARI emulator (PBX "asterisk")
	ESL    *eslemu.Server // the event-socket emulator (PBX "freeswitch")
	Store  *storage.Store
	Ctl    *controller.Controller
	Driver pbx.Driver
	// Emus and Drivers are every node's emulator and driver (Options.Nodes);
	// Emus[0] is Emu and Drivers[0] is Driver.
	Emus    []*ariemu.Server
	Drivers []pbx.Driver

	listener net.Listener
	srv      *http.Server
	cancel   context.CancelFunc
	runDone  chan struct{}
	ownsEmu  bool
	stopOnce sync.Once

	eslMark int // ESL commands before this index were "reset"

	// validator checks every request Do sends, and its answer, against
	// api/openapi.yaml, so every API test also proves the description.
	validator *Validator
}

// Start brings a convoice up and registers its shutdown with t.Cleanup.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.DB == "" {
		opts.DB = filepath.Join(t.TempDir(), "convoice.db")
		if pg := os.Getenv("CONVOICE_TEST_POSTGRES"); pg != "" {
			opts.DB = FreshPostgres(t, pg)
		}
	}
	if opts.Timing.Ring == 0 {
		opts.Timing = emuphone.Timing{Ring: 50 * time.Millisecond, Hold: 500 * time.Millisecond, SlowRing: time.Second}
	}
	e := &Env{t: t, opts: opts, validator: NewValidator(t)}
	if opts.PBX == "freeswitch" && !opts.NoPBX {
		e.ESL = eslemu.New(eslemu.Config{Timing: opts.Timing, Logger: e.logger("esl-emulator")})
		if err := e.ESL.Start("127.0.0.1:0"); err != nil {
			t.Fatalf("start event-socket emulator: %v", err)
		}
		e.ownsEmu = true
	} else if !opts.NoPBX && opts.ExternalARI == "" {
		if opts.Emu != nil {
			e.Emu = opts.Emu
		} else {
			e.Emu = ariemu.New(ariemu.Config{User: "convoice", Password: "emu-secret", Timing: opts.Timing, Logger: e.logger("ari-emulator")})
			if err := e.Emu.Start("127.0.0.1:0"); err != nil {
				t.Fatalf("start emulator: %v", err)
			}
			e.ownsEmu = true
		}
		e.Emus = []*ariemu.Server{e.Emu}
		for i := 2; i <= opts.Nodes; i++ {
			emu := ariemu.New(ariemu.Config{User: "convoice", Password: "emu-secret", Timing: opts.Timing,
				Logger: e.logger(fmt.Sprintf("ari-emulator%d", i))})
			if err := emu.Start("127.0.0.1:0"); err != nil {
				t.Fatalf("start emulator %d: %v", i, err)
			}
			t.Cleanup(func() { emu.Close() })
			e.Emus = append(e.Emus, emu)
		}
	}
	e.start()
	t.Cleanup(func() {
		e.Stop()
		if e.ownsEmu && e.Emu != nil {
			e.Emu.Close()
		}
		if e.ESL != nil {
			e.ESL.Close()
		}
	})
	return e
}

func (e *Env) logger(component string) *slog.Logger {
	if e.opts.Logs == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(e.opts.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", component)
}

func (e *Env) start() {
	t := e.t
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	store, err := storage.Open(ctx, e.opts.DB, storage.Options{Logger: e.logger("storage"), WriteFault: e.opts.WriteFault})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	e.Store = store
	var nodes []*controller.Node
	if e.ESL != nil {
		spec := e.opts.Routes
		if spec == "" {
			spec = ".*=sofia/gateway/pbx/{e164}"
		}
		routes, err := pbx.ParseRoutes(spec)
		if err != nil {
			t.Fatalf("routes: %v", err)
		}
		d, err := freeswitch.New(freeswitch.Config{Addr: e.ESL.Addr(), Password: "ClueCon", Routes: routes,
			RingTimeout: e.opts.RingTimeout, PingInterval: e.opts.PingInterval, RequestTimeout: e.opts.RequestTimeout,
			Logger: e.logger("freeswitch")})
		if err != nil {
			t.Fatalf("freeswitch driver: %v", err)
		}
		e.Driver = d
		nodes = append(nodes, &controller.Node{Name: "emulator", Weight: 1, Driver: d})
	}
	ariURL := e.opts.ExternalARI
	if e.Emu != nil {
		ariURL = e.Emu.URL()
	}
	if ariURL != "" {
		routes, err := pbx.ParseRoutes(e.opts.Routes)
		if err != nil {
			t.Fatalf("routes: %v", err)
		}
		d, err := asterisk.New(asterisk.Config{URL: ariURL, User: "convoice", Password: "emu-secret", App: "convoice",
			Routes: routes, RingTimeout: e.opts.RingTimeout, PingInterval: e.opts.PingInterval, RequestTimeout: e.opts.RequestTimeout,
			TalkDetect: true, Logger: e.logger("asterisk")})
		if err != nil {
			t.Fatalf("asterisk driver: %v", err)
		}
		e.Driver = d
		nodes = append(nodes, &controller.Node{Name: "emulator", Weight: 1, Driver: d})
		e.Drivers = []pbx.Driver{d}
		for i, emu := range e.Emus {
			if i == 0 {
				continue
			}
			name := fmt.Sprintf("emulator%d", i+1)
			d, err := asterisk.New(asterisk.Config{URL: emu.URL(), User: "convoice", Password: "emu-secret", App: "convoice",
				Routes: routes, RingTimeout: e.opts.RingTimeout, PingInterval: e.opts.PingInterval, RequestTimeout: e.opts.RequestTimeout,
				TalkDetect: true, Logger: e.logger(name)})
			if err != nil {
				t.Fatalf("asterisk driver %s: %v", name, err)
			}
			e.Drivers = append(e.Drivers, d)
			nodes = append(nodes, &controller.Node{Name: name, Weight: 1, Driver: d})
		}
	}
	// One registry for the controller's series and /metrics, so tests can
	// read the metrics the way Prometheus does.
	reg := prometheus.NewRegistry()
	e.Ctl = controller.New(controller.Config{Region: "US", Extensions: e.opts.Extensions, RingTimeout: e.opts.RingTimeout,
		RingGrace: e.opts.RingGrace, ResyncYoungLeg: e.opts.ResyncYoungLeg, NodeLostAfter: e.opts.NodeLostAfter, Policy: e.policy(), Logger: e.logger("controller"),
		Confirm: e.opts.Confirm},
		store, controller.NewHub(), nodes, controller.NewMetrics(reg))
	ncfg := e.opts.Notify
	ncfg.Registerer = reg
	e.Ctl.SetNotify(ncfg)
	e.Ctl.Configure(e.opts.IdentityLimits)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	publicURL := e.opts.PublicURL
	if publicURL == "" && e.opts.Identity.OIDC.Issuer != "" {
		publicURL = "http://" + ln.Addr().String() // the OIDC redirect URL
	}
	srv := api.New(api.Config{PublicURL: publicURL, AdminTokenHash: controller.HashSecret(AdminToken), Heartbeat: time.Second,
		Gatherer: reg, Logger: e.logger("api"), Limits: e.opts.Limits, TrustedProxies: e.opts.TrustedProxies,
		Identity: e.opts.Identity, PrincipalRecheck: e.opts.PrincipalRecheck}, e.Ctl)
	e.listener = ln
	e.URL = "http://" + ln.Addr().String()
	e.srv = srv.HTTPServer()
	go e.srv.Serve(srv.LimitListener(ln))
	go store.ListenEvents(ctx, e.opts.DB, e.Ctl.Hub().Poke, e.Ctl.Hub().PokeAll)
	e.runDone = make(chan struct{})
	go func() { _ = e.Ctl.Run(ctx); close(e.runDone) }()
	if e.Driver != nil {
		e.WaitFor("PBX ready", 10*time.Second, func() bool {
			for _, n := range e.Ctl.PBXStatus() {
				if !n.Status.Ready {
					return false
				}
			}
			return e.Ctl.Ready()
		})
		if e.Store.Dialect() == "postgres" {
			// On PostgreSQL the node runs passive (commands only) until
			// this replica wins its lease, then switches to its event
			// connection; wait for that switch so tests do not dial in its
			// gap. Another replica may hold the lease: then give up after
			// a few lease rounds and stay passive.
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				owned := true
				for _, n := range e.Ctl.PBXStatus() {
					owned = owned && n.Owner && n.Status.Ready
				}
				if owned {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			e.WaitFor("PBX ready", 10*time.Second, func() bool { return e.Ctl.Ready() })
		}
	}
}

// policy is Options.Policy, or the default number rules without limits.
func (e *Env) policy() controller.PolicyConfig {
	if e.opts.Policy != nil {
		return *e.opts.Policy
	}
	off := controller.Unlimited
	return controller.PolicyConfig{MaxLiveLegsPerUser: off, MaxLiveLegsPerGuest: off, MaxLiveLegsPerConversation: off,
		MaxLiveLegs: off, DialsPerUser: off, DialsPerGuest: off, DialsPerConversation: off,
		GuestDialsPerConversation: off, DialsTotal: off, GuestDialsPerLinkMaker: off, MaxJoinLinksPerUser: off,
		MaxGuestsPerLink: off, AccountSharePercent: off}
}

// Stop shuts convoice down (the emulator, if any, keeps its calls).
func (e *Env) Stop() {
	e.stopOnce.Do(func() {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		e.srv.Shutdown(sctx)
		e.cancel()
		<-e.runDone
		e.Store.Close()
	})
}

// Restart stops convoice and starts it again on the same database and
// emulator (a new URL).
func (e *Env) Restart() {
	e.Stop()
	e.Resume()
}

// Resume starts convoice again after Stop, on the same database and
// emulator (a new URL), and waits until the PBX is ready. Between Stop and
// Resume the emulated PBX goes on alone, as it would while convoice is
// killed.
func (e *Env) Resume() {
	e.stopOnce = sync.Once{}
	e.start()
}

// WaitFor polls cond until it holds or fails the test after d.
func (e *Env) WaitFor(what string, d time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Response is an HTTP answer with its body read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v (failing the test on error).
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %q: %v", r.Body, err)
	}
}

// Map decodes the body as a JSON object.
func (r Response) Map(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.JSON(t, &m)
	return m
}

// ErrorCode returns error.code of an error body.
func (r Response) ErrorCode() string {
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &eb)
	return eb.Error.Code
}

// Do sends a request; body is JSON-encoded unless it is a string or []byte.
func (e *Env) Do(method, path, token string, body any, headers ...string) Response {
	e.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("encode: %v", err)
		}
		raw = j
	}
	req, err := http.NewRequest(method, e.URL+path, bytes.NewReader(raw))
	if err != nil {
		e.t.Fatalf("request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	e.validator.Check(e.t, req, raw, resp.StatusCode, resp.Header, b)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Must is Do that fails the test unless the status is want.
func (e *Env) Must(want int, method, path, token string, body any, headers ...string) Response {
	e.t.Helper()
	r := e.Do(method, path, token, body, headers...)
	if r.Status != want {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.Status, want, r.Body)
	}
	return r
}

// User is a test user.
type User struct {
	ID, Token, Name string
}

// AddUser creates a user through the admin API and issues a token.
func (e *Env) AddUser(name string, numbers ...controller.NumberInput) User {
	e.t.Helper()
	email := strings.ToLower(strings.ReplaceAll(name, " ", ".")) + fmt.Sprintf(".%d@example.com", time.Now().UnixNano())
	r := e.Must(201, "POST", "/api/v1/users", AdminToken, map[string]any{"display_name": name, "email": email, "numbers": numbers})
	var u struct{ ID string }
	r.JSON(e.t, &u)
	tr := e.Must(201, "POST", "/api/v1/users/"+u.ID+"/tokens", AdminToken, nil)
	var tok struct{ Token string }
	tr.JSON(e.t, &tok)
	return User{ID: u.ID, Token: tok.Token, Name: name}
}

// LogBuffer collects the log lines of an Env (Options.Logs) safely from
// every goroutine, so a test can search them afterwards.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Event is one SSE event.
type Event struct {
	ID, Type string
	Data     map[string]any
	// Raw is the event's data: line as sent (the whole JSON envelope), for
	// checks on the bytes themselves, such as that a number never reaches a
	// stream in any field.
	Raw []byte
}

// Stream is an open event stream. Events is closed when the stream ends
// (the server ended it, or Close).
type Stream struct {
	Events chan Event
	cancel context.CancelFunc
	done   chan struct{}
}

// Close ends the stream and waits for its reader to stop; the events read
// before stay in Events, so Rest after Close returns them.
func (s *Stream) Close() { s.cancel(); <-s.done }

// StreamOptions tune SubscribePath.
type StreamOptions struct {
	// LastEventID resumes the stream after this event ("": from the start).
	LastEventID string
	// SkipEventCheck turns off the check of every event against
	// api/openapi.yaml (Validator.CheckEvent), which is on by default so
	// that a stream test also proves the document's Event schemas.
	SkipEventCheck bool
}

// SubscribePath opens the event stream at path (a conversation's
// /api/v1/conversations/{id}/events, the guest's /api/v1/guest/events, …)
// with a bearer token, failing the test unless it answers 200. Unless
// opts.SkipEventCheck, every event is checked against the OpenAPI
// document as it arrives; a mismatch is reported with Errorf on the Env's
// test, and the event is delivered all the same.
func (e *Env) SubscribePath(path, token string, opts StreamOptions) *Stream {
	e.t.Helper()
	var v *Validator
	if !opts.SkipEventCheck {
		v = e.validator
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if opts.LastEventID != "" {
		req.Header.Set("Last-Event-ID", opts.LastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		e.t.Fatalf("subscribe %s: %v", path, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		cancel()
		e.t.Fatalf("subscribe %s: status %d", path, resp.StatusCode)
	}
	s := &Stream{Events: make(chan Event, 10000), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		defer close(s.Events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev Event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				// A blank line ends an event; one without an event: field
				// (a heartbeat comment) is nothing to deliver.
				if ev.Type != "" {
					if v != nil {
						v.CheckEvent(e.t, ev.ID, ev.Type, ev.Raw)
					}
					s.Events <- ev
				}
				ev = Event{}
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.Type = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.Raw = []byte(line[6:])
				var env struct {
					Data map[string]any `json:"data"`
				}
				_ = json.Unmarshal(ev.Raw, &env)
				ev.Data = env.Data
			}
		}
	}()
	return s
}

// Subscribe opens a conversation's event stream from lastID ("" = start);
// every event is checked against the OpenAPI document.
func (e *Env) Subscribe(convID, token, lastID string) *Stream {
	e.t.Helper()
	return e.SubscribePath("/api/v1/conversations/"+convID+"/events", token,
		StreamOptions{LastEventID: lastID})
}

// Next waits for the next event matching match (nil: any), failing after d
// or when the stream ends first.
func (s *Stream) Next(t testing.TB, d time.Duration, match func(Event) bool) Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				t.Fatalf("event stream closed")
			}
			if match == nil || match(ev) {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no matching event within %s", d)
		}
	}
}

// Rest returns every event left until the stream ends (the server ends it,
// or it was closed), failing when it has not ended after d.
func (s *Stream) Rest(t testing.TB, d time.Duration) []Event {
	t.Helper()
	var out []Event
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-timer.C:
			t.Fatalf("the stream did not end within %s (got %d more events)", d, len(out))
		}
	}
}

// Kind is the emulated PBX kind of this environment.
func (e *Env) Kind() string {
	if e.ESL != nil {
		return "freeswitch"
	}
	return "asterisk"
}

// PBXCalls counts the calls the emulated PBX holds now.
func (e *Env) PBXCalls() int {
	if e.ESL != nil {
		return len(e.ESL.Channels())
	}
	return len(e.Emu.Channels())
}

// PBXRooms lists, per mixing room (bridge or conference) on the emulated
// PBX, how many calls are in it.
func (e *Env) PBXRooms() []int {
	var out []int
	if e.ESL != nil {
		for _, c := range e.ESL.Conferences() {
			out = append(out, len(c.Members))
		}
		return out
	}
	for _, b := range e.Emu.Bridges() {
		out = append(out, len(b.ChannelIDs))
	}
	return out
}

// PBXMuted reports whether the emulated PBX has leg muted (what it says
// into the conference).
func (e *Env) PBXMuted(legID string) bool {
	if e.ESL != nil {
		for _, c := range e.ESL.Channels() {
			if c.UUID == legID {
				return c.Muted
			}
		}
		return false
	}
	for _, ch := range e.Emu.Channels() {
		if ch.ID == legID {
			return ch.MutedIn
		}
	}
	return false
}

// PBXResetRequests forgets what the emulated PBX was asked so far.
func (e *Env) PBXResetRequests() {
	if e.ESL != nil {
		e.eslMark = len(e.ESL.Commands())
		return
	}
	e.Emu.ResetRequests()
}

// PBXOriginates counts originate requests since PBXResetRequests.
func (e *Env) PBXOriginates() int {
	n := 0
	if e.ESL != nil {
		for _, c := range e.ESL.Commands()[e.eslMark:] {
			if strings.Contains(c, "originate") {
				n++
			}
		}
		return n
	}
	for _, req := range e.Emu.Requests() {
		if req.Method == "POST" && strings.HasPrefix(req.Path, "/ari/channels") &&
			strings.Count(strings.TrimPrefix(req.Path, "/ari/channels"), "/") <= 1 {
			n++
		}
	}
	return n
}

// PBXWrites counts requests that could place or change a call since
// PBXResetRequests (everything but reads and pings).
func (e *Env) PBXWrites() int {
	n := 0
	if e.ESL != nil {
		for _, c := range e.ESL.Commands()[e.eslMark:] {
			if strings.Contains(c, "originate") || strings.Contains(c, "uuid_") || strings.Contains(c, "conference") && !strings.Contains(c, "list") {
				n++
			}
		}
		return n
	}
	for _, req := range e.Emu.Requests() {
		if req.Method != "GET" {
			n++
		}
	}
	return n
}

// PBXLeg is one call on the emulated PBX.
type PBXLeg struct {
	ID       string
	Answered bool   // the far end picked up
	Room     string // the bridge / conference it is in ("" when none)
}

// PBXLegs lists the calls the emulated PBX holds now, by id (our leg id).
func (e *Env) PBXLegs() map[string]PBXLeg {
	out := map[string]PBXLeg{}
	if e.ESL != nil {
		for _, c := range e.ESL.Channels() {
			out[c.UUID] = PBXLeg{ID: c.UUID, Answered: c.Answered, Room: c.Conference}
		}
		return out
	}
	for _, c := range e.Emu.Channels() {
		out[c.ID] = PBXLeg{ID: c.ID, Answered: c.State == "Up", Room: c.BridgeID}
	}
	return out
}

// PBXRoomIDs lists the mixing rooms (bridges / conferences) on the emulated
// PBX by id (our conference id).
func (e *Env) PBXRoomIDs() []string {
	var out []string
	if e.ESL != nil {
		for _, c := range e.ESL.Conferences() {
			out = append(out, c.Name)
		}
		return out
	}
	for _, b := range e.Emu.Bridges() {
		out = append(out, b.ID)
	}
	return out
}

// PBXDropLink cuts convoice's event connection the way a network does
// (ARI: the websockets end with a bare TCP close; ESL: the sockets close);
// calls go on.
func (e *Env) PBXDropLink() {
	if e.ESL != nil {
		e.ESL.DropConnections()
		return
	}
	e.Emu.DropWebsockets()
}

// PBXUnresponsive switches the emulated PBX's half-open mode: connections
// stay open but nothing is answered; calls go on.
func (e *Env) PBXUnresponsive(on bool) {
	if e.ESL != nil {
		e.ESL.SetUnresponsive(on)
		return
	}
	e.Emu.SetUnresponsive(on)
}

// PBXRestart restarts the emulated PBX: graceful (Asterisk `core restart
// now`, FreeSWITCH SIGTERM: every call hung up with its events) or a crash
// (SIGKILL: the connection just ends). Every call and room is gone after.
func (e *Env) PBXRestart(graceful bool) {
	switch {
	case e.ESL != nil && graceful:
		e.ESL.Restart()
	case e.ESL != nil:
		e.ESL.RestartHard()
	case graceful:
		e.Emu.Restart()
	default:
		e.Emu.Crash()
	}
}

// PBXFarEndHangup makes the phone of an answered call hang up.
func (e *Env) PBXFarEndHangup(legID string) error {
	if e.ESL != nil {
		return e.ESL.FarEndHangup(legID)
	}
	return e.Emu.FarEndHangup(legID)
}

// FreshPostgres creates an empty database on the server of dsn (the suite
// runs a second time on PostgreSQL with CONVOICE_TEST_POSTGRES set), drops
// it when the test ends, and returns its DSN.
func FreshPostgres(t testing.TB, dsn string) string {
	t.Helper()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	name := fmt.Sprintf("t_%d_%d", time.Now().UnixNano(), os.Getpid())
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatalf("create database: %v", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("CONVOICE_TEST_POSTGRES: %v", err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	})
	return u.String()
}

// Postgres returns the DSN of an empty PostgreSQL database for a test that
// needs one whatever the suite runs on: a fresh database on
// CONVOICE_TEST_POSTGRES when set, else on a throw-away cluster started
// with lab/pg-test-cluster.sh (Debian's postgresql package must be
// installed: .ci/run installs it).
func Postgres(t testing.TB) string {
	t.Helper()
	if pg := os.Getenv("CONVOICE_TEST_POSTGRES"); pg != "" {
		return FreshPostgres(t, pg)
	}
	script, err := filepath.Abs(filepath.Join(repoRoot(t), "lab", "pg-test-cluster.sh"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("convoice-pg-%d-%d", os.Getpid(), time.Now().UnixNano()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	out, err := exec.Command("bash", script, "start", dir, strconv.Itoa(port)).CombinedOutput()
	if err != nil {
		t.Fatalf("cannot start a PostgreSQL for this test (apt-get install -y postgresql): %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("bash", script, "stop", dir).Run() })
	return strings.TrimSpace(string(out))
}

func repoRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}
