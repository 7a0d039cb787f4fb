package ariemu

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds request bodies (Asterisk answers 413 past its own limit).
const maxBody = 1 << 20

// reqCtx is one REST request on its way through the emulator.
type reqCtx struct {
	s        *Server
	w        http.ResponseWriter
	r        *http.Request
	p        *params
	vars     map[string]string // path variables
	status   int
	hijacked bool
	after    func() // runs after the response is written (originate's dial)
}

func (rc *reqCtx) write(status int, contentType string, body []byte) {
	h := rc.w.Header()
	h.Set("Server", "Asterisk/22.10.1")
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	if body != nil {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	rc.status = status
	rc.w.WriteHeader(status)
	if body != nil && rc.r.Method != http.MethodHead {
		rc.w.Write(body)
	}
}

func (rc *reqCtx) json(status int, body []byte) { rc.write(status, "application/json", body) }

// err is ast_ari_response_error: {"message": "..."}.
func (rc *reqCtx) err(status int, msg string) {
	b := appendJSONString([]byte(`{"message":`), msg)
	rc.json(status, append(b, '}'))
}

// allocFailed is ast_ari_response_alloc_failed, the answer to every failed
// channel allocation: 500 with key "error", not "message" (recording d).
func (rc *reqCtx) allocFailed() {
	rc.json(http.StatusInternalServerError, []byte(`{"error":"Allocation failed"}`))
}

func (rc *reqCtx) noContent() { rc.write(http.StatusNoContent, "", nil) }

func (rc *reqCtx) notImplemented() {
	rc.err(http.StatusNotImplemented, "Not implemented by the convoice ARI emulator")
}

// html is ast_http_error's page (the 404 of recording f_run2).
func (rc *reqCtx) html(status int, title, text string) {
	body := fmt.Sprintf("<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\r\n<html><head>\r\n<title>%d %s</title>\r\n</head><body>\r\n<h1>%s</h1>\r\n<p>%s</p>\r\n<hr />\r\n<address>Asterisk/22.10.1</address>\r\n</body></html>\r\n",
		status, title, title, text)
	rc.write(status, "text/html", []byte(body))
}

// params holds a request's parameters the way Asterisk's generated handlers
// see them: form fields of an x-www-form-urlencoded body, then query
// parameters (later ones win), then — for handlers that read one — the
// fields of a JSON body, which override both (the form
// CyCoreSystems/ari v5 sends).
type params struct {
	q        map[string]string
	body     map[string]any
	rawBody  []byte
	jsonBody bool
	parsed   bool
}

func newParams(r *http.Request, body []byte) *params {
	p := &params{q: map[string]string{}, rawBody: body}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/x-www-form-urlencoded" && len(body) > 0 {
		if form, err := url.ParseQuery(string(body)); err == nil {
			for k, v := range form {
				p.q[k] = v[len(v)-1]
			}
		}
	}
	for k, v := range r.URL.Query() {
		p.q[k] = v[len(v)-1]
	}
	p.jsonBody = ct == "application/json" && len(bytes.TrimSpace(body)) > 0
	return p
}

// loadBody parses a JSON body; false means it was malformed and a 400 has
// been written ("Error parsing request body").
func (rc *reqCtx) loadBody() bool {
	p := rc.p
	if p.parsed || !p.jsonBody {
		p.parsed = true
		return true
	}
	p.parsed = true
	dec := json.NewDecoder(bytes.NewReader(p.rawBody))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		rc.err(http.StatusBadRequest, "Error parsing request body")
		return false
	}
	if m, ok := v.(map[string]any); ok {
		p.body = m
	}
	return true
}

// str: a body field that is present but not a string reads as absent, as
// ast_json_string_get returns NULL for it.
func (p *params) str(name string) string {
	if v, ok := p.body[name]; ok {
		s, _ := v.(string)
		return s
	}
	return p.q[name]
}

func (p *params) has(name string) bool {
	if _, ok := p.body[name]; ok {
		return true
	}
	_, ok := p.q[name]
	return ok
}

