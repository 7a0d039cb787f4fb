package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/leg"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// loadOpenAPI parses and validates the served document.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPIDocument())
	if err != nil {
		t.Fatalf("parse api/openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("api/openapi.yaml is not valid OpenAPI 3: %v", err)
	}
	return doc
}

// newServer builds the real HTTP handler over a temporary SQLite file and a
// controller with the given PBX nodes (none: dial requests answer 503).
func newServer(t *testing.T, nodes ...*controller.Node) (*api.Server, *controller.Controller) {
	t.Helper()
	ctx := context.Background()
	store, err := storage.Open(ctx, filepath.Join(t.TempDir(), "convoice.db"), storage.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	ctl := controller.New(controller.Config{Region: "US"}, store, controller.NewHub(), nodes, nil)
	srv := api.New(api.Config{AdminTokenHash: controller.HashSecret(apitest.AdminToken),
		Gatherer: prometheus.NewRegistry(), Heartbeat: time.Second}, ctl)
	return srv, ctl
}

// route is one method and path in OpenAPI form ("/users/{id}").
type route struct{ Method, Path string }

func (r route) String() string { return r.Method + " " + r.Path }

// openAPIPath turns an echo path into its OpenAPI template: ":id" becomes
// "{id}" and the trailing wildcard "*" becomes "{path}".
func openAPIPath(echoPath string) string {
	segs := strings.Split(echoPath, "/")
	for i, s := range segs {
		switch {
		case strings.HasPrefix(s, ":"):
			segs[i] = "{" + s[1:] + "}"
		case s == "*":
			segs[i] = "{path}"
		}
	}
	return strings.Join(segs, "/")
}

// serverRoutes lists the handler's routes in OpenAPI form, leaving out
// echo's internal catch-alls (the not-found routes a group with middleware
// registers).
func serverRoutes(srv *api.Server) []route {
	var out []route
	for _, r := range srv.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		out = append(out, route{Method: r.Method, Path: openAPIPath(r.Path)})
	}
	return out
}

// routeCoverage compares routes with the document: undescribed are routes
// with no operation in it, unrouted are operations no route serves.
func routeCoverage(doc *openapi3.T, routes []route) (undescribed, unrouted []string) {
	served := map[route]bool{}
	for _, r := range routes {
		served[r] = true
	}
	described := map[route]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			described[route{Method: strings.ToUpper(method), Path: path}] = true
		}
	}
	for r := range served {
		if !described[r] {
			undescribed = append(undescribed, r.String())
		}
	}
	for r := range described {
		if !served[r] {
			unrouted = append(unrouted, r.String())
		}
	}
	sort.Strings(undescribed)
	sort.Strings(unrouted)
	return undescribed, unrouted
}

