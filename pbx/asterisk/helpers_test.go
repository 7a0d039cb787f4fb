package asterisk

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// ---- recorded fixtures ----

type step struct {
	Kind     string          `json:"kind"`
	Event    json.RawMessage `json:"event"`
	Method   string          `json:"method"`
	Path     string          `json:"path"`
	Query    string          `json:"query"`
	Status   int             `json:"status"`
	Response json.RawMessage `json:"response"`
	TSent    float64         `json:"t_sent_ms"`
}

type fixture struct {
	Scenario string `json:"scenario"`
	App      string `json:"app"`
	Steps    []step `json:"steps"`
}

// loadFixture reads a recording from the repo's copy in testdata.
func loadFixture(t *testing.T, name string) fixture {
	t.Helper()
	for _, dir := range []string{"../../testdata/asterisk"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		var f fixture
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return f
	}
	t.Fatalf("fixture %s not found", name)
	return fixture{}
}

// frames gives the recorded websocket messages, byte for byte.
func (f fixture) frames() [][]byte {
	var out [][]byte
	for _, s := range f.Steps {
		if s.Kind == "event" {
			out = append(out, []byte(s.Event))
		}
	}
	return out
}

// response gives the recorded answer to the n-th (0-based) request method+path.
func (f fixture) response(t *testing.T, method, path string, n int) (int, []byte) {
	t.Helper()
	for _, s := range f.Steps {
		if s.Kind == "rest" && s.Method == method && s.Path == path {
			if n == 0 {
				return s.Status, s.Response
			}
			n--
		}
	}
	t.Fatalf("%s: no recorded %s %s", f.Scenario, method, path)
	return 0, nil
}

// responseAfter gives the first recorded answer to method+path sent at or
// after tms (ms since the recording's start).
func (f fixture) responseAfter(t *testing.T, method, path string, tms float64) (int, []byte) {
	t.Helper()
	for _, s := range f.Steps {
		if s.Kind == "rest" && s.Method == method && s.Path == path && s.TSent >= tms {
			return s.Status, s.Response
		}
	}
	t.Fatalf("%s: no recorded %s %s after %vms", f.Scenario, method, path, tms)
	return 0, nil
}

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

// ---- a driver without a websocket: workers and resync loop only ----

// newOfflineDriver gives a driver whose REST goes to f and whose event
// workers run, without a websocket: tests feed frames to dispatch.
func newOfflineDriver(t *testing.T, f *fakeREST, mod func(*Config)) (*Driver, *pbxtest.Recorder) {
	t.Helper()
	cfg := Config{URL: f.url(), User: "convoice", Password: "s3cret", App: "convoice",
		RequestTimeout: 2 * time.Second, Logger: pbxtest.Logger(t)}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := pbxtest.NewRecorder()
	var h pbx.Handler = rec
	d.handler.Store(&h)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d.runShards(ctx)
	go d.resyncLoop(ctx)
	return d, rec
}

// dialed registers a leg as if Dial had been answered 200.
func (d *Driver) dialedForTest(legID, confID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.legs[legID] = &leg{id: legID, conf: confID, placed: true}
	if d.confs[confID] == nil {
		d.confs[confID] = &conf{id: confID}
	}
}
