package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/ariemu"
	"github.com/convoice/convoice/internal/gctune"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/asterisk"
	"github.com/convoice/convoice/pbx/freeswitch"
	"github.com/convoice/convoice/storage"
)

func newLogger(format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// buildNodes makes the PBX drivers the configuration asks for. With the
// emulator, an ARI emulator is started in this process on a loopback port
// and driven by the real Asterisk driver over real HTTP and websocket, so
// the demo exercises the same code as production.
func buildNodes(ctx context.Context, cfg config, lg *slog.Logger) ([]*controller.Node, func(), error) {
	routes, err := pbx.ParseRoutes(cfg.DialRoutes)
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() {}
	astDriver := func(name, url, user, pass string) (pbx.Driver, error) {
		return asterisk.New(asterisk.Config{URL: url, User: user, Password: pass, App: cfg.ARIApp, Routes: routes, TLS: cfg.ARITLS,
			RingTimeout: cfg.RingTimeout, TalkDetect: true, Logger: lg.With("node", name)})
	}
	fsDriver := func(name, addr, pass string) (pbx.Driver, error) {
		return freeswitch.New(freeswitch.Config{Addr: addr, Password: pass, Routes: routes,
			RingTimeout: cfg.RingTimeout, Logger: lg.With("node", name)})
	}
	if cfg.PBXNodes != "" {
		specs, err := parseNodes(cfg.PBXNodes)
		if err != nil {
			return nil, nil, err
		}
		var nodes []*controller.Node
		for _, s := range specs {
			var d pbx.Driver
			switch s.Kind {
			case "asterisk":
				d, err = astDriver(s.Name, s.Address, s.User, s.Password)
			case "freeswitch":
				d, err = fsDriver(s.Name, s.Address, s.Password)
			default:
				err = fmt.Errorf("node %s: kind %s is not supported in CONVOICE_PBX_NODES", s.Name, s.Kind)
			}
			if err != nil {
				return nil, nil, err
			}
			nodes = append(nodes, &controller.Node{Name: s.Name, Weight: s.Weight, Driver: d})
		}
		return nodes, cleanup, nil
	}
	switch cfg.PBX {
	case "asterisk":
		d, err := astDriver("asterisk", cfg.ARIURL, cfg.ARIUser, cfg.ARIPassword)
		if err != nil {
			return nil, nil, err
		}
		return []*controller.Node{{Name: "asterisk", Weight: 1, Driver: d}}, cleanup, nil
	case "freeswitch":
		d, err := fsDriver("freeswitch", cfg.ESLAddr, cfg.ESLPassword)
		if err != nil {
			return nil, nil, err
		}
		return []*controller.Node{{Name: "freeswitch", Weight: 1, Driver: d}}, cleanup, nil
	}
	// emulator
	pass := controller.NewSecret()
	emu := ariemu.New(ariemu.Config{User: "convoice", Password: pass, Logger: lg.With("component", "ari-emulator")})
	if err := emu.Start("127.0.0.1:0"); err != nil {
		return nil, nil, fmt.Errorf("start the PBX emulator: %w", err)
	}
	lg.Warn("*** NO REAL PBX: calls go to the built-in Asterisk emulator; no phone will really ring ***",
		"ari_url", emu.URL(), "hint", "set CONVOICE_PBX=asterisk (or freeswitch) to use a real PBX")
	d, err := astDriver("emulator", emu.URL(), "convoice", pass)
	if err != nil {
		emu.Close()
		return nil, nil, err
	}
	return []*controller.Node{{Name: "emulator", Weight: 1, Driver: d}}, func() { emu.Close() }, nil
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	lg := newLogger(cfg.LogFormat, cfg.LogLevel)
	slog.SetDefault(lg)
	gc := gctune.Apply()
	lg.Info("garbage collector", "gogc", gc.Percent, "gogc_from", gc.PercentFrom, "memory_limit_mib", gc.Limit>>20, "memory_limit_from", gc.LimitFrom)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	store, err := storage.Open(ctx, cfg.DB, storage.Options{Logger: lg, LeaseRegain: cfg.LeaseRegain})
	if err != nil {
		return err
	}
	defer store.Close()
	lg.Info("database ready", "dialect", store.Dialect(), "db", redactDSN(cfg.DB))

	nodes, cleanup, err := buildNodes(ctx, cfg, lg)
	if err != nil {
		return err
	}
	defer cleanup()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var ext *regexp.Regexp
	if cfg.Extensions != "" {
		ext = regexp.MustCompile(cfg.Extensions)
	}
	ctl := controller.New(controller.Config{Region: cfg.Region, Extensions: ext, CallerIDName: cfg.CallerName,
		CallerIDNumber: cfg.CallerNum, RingTimeout: cfg.RingTimeout, NodeLostAfter: cfg.NodeLostAfter, Policy: cfg.Policy, Logger: lg,
		IdempotencyRetention: cfg.IdempotencyRetention, Confirm: cfg.Confirm},
		store, controller.NewHub(), nodes, controller.NewMetrics(reg))
	ncfg, err := notifyConfig(reg)
	if err != nil {
		return err
	}
	ctl.SetNotify(ncfg)

	if cfg.PBX == "emulator" && cfg.PBXNodes == "" && !cfg.NoSeed {
		n, err := store.CountUsers(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			if err := seedDemo(ctx, ctl, cfg.PublicURL, os.Stdout); err != nil {
				return fmt.Errorf("seed demo directory: %w", err)
			}
		}
	}

	adminHash := ""
	if cfg.AdminToken != "" {
		adminHash = controller.HashSecret(cfg.AdminToken)
	} else {
		lg.Info("no CONVOICE_ADMIN_TOKEN: the admin API is closed (use `convoice user add` on this machine)")
	}
	ctl.Configure(cfg.Identity.Limits)
	metricsHash := ""
	if cfg.MetricsToken != "" {
		metricsHash = controller.HashSecret(cfg.MetricsToken)
	}
	srv := api.New(api.Config{AdminTokenHash: adminHash, PublicURL: cfg.PublicURL, TrustedProxies: cfg.TrustedProxies,
		Gatherer: reg, Logger: lg, Limits: cfg.Limits, MetricsTokenHash: metricsHash, MetricsElsewhere: cfg.MetricsListen != "",
		Identity: cfg.Identity.API}, ctl)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	httpSrv := srv.HTTPServer()
	// With several replicas on one PostgreSQL, every replica's event
	// streams hear of what the others committed.
	go store.ListenEvents(ctx, ctl.Hub().Poke, ctl.Hub().PokeAll)
	if cfg.Identity.LDAP.URL != "" {
		go ldapLoop(ctx, ctl, cfg.Identity.LDAP, lg)
	}
	runDone := make(chan struct{})
	go func() {
		_ = ctl.Run(ctx)
		close(runDone)
	}()
	go func() {
		if err := httpSrv.Serve(srv.LimitListener(ln)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lg.Error("http server stopped", "err", err)
			stop()
		}
	}()
	lg.Info("convoice is listening", "url", "http://"+ln.Addr().String(), "pbx", cfg.PBX)
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("CONVOICE_METRICS_LISTEN: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.MetricsHandler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
		go func() { _ = msrv.Serve(mln) }()
		defer msrv.Close()
		lg.Info("metrics are served on their own address", "url", "http://"+mln.Addr().String()+"/metrics")
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-sigs:
		lg.Info("stopping", "signal", sig.String())
		if sig == syscall.SIGTERM {
			// Drain: refuse new dial requests, let the ones in flight
			// finish; calls stay up on the PBX and the next start resyncs.
			dctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			ctl.Drain(dctx)
			cancel()
		}
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = httpSrv.Shutdown(sctx)
	cancel()
	stop()
	select {
	case <-runDone:
	case <-time.After(5 * time.Second):
	}
	return nil
}

// redactDSN hides the passwords of a database DSN in log lines: the
// password of a URL's user info (also one with "/" or "@" in it), and
// password-like parameters (password=, sslpassword=, _auth_pass=, …) of a
// URL query or a key=value DSN, quoted or not. Whatever the DSN's kind.
func redactDSN(dsn string) string {
	out := dsn
	if i := strings.Index(out, "://"); i >= 0 {
		rest := out[i+3:]
		q := strings.IndexAny(rest, "?")
		if q < 0 {
			q = len(rest)
		}
		if at := strings.LastIndex(rest[:q], "@"); at >= 0 {
			if user, _, hasPass := strings.Cut(rest[:at], ":"); hasPass {
				out = out[:i+3] + user + ":***" + rest[at:]
			}
		}
	}
	return dsnSecretParam.ReplaceAllString(out, "${1}***")
}

var dsnSecretParam = regexp.MustCompile(`(?i)((?:^|[?&;\s])[a-z0-9_]*(?:pass|pwd|secret|token)[a-z0-9_]*\s*=\s*)('[^']*'|"[^"]*"|[^&;\s]*)`)