// int: query values go through atoi (so "abc" is 0), body values through
// ast_json_integer_get (a non-integer is 0).
func (p *params) int(name string, def int) int {
	if v, ok := p.body[name]; ok {
		if n, ok := v.(json.Number); ok {
			if i, err := n.Int64(); err == nil {
				return int(i)
			}
		}
		return 0
	}
	if v, ok := p.q[name]; ok {
		return atoi(v)
	}
	return def
}

func (p *params) bool(name string) bool {
	if v, ok := p.body[name]; ok {
		b, _ := v.(bool)
		return b
	}
	return astTrue(p.q[name])
}

// atoi is C's atoi: leading blanks, an optional sign, digits; anything else
// stops it.
func atoi(s string) int {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		neg = s[i] == '-'
		i++
	}
	n := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int(s[i]-'0')
		if n > 1<<31 {
			break
		}
	}
	if neg {
		return -n
	}
	return n
}

// astTrue is ast_true.
func astTrue(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "yes", "true", "y", "t", "1", "on":
		return true
	}
	return false
}

// ServeHTTP is Asterisk's HTTP server with only /ari/ mounted. Start serves
// it on its own listener; it is exported so the emulator can also sit behind
// another server (Restart and Crash then cannot refuse connections: they
// need the listener Start owns).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	isWS := r.Method == http.MethodGet && isWebsocketUpgrade(r)
	rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body), At: time.Now()}
	if off := s.hang.Held(); off != nil {
		// Half-open: the request is never answered; when the mode ends the
		// connection is cut.
		if !isWS {
			s.logRequest(rec)
		}
		select {
		case <-off:
		case <-s.done:
		case <-r.Context().Done():
		}
		panic(http.ErrAbortHandler)
	}
	rc := &reqCtx{s: s, w: w, r: r, p: newParams(r, body)}
	s.serveARI(rc, len(body) > maxBody)
	if rc.hijacked {
		return
	}
	if !isWS {
		rec.Status = rc.status
		s.logRequest(rec)
	}
	if rc.after != nil {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		rc.after()
	}
}

func (s *Server) authorized(r *http.Request, p *params) bool {
	if s.cfg.User == "" {
		return true
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		// ?api_key=user:password (query or form), as the websocket uses.
		key, found := p.q["api_key"]
		if !found {
			return false
		}
		user, pass, ok = strings.Cut(key, ":")
		if !ok {
			return false
		}
	}
	return subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.User)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password)) == 1
}

func (s *Server) serveARI(rc *reqCtx, tooLarge bool) {
	r := rc.r
	path := r.URL.EscapedPath()
	if !strings.HasPrefix(path, "/ari/") {
		rc.html(http.StatusNotFound, "Not Found", "The requested URL was not found on this server.")
		return
	}
	uri := path[len("/ari/"):]
	if tooLarge {
		rc.err(http.StatusRequestEntityTooLarge, "Request body too large")
		return
	}
	if !s.authorized(r, rc.p) {
		rc.w.Header().Set("WWW-Authenticate", `Basic realm="Asterisk REST Interface"`)
		rc.err(http.StatusUnauthorized, "Authentication required")
		return
	}
	s.mu.Lock()
	booting := s.phase != phaseRunning
	s.mu.Unlock()
	if booting {
		rc.w.Header().Set("Connection", "close")
		rc.err(http.StatusServiceUnavailable, "Asterisk not booted")
		return
	}
	if strings.HasSuffix(uri, "/") {
		rc.err(http.StatusNotFound, "ARI URLs do not end with a slash. Try /ari/"+strings.TrimSuffix(uri, "/"))
		return
	}
	if strings.HasPrefix(uri, "api-docs/") {
		if r.Method != http.MethodGet {
			rc.err(http.StatusMethodNotAllowed, "Unsupported method")
			return
		}
		// The emulator does not carry the API description.
		rc.err(http.StatusNotFound, "Resource not found")
		return
	}
	segs := strings.Split(uri, "/")
	for i, seg := range segs {
		segs[i] = uriDecodeLegacy(seg)
	}
	rt, vars := matchRoute(segs)
	if rt == nil {
		rc.err(http.StatusNotFound, "Resource not found")
		return
	}
	if r.Method == http.MethodOptions {
		rc.w.Header().Set("Allow", rt.allow())
		rc.noContent()
		return
	}
	h, ok := rt.methods[r.Method]
	if !ok {
		rc.w.Header().Set("Allow", rt.allow())
		rc.err(http.StatusMethodNotAllowed, "Invalid method")
		return
	}
	rc.vars = vars
	if h == nil {
		rc.notImplemented()
		return
	}
	h(s, rc)
}