// TestOpenAPIDocument checks the document is valid OpenAPI 3 and keeps its
// own rules: every authenticated operation documents 401, every
// state-changing one the CSRF header and its 403, every dial request the
// Idempotency-Key header, and every JSON answer has a schema.
func TestOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi: %q, want 3.0.3", doc.OpenAPI)
	}
	for _, name := range []string{"bearerAuth", "cookieAuth"} {
		if doc.Components.SecuritySchemes[name] == nil {
			t.Errorf("security scheme %s missing", name)
		}
	}
	for _, name := range []string{"User", "Number", "Contact", "Conversation", "Participant", "Message", "MessagePage",
		"Conference", "ConferenceRef", "Leg", "Invitation", "JoinResult", "InvitationResult", "Session", "Error", "Event"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("schema %s missing", name)
		}
	}
	enum := func(schema string) []string {
		var out []string
		for _, v := range doc.Components.Schemas[schema].Value.Enum {
			out = append(out, v.(string))
		}
		return out
	}
	if got, want := enum("LegState"), leg.States; !slices.Equal(got, want) {
		t.Errorf("leg states %v, want %v", got, want)
	}
	if got, want := enum("InvitationState"), []string{"pending", "accepted", "declined", "redirected", "cancelled", "expired"}; !slices.Equal(got, want) {
		t.Errorf("invitation states %v, want %v", got, want)
	}
	if p := doc.Components.Schemas["Conversation"].Value.Properties["presenter_id"]; p == nil || !p.Value.Nullable {
		t.Errorf("Conversation.presenter_id must be nullable")
	}

	dial := map[string]bool{
		"POST /api/v1/conversations/{id}/audio":    true,
		"POST /api/v1/invitations/{id}/accept":     true,
		"POST /api/v1/invitations/{id}/redirect":   true,
		"GET /api/v1/conversations/{id}/events":    false,
		"GET /api/v1/conversations/{id}/messages":  false,
		"DELETE /api/v1/conversations/{id}/audio":  false,
		"POST /api/v1/conversations/{id}/messages": false,
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			authed := op.Security == nil || len(*op.Security) > 0
			// SCIM clients send their bearer token, never a cookie: no
			// CSRF rules there.
			scimOnly := op.Security != nil && len(*op.Security) == 1 && (*op.Security)[0]["scimBearer"] != nil
			if authed && op.Responses.Status(401) == nil {
				t.Errorf("%s: authenticated but no 401 documented", name)
			}
			if strings.HasPrefix(path, "/api/v1/") && op.Responses.Status(500) == nil {
				t.Errorf("%s: no 500 documented (any /api/v1 call can fail on our side)", name)
			}
			if authed && !strings.HasPrefix(path, "/api/v1/") && !(scimOnly && strings.HasPrefix(path, "/scim/v2/")) {
				t.Errorf("%s: only /api/v1 (and /scim/v2, with the SCIM token) needs authentication", name)
			}
			hasParam := func(in, pname string) bool {
				for _, p := range append(slices.Clone(item.Parameters), op.Parameters...) {
					if p.Value.In == in && p.Value.Name == pname {
						return true
					}
				}
				return false
			}
			if authed && !scimOnly && method != http.MethodGet {
				if !hasParam("header", "X-CSRF-Token") {
					t.Errorf("%s: state-changing with cookie auth but no X-CSRF-Token header parameter", name)
				}
				if op.Responses.Status(403) == nil {
					t.Errorf("%s: state-changing with cookie auth but no 403 (csrf) documented", name)
				}
			}
			if want, ok := dial[name]; ok && hasParam("header", "Idempotency-Key") != want {
				t.Errorf("%s: Idempotency-Key documented %v, want %v", name, !want, want)
			}
			for code, ref := range op.Responses.Map() {
				for ct, mt := range ref.Value.Content {
					if mt.Schema == nil {
						t.Errorf("%s %s %s: no schema", name, code, ct)
					}
				}
			}
		}
	}
	events := doc.Paths.Value("/api/v1/conversations/{id}/events").Get
	if events.Responses.Status(200).Value.Content.Get("text/event-stream") == nil {
		t.Errorf("events: 200 is not text/event-stream")
	}
	for _, typ := range []string{"conversation.created", "participant.joined", "participant.left", "presenter.changed",
		"message.created", "audio.started", "audio.ended", "leg.updated", "invitation.updated"} {
		if !strings.Contains(events.Description, "`"+typ+"`") {
			t.Errorf("events: event type %s not described", typ)
		}
	}
}

// TestOpenAPIDescribesEveryRoute fails when a route is added to the server
// without being described, or the document describes a route that does not
// exist.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc := loadOpenAPI(t)
	srv, _ := newServer(t)
	routes := serverRoutes(srv)
	if len(routes) < 30 {
		t.Fatalf("only %d routes found: %v", len(routes), routes)
	}
	undescribed, unrouted := routeCoverage(doc, routes)
	for _, r := range undescribed {
		t.Errorf("route %s is not described in api/openapi.yaml", r)
	}
	for _, r := range unrouted {
		t.Errorf("api/openapi.yaml describes %s, which the server does not route", r)
	}
}

