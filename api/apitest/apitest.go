// Package apitest starts a whole convoice for tests: a real SQLite file, the
// ARI emulator on a loopback port, the real Asterisk driver talking to it
// over HTTP and websocket, the controller, and the HTTP API on a real
// listener. Tests then speak plain HTTP to it, as any client would.
package apitest

import (
	"context"
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
	"github.com/convoice/convoice/storage/pgtest"
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
	// LeaseRegain: storage.Options.LeaseRegain (0: its default).
	LeaseRegain time.Duration
	// HandoverAfter: controller.Config.HandoverAfter (0: its default).
	HandoverAfter time.Duration
	// ESLEmu is an already running event-socket emulator to use (PBX
	// "freeswitch"; default: a new one), for a second replica.
	ESLEmu *eslemu.Server
	// PBXVia, when set, gives the address (host:port) this replica's
	// driver uses for the emulated PBX at addr: a TCPRoute in front of
	// it, so that a test can cut this replica alone off from the PBX.
	PBXVia func(addr string) string
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
		if opts.ESLEmu != nil {
			e.ESL = opts.ESLEmu
		} else {
			e.ESL = eslemu.New(eslemu.Config{Timing: opts.Timing, Logger: e.logger("esl-emulator")})
			if err := e.ESL.Start("127.0.0.1:0"); err != nil {
				t.Fatalf("start event-socket emulator: %v", err)
			}
			e.ownsEmu = true
		}
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
		if e.ownsEmu && e.ESL != nil {
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
	store, err := storage.Open(ctx, e.opts.DB, storage.Options{Logger: e.logger("storage"), WriteFault: e.opts.WriteFault,
		LeaseRegain: e.opts.LeaseRegain})
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
		addr := e.ESL.Addr()
		if e.opts.PBXVia != nil {
			addr = e.opts.PBXVia(addr)
		}
		d, err := freeswitch.New(freeswitch.Config{Addr: addr, Password: "ClueCon", Routes: routes,
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
		if e.opts.PBXVia != nil {
			u, err := url.Parse(ariURL)
			if err != nil {
				t.Fatal(err)
			}
			u.Host = e.opts.PBXVia(u.Host)
			ariURL = u.String()
		}
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
		RingGrace: e.opts.RingGrace, ResyncYoungLeg: e.opts.ResyncYoungLeg, NodeLostAfter: e.opts.NodeLostAfter, HandoverAfter: e.opts.HandoverAfter, Policy: e.policy(), Logger: e.logger("controller"),
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
	go store.ListenEvents(ctx, e.Ctl.Hub().Poke, e.Ctl.Hub().PokeAll)
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

// FreshPostgres creates an empty database on the server of dsn (the suite
// runs a second time on PostgreSQL with CONVOICE_TEST_POSTGRES set), drops
// it when the test ends, and returns its DSN.
func FreshPostgres(t testing.TB, dsn string) string {
	t.Helper()
	return pgtest.Fresh(t, dsn)
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
	dsn, _ := PrivatePostgres(t)
	return dsn
}

// PrivatePostgres starts a throw-away PostgreSQL cluster of the test's own
// (lab/pg-test-cluster.sh; Debian's postgresql package must be installed:
// .ci/run installs it) and returns the DSN of its empty database and a
// restart that stops the server (a fast shutdown ends every session),
// keeps it down for down (a failover's gap) and starts it again, for a
// test of a database restart: a shared one (CONVOICE_TEST_POSTGRES) must
// not be restarted under the other suites.
func PrivatePostgres(t testing.TB) (dsn string, restart func(down time.Duration)) {
	t.Helper()
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
	run := func(cmd string) {
		t.Helper()
		if out, err := exec.Command("bash", script, cmd, dir).CombinedOutput(); err != nil {
			t.Fatalf("PostgreSQL %s: %v\n%s", cmd, err, out)
		}
	}
	return strings.TrimSpace(string(out)), func(down time.Duration) {
		t.Helper()
		if down <= 0 {
			run("restart")
			return
		}
		run("down")
		time.Sleep(down)
		run("up")
	}
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