// uriDecodeLegacy is ast_uri_decode with ast_uri_http_legacy: %XX and '+'
// as a space, applied to each path segment.
func uriDecodeLegacy(seg string) string {
	if !strings.ContainsAny(seg, "%+") {
		return seg
	}
	seg = strings.ReplaceAll(seg, "+", " ")
	if v, err := url.PathUnescape(seg); err == nil {
		return v
	}
	return seg
}

// ---- /asterisk ----

func (s *Server) handleInfo(rc *reqCtx) {
	only := map[string]bool{}
	for _, part := range strings.Split(rc.p.str("only"), ",") {
		if part = strings.TrimSpace(strings.ToLower(part)); part != "" {
			only[part] = true
		}
	}
	show := func(sec string) bool { return len(only) == 0 || only[sec] }
	s.mu.Lock()
	startup := s.startup
	s.mu.Unlock()
	b := []byte{'{'}
	sep := func() {
		if len(b) > 1 {
			b = append(b, ',')
		}
	}
	if show("build") {
		sep()
		b = append(b, `"build":{"os":"Linux","kernel":"6.18.44-fc-v657","machine":"x86_64","options":"OPTIONAL_API","date":"2026-11-27 04:56:07 UTC","user":"root"}`...)
	}
	if show("system") {
		sep()
		b = append(b, `"system":{"version":"22.10.1",`...)
		b = appendStrField(b, "entity_id", s.entityID)
		b = append(b, '}')
	}
	if show("config") {
		sep()
		b = append(b, `"config":{"name":"","default_language":"en","setid":{"user":"","group":""}}`...)
	}
	if show("status") {
		sep()
		b = append(b, `"status":{"startup_time":`...)
		b = appendAstTime(b, startup)
		b = append(b, `,"last_reload_time":`...)
		b = appendAstTime(b, startup)
		b = append(b, '}')
	}
	rc.json(http.StatusOK, append(b, '}'))
}

func (s *Server) handlePing(rc *reqCtx) {
	b := []byte(`{"asterisk_id":`)
	b = appendJSONString(b, s.entityID)
	b = append(b, `,"ping":"pong","timestamp":`...)
	b = appendAstTime(b, time.Now())
	rc.json(http.StatusOK, append(b, '}'))
}

// ---- /applications ----

func (s *Server) handleAppList(rc *reqCtx) {
	s.mu.Lock()
	names := make([]string, 0, len(s.apps))
	for name := range s.apps {
		names = append(names, name)
	}
	slices.Sort(names)
	b := []byte{'['}
	for i, name := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = s.appendApplication(b, s.apps[name])
	}
	s.mu.Unlock()
	rc.json(http.StatusOK, append(b, ']'))
}

func (s *Server) handleAppGet(rc *reqCtx) {
	s.mu.Lock()
	a := s.apps[rc.vars["applicationName"]]
	if a == nil {
		s.mu.Unlock()
		rc.err(http.StatusNotFound, "Application not found")
		return
	}
	b := s.appendApplication(nil, a)
	s.mu.Unlock()
	rc.json(http.StatusOK, b)
}

func (s *Server) handleEvents(rc *reqCtx) { s.serveEvents(rc) }
