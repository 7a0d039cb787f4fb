// Package api is convoice's HTTP face: the REST API under /api/v1 (echo),
// its OpenAPI description, the conversation event streams (SSE), health
// and metrics, and the embedded web UI. It turns HTTP into controller calls
// and controller errors into HTTP answers; it holds no behaviour of its own.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoice/convoice/controller"
)

// Config is the HTTP layer's settings.
type Config struct {
	// AdminTokenHash is the SHA-256 (hex) of the admin token; "" closes the
	// admin API.
	AdminTokenHash string
	// PublicURL is the base URL people reach convoice at (join links).
	PublicURL string
	// Gatherer serves /metrics (nil: prometheus.DefaultGatherer).
	Gatherer prometheus.Gatherer
	// MetricsTokenHash, when set, is the SHA-256 (hex) of the bearer token
	// /metrics asks for; MetricsElsewhere leaves /metrics off this handler
	// (served on its own listen address: MetricsHandler).
	MetricsTokenHash string
	MetricsElsewhere bool
	// TrustedProxies are the address ranges of reverse proxies whose
	// X-Forwarded-For names the client. Empty: the connection's peer is the
	// client, and no header can change that (rate limits, audit).
	TrustedProxies []*net.IPNet
	// Heartbeat is the SSE keep-alive comment interval (default 15 s).
	Heartbeat time.Duration
	// Limits bound connections and event streams (limits.go).
	Limits Limits
	Logger *slog.Logger
	// Identity is sign-in by OpenID Connect and SCIM provisioning
	// (identity.go); zero: neither.
	Identity IdentityConfig
	// PrincipalRecheck is how often an open event stream checks that its
	// token or session is still good and its person active (default 5 s;
	// revocations made in this process reach streams at once).
	PrincipalRecheck time.Duration
}

// Server is the HTTP handler.
type Server struct {
	cfg  Config
	ctl  *controller.Controller
	echo *echo.Echo
	log  *slog.Logger

	authLog        authLogLimit // failed authentications, logged at a rate
	streams        *streamGate
	streamsRefused prometheus.Counter
	id             *identityServer // identity.go
}

// New builds the handler with every route.
func New(cfg Config, ctl *controller.Controller) *Server {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.DefaultGatherer
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.PrincipalRecheck <= 0 {
		cfg.PrincipalRecheck = 5 * time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	s := &Server{cfg: cfg, ctl: ctl, echo: e, log: lg, streams: newStreamGate(cfg.Limits),
		streamsRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "convoice_event_streams_refused_total",
			Help: "Event streams refused because a cap (per person, per address, in all) was full."})}
	if r, ok := cfg.Gatherer.(prometheus.Registerer); ok {
		_ = r.Register(s.streamsRefused)
	}
	s.initIdentity()
	e.HTTPErrorHandler = s.errorHandler
	e.IPExtractor = echo.ExtractIPDirect()
	if len(cfg.TrustedProxies) > 0 {
		var opts []echo.TrustOption
		opts = append(opts, echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false))
		for _, n := range cfg.TrustedProxies {
			opts = append(opts, echo.TrustIPRange(n))
		}
		e.IPExtractor = echo.ExtractIPFromXFFHeader(opts...)
	}
	e.Use(s.recoverer, s.accessLog, s.securityHeaders)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	if !cfg.MetricsElsewhere {
		e.GET("/metrics", echo.WrapHandler(s.MetricsHandler()))
	}
	e.GET("/api/openapi.yaml", s.openAPI)

	v1 := e.Group("/api/v1")
	v1.POST("/session", s.createSession)
	// Signing out needs no valid token: a revoked one must still be able
	// to clear its cookie.
	v1.DELETE("/session", s.deleteSession)
	authed := v1.Group("", s.authenticate)
	authed.GET("/session", s.getSession)

	authed.POST("/users", s.createUser)
	authed.GET("/users", s.listUsers)
	authed.POST("/users/:id/tokens", s.issueToken)
	authed.DELETE("/users/:id/tokens/:token_id", s.revokeToken)
	authed.GET("/users/:id/tokens", s.listTokens)

	authed.GET("/me", s.me)
	authed.PUT("/me/numbers", s.setNumbers)
	authed.PUT("/me/contacts", s.setContacts)

	authed.GET("/conversations", s.listConversations)
	authed.POST("/conversations", s.createConversation)
	authed.GET("/conversations/:id", s.getConversation)
	authed.POST("/conversations/:id/participants", s.addParticipants)
	authed.DELETE("/conversations/:id/participants/me", s.leaveConversation)
	authed.PUT("/conversations/:id/presenter", s.startPresenting)
	authed.DELETE("/conversations/:id/presenter", s.stopPresenting)
	authed.GET("/conversations/:id/messages", s.listMessages)
	authed.POST("/conversations/:id/messages", s.postMessage)
	authed.GET("/conversations/:id/events", s.events)

	authed.POST("/conversations/:id/audio", s.joinAudio)
	authed.GET("/conversations/:id/audio", s.getAudio)
	authed.DELETE("/conversations/:id/audio", s.endAudio)
	authed.POST("/conversations/:id/audio/invitations", s.inviteSomeone)

	authed.GET("/invitations", s.myInvitations)
	authed.POST("/invitations/:id/accept", s.acceptInvitation)
	authed.POST("/invitations/:id/decline", s.declineInvitation)
	authed.POST("/invitations/:id/redirect", s.redirectInvitation)

	authed.POST("/legs/:id/mute", s.muteLeg)
	authed.POST("/legs/:id/unmute", s.unmuteLeg)
	authed.DELETE("/legs/:id", s.hangupLeg)

	authed.GET("/pbx", s.pbxStatus)

	s.mountJoinLinks(e, v1, authed)
	s.mountAdmin(authed)
	s.mountNotify(v1, authed)
	s.mountIdentity(e, v1)
	s.mountWeb(e)
	return s
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Routes lists every registered method and path (the OpenAPI test checks
// each is described).
func (s *Server) Routes() []*echo.Route { return s.echo.Routes() }

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers whether this replica can serve: its database answers and
// it is not shutting down. A PBX that is down does not make it unready —
// chat, join pages and event streams go on, and dial requests answer 503
// pbx_unavailable by themselves — so that a PBX outage never takes every
// replica out of a load balancer. The PBX nodes' state is in the body
// (pbx_ready, pbx) and in /metrics.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	dbErr := s.ctl.Store().Ping(ctx)
	draining := s.ctl.Draining()
	ready := dbErr == nil && !draining
	body := map[string]any{"ready": ready, "database": "ok", "draining": draining,
		"pbx_ready": s.ctl.Ready(), "pbx": s.ctl.PBXStatus()}
	if dbErr != nil {
		body["database"] = dbErr.Error()
	}
	status := http.StatusOK
	if !ready {
		status = http.StatusServiceUnavailable
	}
	return c.JSON(status, body)
}

