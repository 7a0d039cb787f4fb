package asterisk

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// ---- a programmable fake ARI REST server ----

type reqRecord struct {
	Method, Path, Query, Body string
}

type fakeREST struct {
	mu      sync.Mutex
	routes  map[string]func(w http.ResponseWriter, r *http.Request)
	reqs    []reqRecord
	srv     *httptest.Server
	blocked chan struct{} // when set, matching requests stall until closed
}

func newFakeREST(t *testing.T) *fakeREST {
	f := &fakeREST{routes: map[string]func(http.ResponseWriter, *http.Request){}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeREST) url() string { return f.srv.URL + "/ari" }

// on answers "METHOD /path" (below /ari) with status and body.
func (f *fakeREST) on(method, path string, status int, body string) {
	f.handle(method, path, func(w http.ResponseWriter, r *http.Request) {
		if body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
}

func (f *fakeREST) handle(method, path string, h func(http.ResponseWriter, *http.Request)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[method+" "+path] = h
}

func (f *fakeREST) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	path := strings.TrimPrefix(r.URL.EscapedPath(), "/ari")
	f.mu.Lock()
	f.reqs = append(f.reqs, reqRecord{r.Method, path, r.URL.RawQuery, string(body)})
	h := f.routes[r.Method+" "+path]
	f.mu.Unlock()
	if path == "/events" {
		if r.URL.Query().Get("api_key") != "convoice:s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	} else if u, p, ok := r.BasicAuth(); !ok || u != "convoice" || p != "s3cret" {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"message": "Authentication required"}`)
		return
	}
	if h == nil {
		// Asterisk's default for the calls a test does not care about.
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(path, "/addChannel"),
			r.Method == http.MethodPost && strings.HasSuffix(path, "/variable"),
			r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message": "Resource not found"}`)
		}
		return
	}
	h(w, r)
}

func (f *fakeREST) requests() []reqRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]reqRecord(nil), f.reqs...)
}

// count of requests with this method and path.
func (f *fakeREST) count(method, path string) int {
	n := 0
	for _, r := range f.requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}