// TestOpenAPIRouteCheckReportsMismatches proves the coverage check bites,
// independently of today's routes: starting from a route list that matches
// the document exactly, an extra undescribed route and a described
// operation with no route are both reported.
func TestOpenAPIRouteCheckReportsMismatches(t *testing.T) {
	doc := loadOpenAPI(t)
	var exact []route
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			exact = append(exact, route{Method: method, Path: path})
		}
	}
	if undescribed, unrouted := routeCoverage(doc, exact); len(undescribed)+len(unrouted) != 0 {
		t.Fatalf("exact list: undescribed %v, unrouted %v", undescribed, unrouted)
	}

	fake := append(slices.Clone(exact),
		route{Method: http.MethodPost, Path: openAPIPath("/api/v1/conversations/:id/recordings")},
		route{Method: http.MethodPatch, Path: openAPIPath("/api/v1/me")},
		route{Method: http.MethodGet, Path: openAPIPath("/files/*")})
	undescribed, unrouted := routeCoverage(doc, fake)
	want := []string{"GET /files/{path}", "PATCH /api/v1/me", "POST /api/v1/conversations/{id}/recordings"}
	if !slices.Equal(undescribed, want) || len(unrouted) != 0 {
		t.Errorf("undescribed %v, unrouted %v; want %v and none", undescribed, unrouted, want)
	}

	var fewer []route
	for _, r := range exact {
		if r.Path != "/api/v1/legs/{id}/mute" {
			fewer = append(fewer, r)
		}
	}
	undescribed, unrouted = routeCoverage(doc, fewer)
	if len(undescribed) != 0 || !slices.Equal(unrouted, []string{"POST /api/v1/legs/{id}/mute"}) {
		t.Errorf("undescribed %v, unrouted %v; want none and [POST /api/v1/legs/{id}/mute]", undescribed, unrouted)
	}

	// A parameter renamed on one side is a mismatch too.
	renamed := append(slices.Clone(fewer), route{Method: http.MethodPost, Path: openAPIPath("/api/v1/legs/:leg_id/mute")})
	undescribed, unrouted = routeCoverage(doc, renamed)
	if !slices.Equal(undescribed, []string{"POST /api/v1/legs/{leg_id}/mute"}) || !slices.Equal(unrouted, []string{"POST /api/v1/legs/{id}/mute"}) {
		t.Errorf("renamed parameter: undescribed %v, unrouted %v", undescribed, unrouted)
	}

	for in, want := range map[string]string{
		"/api/v1/users/:id/tokens/:token_id": "/api/v1/users/{id}/tokens/{token_id}",
		"/static/*":                          "/static/{path}",
		"/":                                  "/",
		"/api/v1/conversations/:id/participants/me": "/api/v1/conversations/{id}/participants/me",
	} {
		if got := openAPIPath(in); got != want {
			t.Errorf("openAPIPath(%s) = %s, want %s", in, got, want)
		}
	}
}

// client sends requests to a test server and validates every exchange.
type client struct {
	t   *testing.T
	url string
	v   *apitest.Validator
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
}

// exchange sends one request and returns the exchange unvalidated.
func (c *client) exchange(method, path, token string, body any, headers ...string) (*http.Request, []byte, answer) {
	c.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			c.t.Fatalf("encode: %v", err)
		}
	}
	req, err := http.NewRequest(method, c.url+path, bytes.NewReader(raw))
	if err != nil {
		c.t.Fatal(err)
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
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return req, raw, answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// do sends a request, checks its status, and validates the exchange.
func (c *client) do(want int, method, path, token string, body any, headers ...string) answer {
	c.t.Helper()
	req, raw, a := c.exchange(method, path, token, body, headers...)
	if a.status != want {
		c.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, a.status, want, a.body)
	}
	c.v.Check(c.t, req, raw, a.status, a.header, a.body)
	return a
}