func (s *Server) pbxStatus(c echo.Context) error {
	if !actorOf(c).Admin {
		return &controller.Error{Kind: controller.KindForbidden, Code: "admin_only", Message: "this needs the admin role"}
	}
	return c.JSON(http.StatusOK, map[string]any{"nodes": s.ctl.PBXStatus()})
}

// errorBody is the one error shape: {"error": {"code", "message", "field"?}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

var kindStatus = map[controller.Kind]int{
	controller.KindInvalid:      http.StatusBadRequest,
	controller.KindUnauthorized: http.StatusUnauthorized,
	controller.KindForbidden:    http.StatusForbidden,
	controller.KindNotFound:     http.StatusNotFound,
	controller.KindConflict:     http.StatusConflict,
	controller.KindRateLimited:  http.StatusTooManyRequests,
	controller.KindPBXRefused:   http.StatusBadGateway,
	controller.KindUnavailable:  http.StatusServiceUnavailable,
}

// errorStatus maps any error onto a status and body.
func errorStatus(err error) (int, errorBody) {
	if ce, ok := controller.AsError(err); ok {
		st := kindStatus[ce.Kind]
		if st == 0 {
			st = http.StatusInternalServerError
		}
		return st, errorBody{errorDetail{Code: ce.Code, Message: ce.Message, Field: ce.Field}}
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code := map[int]string{404: "not_found", 405: "method_not_allowed", 413: "body_too_large", 401: "unauthorized"}[he.Code]
		if code == "" {
			code = "http_" + http.StatusText(he.Code)
		}
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok && m != "" {
			msg = m
		}
		if he.Code == http.StatusNotFound {
			msg = "no such route"
		}
		return he.Code, errorBody{errorDetail{Code: code, Message: msg}}
	}
	if errors.Is(err, controller.ErrStorageFull) {
		return http.StatusInsufficientStorage, errorBody{errorDetail{Code: "storage_full",
			Message: "the server's storage is full: nothing was saved; try again in a while (the operators have been told)"}}
	}
	if controller.DatabaseUnreachable(err) {
		return http.StatusServiceUnavailable, errorBody{errorDetail{Code: "database_unavailable",
			Message: "the database is not reachable right now; try again shortly (what this request did may not have been saved)"}}
	}
	if errors.Is(err, context.Canceled) {
		return 499, errorBody{errorDetail{Code: "client_gone", Message: "the request was cancelled"}}
	}
	return http.StatusInternalServerError, errorBody{errorDetail{Code: "internal", Message: "something went wrong on our side; it has been logged"}}
}

func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, body := errorStatus(err)
	if status >= 500 {
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Path(), "status", status, "err", err)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, body)
}

func (s *Server) recoverer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in handler", "path", c.Path(), "panic", r)
				err = errors.New("panic")
			}
		}()
		return next(c)
	}
}

// accessLog logs one line per request: method, route pattern (never the
// raw URL, which could carry a join-link token), status, duration.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		status := c.Response().Status
		if err != nil {
			status, _ = errorStatus(err)
		}
		s.log.Debug("http", "method", c.Request().Method, "route", c.Path(), "status", status, "ms", time.Since(start).Milliseconds())
		return err
	}
}

func (s *Server) securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		return next(c)
	}
}

// secureCookies says whether cookies get the Secure flag: over HTTPS, or
// when convoice is published at an https:// URL (behind a TLS-terminating
// proxy whose address echo does not trust for X-Forwarded-Proto).
func (s *Server) secureCookies(c echo.Context) bool {
	return c.Scheme() == "https" || strings.HasPrefix(s.cfg.PublicURL, "https://")
}

// writeJSON answers with a pre-marshalled body.
func writeJSON(c echo.Context, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.JSONBlob(status, b)
}
