package asterisk

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
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