// TestOpenAPIValidatesTraffic runs real requests against the server and
// validates each request and answer against the document with the
// Validator the harness uses; then shows the Validator rejects answers and
// requests that disagree with the document.
func TestOpenAPIValidatesTraffic(t *testing.T) {
	srv, _ := newServer(t)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := &client{t: t, url: ts.URL, v: apitest.NewValidator(t)}
	admin := apitest.AdminToken

	// Public routes.
	c.do(200, "GET", "/healthz", "", nil)
	c.do(200, "GET", "/readyz", "", nil) // no PBX node: still serves chat
	c.do(200, "GET", "/metrics", "", nil)
	c.do(200, "GET", "/api/openapi.yaml", "", nil)
	c.do(200, "GET", "/", "", nil)
	c.do(200, "GET", "/ui/conversations/abc", "", nil)
	c.do(404, "GET", "/static/nothing-here.js", "", nil)

	// Users and tokens.
	var alice, bob struct {
		ID    string `json:"id"`
		Token string `json:"-"`
	}
	c.do(201, "POST", "/api/v1/users", admin, map[string]any{"display_name": "Alice", "email": "alice@example.com",
		"numbers": []map[string]any{{"label": "work", "number": "+1 202 555 0123"}, {"label": "Mobile", "number": "2025550147", "default": true}}}).decode(t, &alice)
	c.do(201, "POST", "/api/v1/users", admin, map[string]any{"display_name": "Bob", "email": "bob@example.com", "numbers": nil}).decode(t, &bob)
	var tok struct{ ID, Token string }
	c.do(201, "POST", "/api/v1/users/"+alice.ID+"/tokens", admin, nil).decode(t, &tok)
	alice.Token = tok.Token
	c.do(201, "POST", "/api/v1/users/"+bob.ID+"/tokens", admin, map[string]any{"name": "laptop"}).decode(t, &tok)
	bob.Token = tok.Token
	c.do(201, "POST", "/api/v1/users/"+bob.ID+"/tokens", bob.Token, nil).decode(t, &tok)
	c.do(204, "DELETE", "/api/v1/users/"+bob.ID+"/tokens/"+tok.ID, admin, nil)
	c.do(404, "DELETE", "/api/v1/users/"+bob.ID+"/tokens/"+tok.ID, admin, nil)
	c.do(404, "POST", "/api/v1/users/"+alice.ID+"/tokens", bob.Token, nil)
	c.do(200, "GET", "/api/v1/users", admin, nil)
	c.do(403, "GET", "/api/v1/users", alice.Token, nil)
	c.do(409, "POST", "/api/v1/users", admin, map[string]any{"display_name": "Alice 2", "email": "ALICE@example.com"})
	c.do(400, "POST", "/api/v1/users", admin, map[string]any{"display_name": "Carol", "email": "carol@example.com", "nickname": "c"})
	c.do(400, "POST", "/api/v1/users", admin, map[string]any{"display_name": "Carol", "email": "carol@example.com",
		"numbers": []map[string]any{{"label": "work", "number": "12"}}})

	// Me.
	c.do(200, "GET", "/api/v1/me", alice.Token, nil)
	c.do(403, "GET", "/api/v1/me", admin, nil)
	c.do(200, "PUT", "/api/v1/me/contacts", alice.Token, map[string]any{"user_ids": []string{bob.ID}})
	c.do(200, "PUT", "/api/v1/me/numbers", bob.Token, map[string]any{"numbers": []map[string]any{{"label": "home", "number": "+1 202 555 0199"}}})
	c.do(400, "PUT", "/api/v1/me/contacts", alice.Token, map[string]any{"user_ids": "nope"})

	// Conversations and messages.
	var conv struct {
		ID string `json:"id"`
	}
	c.do(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im", "subject": "Plan", "participants": []string{bob.ID}}).decode(t, &conv)
	cp := "/api/v1/conversations/" + conv.ID
	c.do(200, "GET", cp, bob.Token, nil)
	c.do(200, "GET", "/api/v1/conversations", alice.Token, nil)
	c.do(201, "POST", cp+"/messages", alice.Token, map[string]any{"text": "hello"})
	c.do(201, "POST", cp+"/messages", bob.Token, map[string]any{"text": "hi"})
	var page struct {
		NextCursor string `json:"next_cursor"`
	}
	c.do(200, "GET", cp+"/messages?limit=1", alice.Token, nil).decode(t, &page)
	c.do(200, "GET", cp+"/messages?limit=1&cursor="+page.NextCursor, alice.Token, nil)
	c.do(400, "GET", cp+"/messages?limit=abc", alice.Token, nil)
	c.do(400, "POST", cp+"/messages", alice.Token, `{"text": "unterminated`)
	c.do(400, "POST", cp+"/messages", alice.Token, map[string]any{"text": ""})
	c.do(200, "POST", cp+"/participants", alice.Token, map[string]any{"user_ids": []string{bob.ID}})
	c.do(409, "PUT", cp+"/presenter", alice.Token, nil)

	var share struct {
		ID string `json:"id"`
	}
	c.do(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "sharing"}).decode(t, &share)
	sp := "/api/v1/conversations/" + share.ID
	var stopped struct {
		PresenterID *string `json:"presenter_id"`
	}
	c.do(200, "DELETE", sp+"/presenter", alice.Token, nil).decode(t, &stopped)
	if stopped.PresenterID != nil {
		t.Errorf("presenter_id after stop: %v", *stopped.PresenterID)
	}
	c.do(200, "PUT", sp+"/presenter", alice.Token, nil)
	c.do(204, "DELETE", sp+"/participants/me", alice.Token, nil)
	c.do(404, "GET", sp, alice.Token, nil)

	// Audio without a PBX: 503, and the 404s and 409s of no audio.
	c.do(503, "POST", cp+"/audio", alice.Token, map[string]any{"published": "work"}, "Idempotency-Key", "k1")
	c.do(400, "POST", cp+"/audio", alice.Token, map[string]any{"published": "work", "number": "+12025550123"})
	c.do(400, "POST", cp+"/audio", alice.Token, nil, "Idempotency-Key", strings.Repeat("k", 201))
	c.do(404, "GET", cp+"/audio", alice.Token, nil)
	c.do(404, "GET", cp+"/audio?last=true", alice.Token, nil)
	c.do(404, "DELETE", cp+"/audio", alice.Token, nil)
	c.do(403, "DELETE", cp+"/audio", bob.Token, nil)
	c.do(409, "POST", cp+"/audio/invitations", alice.Token, map[string]any{"user_ids": []string{bob.ID}})
	c.do(200, "GET", "/api/v1/invitations", bob.Token, nil)
	c.do(404, "POST", "/api/v1/invitations/nope/accept", bob.Token, nil, "Idempotency-Key", "k2")
	c.do(404, "POST", "/api/v1/invitations/nope/decline", bob.Token, nil)
	c.do(404, "POST", "/api/v1/invitations/nope/redirect", bob.Token, map[string]any{"number": "+12025550123"})
	c.do(404, "POST", "/api/v1/legs/nope/mute", alice.Token, nil)
	c.do(404, "POST", "/api/v1/legs/nope/unmute", alice.Token, nil)
	c.do(404, "DELETE", "/api/v1/legs/nope", alice.Token, nil)
	c.do(403, "GET", "/api/v1/pbx", alice.Token, nil)
	c.do(200, "GET", "/api/v1/pbx", admin, nil)

	// Authentication, unknown ids and routes.
	c.do(401, "GET", "/api/v1/me", "", nil)
	c.do(401, "GET", cp, "not-a-token", nil)
	c.do(404, "GET", "/api/v1/conversations/does-not-exist", alice.Token, nil)
	c.do(404, "GET", "/api/v1/no-such-route", alice.Token, nil)
	c.do(401, "GET", "/api/v1/no-such-route", "", nil)
	c.do(404, "PATCH", "/api/v1/me", alice.Token, nil) // the group's catch-all answers before 405
	c.do(405, "POST", "/healthz", "", nil)

	// Cookie session and CSRF.
	var sess struct {
		CSRFToken string `json:"csrf_token"`
	}
	login := c.do(201, "POST", "/api/v1/session", "", map[string]any{"token": alice.Token})
	login.decode(t, &sess)
	cookie := "convoice_session=" + alice.Token
	c.do(200, "GET", "/api/v1/session", "", nil, "Cookie", cookie)
	c.do(201, "POST", "/api/v1/session", "", map[string]any{"token": admin})
	c.do(400, "POST", "/api/v1/session", "", map[string]any{"token": " "})
	c.do(401, "POST", "/api/v1/session", "", map[string]any{"token": "wrong"})
	c.do(403, "POST", cp+"/messages", "", map[string]any{"text": "x"}, "Cookie", cookie)
	c.do(201, "POST", cp+"/messages", "", map[string]any{"text": "x"}, "Cookie", cookie, "X-CSRF-Token", sess.CSRFToken)
	c.do(204, "DELETE", "/api/v1/session", "", nil, "Cookie", "convoice_session=revoked-or-unknown") // sign-out needs no valid token
	c.do(204, "DELETE", "/api/v1/session", "", nil, "Cookie", cookie, "X-CSRF-Token", sess.CSRFToken)

	// The event stream: its status and content type (the body is not
	// validated), and the 400 of a bad Last-Event-ID.
	c.do(400, "GET", cp+"/events", alice.Token, nil, "Last-Event-ID", "x")
	c.do(400, "GET", cp+"/events?last_event_id=-1", alice.Token, nil)
	// An id beyond the newest event: refused, not a silent stream.
	beyond := c.do(400, "GET", cp+"/events", alice.Token, nil, "Last-Event-ID", "999999")
	if !strings.Contains(string(beyond.body), "beyond this stream's newest event") {
		t.Fatalf("Last-Event-ID beyond the newest event: %s", beyond.body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+cp+"/events?last_event_id=1", nil)
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	req.Header.Set("Last-Event-ID", "2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 64)
	n, _ := io.ReadAtLeast(resp.Body, first, 1)
	cancel()
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	c.v.Check(t, req, nil, resp.StatusCode, resp.Header, first[:n])

	// The Validator bites: an answer with an undocumented field, an
	// undocumented status, a wrong content type, an accepted invalid
	// request and an undescribed route are all reported.
	v := c.v
	get := func(path string) *http.Request {
		r, _ := http.NewRequest("GET", ts.URL+path, nil)
		return r
	}
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	okBody := []byte(`{"messages":[],"next_cursor":""}`)
	if err := v.Validate(get(cp+"/messages"), nil, 200, jsonHeader, okBody); err != nil {
		t.Errorf("a true answer is refused: %v", err)
	}
	bad := map[string]func() error{
		"undocumented field": func() error {
			return v.Validate(get(cp+"/messages"), nil, 200, jsonHeader, []byte(`{"messages":[],"next_cursor":"","total":3}`))
		},
		"missing field": func() error {
			return v.Validate(get(cp+"/messages"), nil, 200, jsonHeader, []byte(`{"messages":[]}`))
		},
		"wrong leg state": func() error {
			return v.Validate(get("/api/v1/legs/x/mute"), nil, 200, jsonHeader, []byte(`{"id":"x","conference_id":"c","conversation_id":"v",`+
				`"number":"+12025550123","state":"on_hold","cause":0,"muted":true,"talking":false,"created_at":"2024-01-01T00:00:00Z"}`))
		},
		"error shape": func() error {
			return v.Validate(get(cp), nil, 404, jsonHeader, []byte(`{"error":"not found"}`))
		},
		"undocumented status": func() error {
			return v.Validate(get(cp+"/messages"), nil, 418, jsonHeader, []byte(`{"error":{"code":"teapot","message":"no"}}`))
		},
		"wrong content type": func() error {
			return v.Validate(get("/metrics"), nil, 200, http.Header{"Content-Type": {"application/xml"}}, []byte("<x/>"))
		},
		"accepted invalid request": func() error {
			body := []byte(`{"display_name":"C","email":"c@example.com","nickname":"c"}`)
			r, _ := http.NewRequest("POST", ts.URL+"/api/v1/users", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			return v.Validate(r, body, 201, jsonHeader, []byte(`{}`))
		},
		"undescribed route": func() error {
			return v.Validate(get("/api/v1/recordings"), nil, 200, jsonHeader, []byte(`{}`))
		},
	}
	for name, f := range bad {
		if err := f(); err == nil {
			t.Errorf("%s: not reported", name)
		}
	}
}

// fakePBX takes every call and never calls back by itself; the test plays
// the PBX's events. Numbers ending in 0404 are refused.
type fakePBX struct{}

func (fakePBX) Kind() string                                        { return "fake" }
func (fakePBX) Run(ctx context.Context, _ pbx.Handler) error        { <-ctx.Done(); return ctx.Err() }
func (fakePBX) Status() pbx.Status                                  { return pbx.Status{Ready: true, Detail: "fake", Since: time.Now()} }
func (fakePBX) CreateConference(context.Context, string) error      { return nil }
func (fakePBX) Hangup(context.Context, string) error                { return pbx.ErrNotFound }
func (fakePBX) SetMute(context.Context, string, string, bool) error { return nil }
func (fakePBX) EndConference(context.Context, string) error         { return nil }
func (fakePBX) Snapshot(context.Context) (pbx.Snapshot, error)      { return pbx.Snapshot{}, nil }
func (fakePBX) Dial(_ context.Context, r pbx.DialRequest) error {
	if strings.HasSuffix(r.Number, "0404") {
		return fmt.Errorf("%w: allocation failed", pbx.ErrRefused)
	}
	return nil
}

// TestOpenAPIValidatesAudioTraffic validates the audio answers (join,
// idempotent replay, invitations accepted, declined and redirected, mute,
// hang-up, end, the PBX refusing) and every event of the stream against the
// document.
func TestOpenAPIValidatesAudioTraffic(t *testing.T) {
	srv, ctl := newServer(t, &controller.Node{Name: "fake", Weight: 1, Driver: fakePBX{}})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := &client{t: t, url: ts.URL, v: apitest.NewValidator(t)}
	admin := apitest.AdminToken

	c.do(200, "GET", "/readyz", "", nil)
	type user struct{ ID, Token string }
	add := func(name, number string) user {
		var u user
		var nums []map[string]any
		if number != "" {
			nums = []map[string]any{{"label": "work", "number": number}}
		}
		c.do(201, "POST", "/api/v1/users", admin, map[string]any{"display_name": name,
			"email": strings.ToLower(name) + "@example.com", "numbers": nums}).decode(t, &u)
		var tok struct{ Token string }
		c.do(201, "POST", "/api/v1/users/"+u.ID+"/tokens", admin, nil).decode(t, &tok)
		u.Token = tok.Token
		return u
	}
	alice, bob, carol := add("Alice", "+12025550123"), add("Bob", "+12025550147"), add("Carol", "+12025550158")
	dave, erin := add("Dave", ""), add("Erin", "+12025550169")
	c.do(200, "PUT", "/api/v1/me/contacts", alice.Token, map[string]any{"user_ids": []string{bob.ID, carol.ID, dave.ID}})
	var conv struct {
		ID string `json:"id"`
	}
	c.do(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im", "subject": "Audio",
		"participants": []string{bob.ID, carol.ID, erin.ID}}).decode(t, &conv)
	cp := "/api/v1/conversations/" + conv.ID
	c.do(200, "GET", "/api/v1/pbx", admin, nil)

	// Join, and its idempotent replay.
	var join struct {
		Leg struct{ ID string } `json:"leg"`
	}
	first := c.do(201, "POST", cp+"/audio", alice.Token, map[string]any{"published": "work"}, "Idempotency-Key", "join-1")
	first.decode(t, &join)
	again := c.do(201, "POST", cp+"/audio", alice.Token, map[string]any{"published": "work"}, "Idempotency-Key", "join-1")
	if !bytes.Equal(first.body, again.body) {
		t.Errorf("idempotent replay differs:\n%s\n%s", first.body, again.body)
	}
	c.do(409, "POST", cp+"/audio", alice.Token, map[string]any{"number": "+12025550199"}, "Idempotency-Key", "join-1")
	c.do(409, "POST", cp+"/audio", alice.Token, nil)
	c.do(200, "GET", cp, alice.Token, nil)
	c.do(200, "GET", cp+"/audio", bob.Token, nil)

	// Alice's call is connected: the others are invited then.
	ctl.HandlePBXEvent(context.Background(), "fake", pbx.Event{Type: pbx.EventRinging, LegID: join.Leg.ID, At: time.Now()})
	ctl.HandlePBXEvent(context.Background(), "fake", pbx.Event{Type: pbx.EventConnected, LegID: join.Leg.ID, At: time.Now()})
	// Call progress is applied in the background (in order): wait for it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		l, err := ctl.Store().GetLeg(context.Background(), join.Leg.ID)
		if err == nil && l.State == "connected" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's leg never connected: %+v %v", l, err)
		}
	}
	// Erin joins directly: her own invitation (made when Alice's call was
	// connected) is accepted by the join.
	var ej struct {
		Invitation *struct{ State string } `json:"invitation"`
	}
	c.do(201, "POST", cp+"/audio", erin.Token, map[string]any{"number": "+1 202 555 0170"}).decode(t, &ej)
	if ej.Invitation == nil || ej.Invitation.State != "accepted" {
		t.Errorf("erin's join: invitation %+v", ej.Invitation)
	}

	// Invitations: accept, decline, redirect.
	invitationOf := func(u user) string {
		var l struct {
			Invitations []struct{ ID string } `json:"invitations"`
		}
		c.do(200, "GET", "/api/v1/invitations", u.Token, nil).decode(t, &l)
		if len(l.Invitations) != 1 {
			t.Fatalf("pending invitations: %+v", l)
		}
		return l.Invitations[0].ID
	}
	var acc struct {
		Leg struct{ ID string } `json:"leg"`
	}
	c.do(200, "POST", "/api/v1/invitations/"+invitationOf(bob)+"/accept", bob.Token, map[string]any{}, "Idempotency-Key", "acc-1").decode(t, &acc)
	carolInv := invitationOf(carol)
	c.do(200, "POST", "/api/v1/invitations/"+carolInv+"/decline", carol.Token, nil)
	c.do(409, "POST", "/api/v1/invitations/"+carolInv+"/decline", carol.Token, nil)
	c.do(409, "POST", "/api/v1/invitations/"+carolInv+"/accept", carol.Token, nil)
	c.do(400, "POST", "/api/v1/invitations/"+carolInv+"/decline", carol.Token, map[string]any{"reason": "busy"})
	c.do(502, "POST", cp+"/audio", carol.Token, map[string]any{"number": "+1 202 555 0404"})
	c.do(201, "POST", cp+"/audio/invitations", alice.Token, map[string]any{"user_ids": []string{dave.ID}})
	c.do(400, "POST", "/api/v1/invitations/"+invitationOf(dave)+"/accept", dave.Token, nil) // dave has no numbers
	c.do(400, "POST", "/api/v1/invitations/"+invitationOf(dave)+"/redirect", dave.Token, map[string]any{"number": "555"})
	c.do(200, "POST", "/api/v1/invitations/"+invitationOf(dave)+"/redirect", dave.Token, map[string]any{"number": "+1 202 555 0181"}, "Idempotency-Key", "r-1")

	// Alice's leg was connected above; mute and unmute it; bob's is still dialing.
	var muted struct {
		CreatedAt   time.Time  `json:"created_at"`
		ConnectedAt *time.Time `json:"connected_at"`
		UpdatedAt   *time.Time `json:"updated_at"`
	}
	c.do(200, "POST", "/api/v1/legs/"+join.Leg.ID+"/mute", alice.Token, nil).decode(t, &muted)
	if muted.UpdatedAt == nil || muted.ConnectedAt == nil || muted.UpdatedAt.Before(*muted.ConnectedAt) {
		t.Errorf("a muted leg's updated_at %v is not at or after its connected_at %v", muted.UpdatedAt, muted.ConnectedAt)
	}
	c.do(200, "POST", "/api/v1/legs/"+join.Leg.ID+"/unmute", alice.Token, nil)
	c.do(403, "POST", "/api/v1/legs/"+join.Leg.ID+"/mute", bob.Token, nil)
	c.do(409, "POST", "/api/v1/legs/"+acc.Leg.ID+"/mute", bob.Token, nil)
	c.do(403, "DELETE", "/api/v1/legs/"+join.Leg.ID, bob.Token, nil)
	c.do(204, "DELETE", "/api/v1/legs/"+acc.Leg.ID, alice.Token, nil)
	c.do(409, "DELETE", "/api/v1/legs/"+acc.Leg.ID, alice.Token, nil)
	c.do(200, "GET", cp+"/audio", alice.Token, nil)

	// End the audio.
	c.do(204, "DELETE", cp+"/audio", alice.Token, nil)
	c.do(404, "GET", cp+"/audio", alice.Token, nil)
	c.do(200, "GET", cp+"/audio?last=true", alice.Token, nil)
	c.do(201, "POST", cp+"/messages", carol.Token, map[string]any{"text": "still here"})
	c.do(204, "DELETE", cp+"/participants/me", carol.Token, nil)

	// Every stored event, replayed on the stream, matches the document.
	var now struct {
		LastEventID string `json:"last_event_id"`
	}
	c.do(200, "GET", cp, alice.Token, nil).decode(t, &now)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+cp+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	c.v.Check(t, req, nil, resp.StatusCode, resp.Header, nil)
	seen := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var id, typ string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			typ = line[7:]
		case strings.HasPrefix(line, "data: "):
			c.v.CheckEvent(t, id, typ, []byte(line[6:]))
			seen[typ]++
		}
		if line == "" && id == now.LastEventID {
			break
		}
	}
	for _, typ := range []string{"conversation.created", "participant.joined", "participant.left", "message.created",
		"audio.started", "audio.ended", "leg.updated", "invitation.updated"} {
		if seen[typ] == 0 {
			t.Errorf("no %s event seen (seen %v)", typ, seen)
		}
	}
	if t.Failed() {
		return
	}

	// The event check bites too.
	v := c.v
	for name, ev := range map[string][3]string{
		"data of another type": {"7", "leg.updated", `{"id":"7","type":"leg.updated","conversation_id":"c","at":"2024-01-01T00:00:00Z","data":{"presenter_id":null}}`},
		"unknown type":         {"7", "leg.moved", `{"id":"7","type":"leg.moved","conversation_id":"c","at":"2024-01-01T00:00:00Z","data":{}}`},
		"envelope field":       {"7", "presenter.changed", `{"id":"7","type":"presenter.changed","conversation_id":"c","at":"2024-01-01T00:00:00Z","seq":7,"data":{"presenter_id":null}}`},
		"id differs from SSE":  {"8", "presenter.changed", `{"id":"7","type":"presenter.changed","conversation_id":"c","at":"2024-01-01T00:00:00Z","data":{"presenter_id":null}}`},
	} {
		if err := v.ValidateEvent(ev[0], ev[1], []byte(ev[2])); err == nil {
			t.Errorf("event check: %s not reported", name)
		}
	}
	if err := v.ValidateEvent("7", "presenter.changed", []byte(`{"id":"7","type":"presenter.changed","conversation_id":"c","at":"2024-01-01T00:00:00Z","data":{"presenter_id":null}}`)); err != nil {
		t.Errorf("a true event is refused: %v", err)
	}
}
