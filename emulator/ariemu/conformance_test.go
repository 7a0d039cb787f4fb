package ariemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emutest"
)

// The conformance test replays every recording of testdata/asterisk against
// the emulator: the same REST requests (ids Asterisk generated mapped to the
// ones the emulator generated), a websocket connected like the recorder's,
// and the recorded fault phases driven by the emulator's fault injection at
// the point the recording's notes mark (restart, SIGKILL, module unload,
// websocket drops; the far-end BYE and the talking come from the phones
// themselves, as they did in the lab). It then compares status codes,
// response bodies and the event sequence (ChannelVarset noise aside).

type recording struct {
	Scenario     string `json:"scenario"`
	App          string `json:"app"`
	WebsocketURL string `json:"websocket_url"`
	SubscribeAll bool   `json:"subscribe_all"`
	Steps        []step `json:"steps"`
}

type step struct {
	Kind        string          `json:"kind"`
	Method      string          `json:"method"`
	Path        string          `json:"path"`
	Query       string          `json:"query"`
	Status      int             `json:"status"`
	Response    json.RawMessage `json:"response"`
	RequestBody json.RawMessage `json:"request_body"`
	ContentType string          `json:"content_type"`
	Text        string          `json:"text"`
	Error       string          `json:"error"`
	Action      string          `json:"action"`
	Event       json.RawMessage `json:"event"`
	URL         string          `json:"url"`
	TMs         float64         `json:"t_ms"`
	TSentMs     float64         `json:"t_sent_ms"`
}

func (st step) at() float64 {
	if st.Kind == "rest" {
		return st.TSentMs
	}
	return st.TMs
}

func loadRecordings(t *testing.T) map[string]recording {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testdataDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings in %s (%v)", testdataDir, err)
	}
	out := map[string]recording{}
	for _, f := range files {
		var rec recording
		emutest.ReadJSON(t, f, &rec)
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = rec
	}
	return out
}

// maxGap caps the recorded pauses between two requests: long enough to keep
// every timing the recordings test (the 1 s timeout of n, the 2 s BYE of j
// and m inside a gap), short enough to run the whole suite in seconds.
const maxGap = 2500 * time.Millisecond

func TestConformance(t *testing.T) {
	recs := loadRecordings(t)
	names := make([]string, 0, len(recs))
	for n := range recs {
		names = append(names, n)
	}
	sort.Strings(names)
	// The replays spend their time waiting on phone timers, so they all run
	// at once, whatever -parallel is (it defaults to the 2 cores here); each
	// one's findings are then reported in its own subtest.
	results := map[string]*collector{}
	for _, name := range names {
		c := newCollector()
		results[name] = c
		rec := recs[name]
		go c.run(func() {
			r := newReplayer(c, rec)
			defer r.s.Close()
			r.run()
		})
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) { results[name].report(t) })
	}
}

// collector stands in for a *testing.T inside a replay goroutine.
type collector struct {
	mu     sync.Mutex
	lines  []string
	failed bool
	done   chan struct{}
}

func newCollector() *collector { return &collector{done: make(chan struct{})} }

func (c *collector) run(f func()) {
	defer close(c.done)
	f()
}

func (c *collector) Helper() {}

func (c *collector) Logf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, fmt.Sprintf(format, args...))
}

func (c *collector) Errorf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failed = true
	c.lines = append(c.lines, "ERROR: "+fmt.Sprintf(format, args...))
}

// Fatalf ends the replay goroutine (deferred calls run, as with t.Fatal).
func (c *collector) Fatalf(format string, args ...any) {
	c.Errorf(format, args...)
	runtime.Goexit()
}

func (c *collector) report(t *testing.T) {
	select {
	case <-c.done:
	case <-time.After(3 * time.Minute):
		t.Fatal("replay did not finish")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		t.Log(l)
	}
	if c.failed {
		t.Fail()
	}
}

// tb is what a replay needs from a test.
type tb interface {
	Helper()
	Logf(string, ...any)
	Errorf(string, ...any)
	Fatalf(string, ...any)
}

type replayer struct {
	t   tb
	rec recording
	s   *Server
	ws  *wsClient

	mu    sync.Mutex
	idMap map[string]string // recorded id → emulator id

	expected []event // recorded events, ChannelVarset left out
	lastAct  time.Time
	lastRecT float64
}

// replayTiming is the lab carrier's timing. Recordings made before the
// carrier's 0111 pressed a key (h uses …0111 as an ordinary phone) get a
// key that never comes within them.
func replayTiming(rec recording) emuphone.Timing {
	t := emuphone.Timing{Ring: 500 * time.Millisecond, Hold: 2 * time.Second, SlowRing: 3 * time.Second}
	if !strings.HasPrefix(rec.Scenario, "q_") {
		t.DigitAfter = time.Hour
	}
	return t
}

func newReplayer(t tb, rec recording) *replayer {
	s := New(Config{
		Logger: slog.New(slog.NewTextHandler(logfWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		User:   "ari", Password: "ari",
		// The lab's carrier answered after 0.5 s, trunk-slow after 3 s, the
		// 0200 number sent BYE 2 s after answering.
		Timing:         replayTiming(rec),
		RestartRefused: 300 * time.Millisecond,
		RestartBooting: 300 * time.Millisecond,
	})
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("start: %v", err)
	}
	return &replayer{t: t, rec: rec, s: s, ws: newWSClient(t), idMap: map[string]string{}}
}

func (r *replayer) wsQuery(u string) string {
	if u == "" {
		u = r.rec.WebsocketURL
	}
	pu, err := url.Parse(u)
	if err != nil {
		r.t.Fatalf("%v", err)
	}
	return pu.RawQuery
}

// pace waits as long after the previous action as the recorder did (capped
// at maxGap), so that timers get the time they had in the lab.
func (r *replayer) pace(recT float64) {
	if !r.lastAct.IsZero() {
		gap := time.Duration((recT - r.lastRecT) * float64(time.Millisecond))
		gap = min(gap, maxGap)
		if wait := time.Until(r.lastAct.Add(gap)); wait > 0 {
			time.Sleep(wait)
		}
	}
	r.lastAct, r.lastRecT = time.Now(), recT
}

// syncEvents waits until as many events as the recording shows so far have
// arrived (what they are is checked at the end).
func (r *replayer) syncEvents() {
	r.t.Helper()
	n := len(r.expected)
	ok := r.ws.waitFor(15*time.Second, func(evs []event) bool { return countNoVarset(evs) >= n })
	if !ok {
		r.t.Fatalf("timed out waiting for %d events; expected so far:%s\ngot:%s", n, summarize(r.expected), summarize(r.ws.events()))
	}
}

func countNoVarset(evs []event) int {
	n := 0
	for _, e := range evs {
		if e.typ() != "ChannelVarset" {
			n++
		}
	}
	return n
}

func (r *replayer) run() {
	t := r.t
	inRestart, probed := false, false
	for i, st := range r.rec.Steps {
		switch st.Kind {
		case "event":
			var m map[string]any
			if err := json.Unmarshal(st.Event, &m); err != nil {
				t.Fatalf("%v", err)
			}
			e := event{raw: st.Event, m: m}
			if e.typ() != "ChannelVarset" {
				r.expected = append(r.expected, e)
			}
		case "note":
			switch {
			case strings.HasPrefix(st.Text, "running:") && strings.Contains(st.Text, "core restart now"):
				r.syncEvents()
				r.pace(st.at())
				r.s.Restart()
				inRestart, probed = true, false
			case strings.Contains(st.Text, "SIGKILL") && strings.HasPrefix(st.Text, "killing"):
				r.syncEvents()
				r.pace(st.at())
				r.s.Crash()
				inRestart, probed = true, false
			case strings.HasPrefix(st.Text, "module unload") && strings.Contains(st.Text, "func_talkdetect"):
				r.syncEvents()
				r.s.SetTalkDetectLoaded(false)
			case strings.HasPrefix(st.Text, "module load") && strings.Contains(st.Text, "func_talkdetect"):
				r.syncEvents()
				r.s.SetTalkDetectLoaded(true)
			}
		case "ws":
			switch st.Action {
			case "connect":
				if inRestart && !probed {
					r.probeRestart()
					probed = true
				}
				inRestart = false
				r.syncEvents()
				r.pace(st.at())
				if err := r.ws.connect(r.s.Addr(), r.wsQuery(st.URL)); err != nil {
					t.Fatalf("step %d: websocket connect: %v", i, err)
				}
			case "client_close":
				r.syncEvents()
				r.pace(st.at())
				r.ws.drop()
			case "closed":
				if inRestart {
					// Asterisk ended the socket: ours must end too.
					r.syncEvents()
					if !r.ws.waitEnded(3 * time.Second) {
						t.Fatalf("step %d: websocket still open after restart", i)
					}
				}
			case "connect_failed":
				if inRestart && !probed {
					r.probeRestart()
					probed = true
				}
			default:
				t.Fatalf("step %d: unknown ws action %q", i, st.Action)
			}
		case "rest":
			if inRestart {
				// The recorder's probes while Asterisk restarted: replaced by
				// one probe loop (the exact count depends on timing).
				if !probed {
					r.probeRestart()
					probed = true
				}
				continue
			}
			r.syncEvents()
			r.pace(st.at())
			r.doREST(i, st)
		default:
			t.Fatalf("step %d: unknown kind %q", i, st.Kind)
		}
	}
	r.syncEvents()
	// Nothing more may come: wait a little for strays (a BridgeDestroyed
	// that must not be there, a second Finished…).
	time.Sleep(400 * time.Millisecond)
	r.compareEvents()
}

// probeRestart polls like the recorder did until the emulator is back and
// checks the phases of recordings f: connection refused, then 503 "Asterisk
// not booted" (REST and websocket upgrade alike), then 200.
func (r *replayer) probeRestart() {
	t := r.t
	var phases []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := restErr(r.s.Addr(), "ari", "ari", "GET", "/ari/asterisk/info", nil)
		switch {
		case err != nil:
			phases = appendPhase(phases, "refused")
		case resp.Status == 503:
			if got := strings.TrimSpace(string(resp.Body)); got != `{"message":"Asterisk not booted"}` {
				t.Errorf("503 body %s", got)
			}
			if w, code, err := dialRawWS(r.s.Addr(), r.wsQuery("")); err == nil && code == 101 {
				// Booting ended between the two probes: drop this socket
				// (it would take the application's events over) and wait
				// until the emulator has let go of it.
				w.conn.Close()
				for deadline := time.Now().Add(3 * time.Second); socketCount(r.s) > 0 && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
			} else if err == nil && code != 503 {
				t.Errorf("websocket upgrade while booting answered %d, want 503", code)
			}
			phases = appendPhase(phases, "503")
		case resp.Status == 200:
			phases = appendPhase(phases, "200")
		default:
			t.Errorf("probe answered %d %s", resp.Status, resp.Body)
		}
		if len(phases) > 0 && phases[len(phases)-1] == "200" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if want := []string{"refused", "503", "200"}; !slices.Equal(phases, want) {
		t.Errorf("restart phases %v, want %v", phases, want)
	}
	r.lastAct = time.Now()
}

func appendPhase(p []string, s string) []string {
	if len(p) > 0 && p[len(p)-1] == s {
		return p
	}
	return append(p, s)
}

// ---- REST ----

func (r *replayer) mapID(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.idMap[id]; ok {
		return v
	}
	return id
}

func (r *replayer) learnID(rec, emu string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.idMap[rec]; ok && old != emu {
		r.t.Errorf("id %s maps to both %s and %s", rec, old, emu)
	}
	r.idMap[rec] = emu
}

func (r *replayer) doREST(i int, st step) {
	t := r.t
	segs := strings.Split(st.Path, "/")
	for k, seg := range segs {
		segs[k] = url.PathEscape(r.mapID(seg))
	}
	pq := strings.Join(segs, "/")
	if st.Query != "" {
		q, err := url.ParseQuery(st.Query)
		if err != nil {
			t.Fatalf("%v", err)
		}
		for k, vs := range q {
			for j, v := range vs {
				vs[j] = r.mapID(v)
			}
			q[k] = vs
		}
		pq += "?" + q.Encode()
	}
	var body any
	if len(st.RequestBody) > 0 {
		body = []byte(st.RequestBody)
	}
	user, pass := "ari", "ari"
	if strings.Contains(st.Text, "ari:wrong") {
		pass = "wrong"
	}
	resp, err := restErr(r.s.Addr(), user, pass, st.Method, pq, body)
	if err != nil {
		t.Fatalf("step %d %s %s: %v", i, st.Method, pq, err)
	}
	where := fmt.Sprintf("step %d %s %s", i, st.Method, st.Path)
	if resp.Status != st.Status {
		t.Errorf("%s: status %d, want %d (body %s)", where, resp.Status, st.Status, resp.Body)
		return
	}
	if len(st.Response) == 0 || string(st.Response) == "null" {
		if len(bytes.TrimSpace(resp.Body)) != 0 {
			t.Errorf("%s: body %s, want none", where, resp.Body)
		}
		return
	}
	if ct := resp.Header.Get("Content-Type"); st.ContentType != "" && ct != st.ContentType {
		t.Errorf("%s: content type %q, want %q", where, ct, st.ContentType)
	}
	var got, want any
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Errorf("%s: body is not JSON: %s", where, resp.Body)
		return
	}
	if st.Path == "/ari/asterisk/info" && maxChannelsRE.Match(st.Response) {
		// Recordings o and q come from the lab rebuilt on 2026-12-06:
		// another kernel and build date, and asterisk.conf setting
		// maxcalls (config.max_channels). The emulator answers as the
		// first lab; the rest of the answer must still agree.
		raw := maxChannelsRE.ReplaceAll(st.Response, nil)
		raw = regexp.MustCompile(`"kernel": "[^"]*"`).ReplaceAll(raw, []byte(`"kernel": "6.18.44-fc-v657"`))
		raw = regexp.MustCompile(`"date": "[^"]*"`).ReplaceAll(raw, []byte(`"date": "2026-11-27 04:56:07 UTC"`))
		st.Response = raw
	}
	json.Unmarshal(st.Response, &want)
	// Creations teach the id mapping.
	if st.Status == 200 && st.Method == "POST" {
		if wm, ok := want.(map[string]any); ok {
			if gm, ok := got.(map[string]any); ok {
				if wid, ok := wm["id"].(string); ok {
					gid, _ := gm["id"].(string)
					r.learnID(wid, gid)
				}
			}
		}
	}
	r.compareJSON(where, "", want, got)
	wantKeys, gotKeys := orderedKeys(st.Response), orderedKeys(resp.Body)
	if !slices.Equal(wantKeys, gotKeys) {
		t.Errorf("%s: keys %v, want %v", where, gotKeys, wantKeys)
	}
}

// maxChannelsRE finds config.max_channels in a recorded /asterisk/info.
var maxChannelsRE = regexp.MustCompile(`,\s*"max_channels":\s*\d+`)

var (
	astTimeRE  = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$`)
	uuidRE     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	chanNameRE = regexp.MustCompile(`^(.*)-[0-9a-f]{8}(;[12])?$`)
)

// compareJSON compares a recorded value with the emulator's: same keys,
// same values, except what is the emulator's own by nature — times (format
// only), SIP Call-IDs (format only), channel name counters (prefix only) —
// and ids, compared through the mapping.
func (r *replayer) compareJSON(where, key string, want, got any) {
	t := r.t
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			t.Errorf("%s: %s is %T, want object", where, key, got)
			return
		}
		for k := range w {
			if _, ok := g[k]; !ok {
				t.Errorf("%s: %s.%s missing", where, key, k)
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				t.Errorf("%s: %s.%s unexpected", where, key, k)
			}
		}
		_, isChannel := w["protocol_id"]
		for k, wv := range w {
			gv := g[k]
			switch {
			case k == "creationtime" || k == "timestamp" || k == "startup_time" || k == "last_reload_time":
				if s, _ := gv.(string); !astTimeRE.MatchString(s) {
					t.Errorf("%s: %s.%s = %v, not an Asterisk time", where, key, k, gv)
				}
			case k == "state" && w["media_uri"] != nil:
				// A new playback's 201 said "queued" or "playing" in the
				// same run (recording q).
				if gv != wv && !(wv == "queued" && gv == "playing" || wv == "playing" && gv == "queued") {
					t.Errorf("%s: %s.state = %v, want %v", where, key, gv, wv)
				}
			case k == "protocol_id":
				ws, _ := wv.(string)
				gs, _ := gv.(string)
				if (ws == "") != (gs == "") || (gs != "" && !uuidRE.MatchString(gs)) {
					t.Errorf("%s: %s.protocol_id %q vs recorded %q", where, key, gs, ws)
				}
			case k == "name" && isChannel:
				wm := chanNameRE.FindStringSubmatch(fmt.Sprint(wv))
				gm := chanNameRE.FindStringSubmatch(fmt.Sprint(gv))
				if wm == nil || gm == nil || wm[1] != gm[1] || wm[2] != gm[2] {
					t.Errorf("%s: channel name %v, want like %v", where, gv, wv)
				}
			case k == "id" || k == "channels" || k == "channel_ids" || k == "bridge_ids":
				if !reflect.DeepEqual(r.mapIDs(wv), gv) {
					t.Errorf("%s: %s.%s = %v, want %v (mapped from %v)", where, key, k, gv, r.mapIDs(wv), wv)
				}
			default:
				r.compareJSON(where, key+"."+k, wv, gv)
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			t.Errorf("%s: %s = %v, want %v", where, key, got, want)
			return
		}
		for i := range w {
			r.compareJSON(where, fmt.Sprintf("%s[%d]", key, i), w[i], g[i])
		}
	default:
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s: %s = %v, want %v", where, key, got, want)
		}
	}
}

func (r *replayer) mapIDs(v any) any {
	switch x := v.(type) {
	case string:
		return r.mapID(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.mapIDs(e)
		}
		return out
	}
	return v
}

// orderedKeys lists the keys of a JSON object (or of the first element of
// an array) in document order, nested objects flattened with dots.
func orderedKeys(raw []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	var out []string
	var walk func(prefix string) bool
	walk = func(prefix string) bool {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		switch d := tok.(type) {
		case json.Delim:
			switch d {
			case '{':
				for dec.More() {
					k, _ := dec.Token()
					name := prefix + fmt.Sprint(k)
					out = append(out, name)
					walk(name + ".")
				}
				dec.Token()
			case '[':
				first := true
				for dec.More() {
					if first {
						walk(prefix + "[].")
						first = false
					} else {
						var skip any
						dec.Decode(&skip)
					}
				}
				dec.Token()
			}
		}
		return true
	}
	walk("")
	return out
}

// ---- events ----

// eventKey is the resource an event is about: its channel, else its bridge.
func eventKey(e event) string {
	if id := e.chanID(); id != "" {
		return id
	}
	return e.str("bridge", "id")
}

func isRinging(e event) bool {
	return (e.typ() == "Dial" && e.str("dialstatus") == "RINGING") ||
		(e.typ() == "ChannelStateChange" && e.str("channel", "state") == "Ringing")
}

func sameKind(want, got event) bool {
	if want.typ() != got.typ() {
		return false
	}
	switch want.typ() {
	case "Dial":
		return want.str("dialstatus") == got.str("dialstatus")
	case "ChannelStateChange":
		return want.str("channel", "state") == got.str("channel", "state")
	}
	return true
}

// compareEvents matches every recorded event with the emulator's: per
// channel (or bridge) in order, except that "Dial RINGING" and
// "ChannelStateChange Ringing" may come either way round, as they did in
// Asterisk. Ids the emulator generated are learnt as they appear. Then every
// emulator event must have been matched, and events about one bridge must
// keep their recorded order.
func (r *replayer) compareEvents() {
	t := r.t
	var got []event
	for _, e := range r.ws.events() {
		if e.typ() != "ChannelVarset" {
			got = append(got, e)
		}
	}
	r.expected = r.acceptRingingFirst(r.expected, got)
	used := make([]bool, len(got))
	mapped := map[string]bool{} // emulator ids already claimed
	r.mu.Lock()
	for _, v := range r.idMap {
		mapped[v] = true
	}
	r.mu.Unlock()
	matchIdx := make([]int, len(r.expected))
	for i, want := range r.expected {
		wkey := eventKey(want)
		key, known := r.idMap[wkey]
		if !known && wkey != "" && !strings.Contains(wkey, ".") && !uuidRE.MatchString(wkey) {
			key, known = wkey, true // an id the client chose
		}
		found := -1
		candidates := 0
		for j, g := range got {
			if used[j] {
				continue
			}
			gkey := eventKey(g)
			if known && gkey != key {
				continue
			}
			if !known && (mapped[gkey] || g.typ() != want.typ()) {
				continue
			}
			candidates++
			if sameKind(want, g) {
				found = j
				break
			}
			// Only the ringing pair may be out of order, and only with each
			// other.
			if !(isRinging(want) && isRinging(g)) || candidates > 1 {
				break
			}
		}
		if found < 0 {
			t.Errorf("recorded event %d %s about %s (%s) not matched; emulator sent:%s", i, want.typ(), wkey, want.raw, summarize(got))
			return
		}
		used[found] = true
		matchIdx[i] = found
		if !known {
			r.learnID(wkey, eventKey(got[found]))
			mapped[eventKey(got[found])] = true
		}
		r.compareEvent(i, want, got[found])
	}
	for j, g := range got {
		if !used[j] {
			t.Errorf("emulator sent an event the recording does not have: %s", g.raw)
		}
	}
	// Per-bridge order (ChannelLeftBridge before BridgeDestroyed…).
	last := map[string]int{}
	for i, want := range r.expected {
		br := want.str("bridge", "id")
		if br == "" {
			continue
		}
		if prev, ok := last[br]; ok && matchIdx[i] < prev {
			t.Errorf("events about bridge %s out of order at recorded event %d (%s)", br, i, want.typ())
		}
		last[br] = matchIdx[i]
	}
}

func (r *replayer) compareEvent(i int, want, got event) {
	t := r.t
	where := fmt.Sprintf("event %d %s %s", i, want.typ(), eventKey(want))
	// Same keys in the same order as Asterisk wrote them (synthetic
	// expectations have no recorded bytes).
	if wk, gk := orderedKeys(want.raw), orderedKeys(got.raw); want.raw != nil && !slices.Equal(wk, gk) {
		t.Errorf("%s: keys\n  %v\nwant\n  %v", where, gk, wk)
	}
	for _, k := range []string{"cause", "cause_txt", "tech_cause", "soft", "dialstatus", "dialstring", "forward", "asterisk_id", "application", "caller_presentation"} {
		if want.str(k) != got.str(k) {
			t.Errorf("%s: %s = %q, want %q", where, k, got.str(k), want.str(k))
		}
	}
	if !astTimeRE.MatchString(got.str("timestamp")) {
		t.Errorf("%s: timestamp %q", where, got.str("timestamp"))
	}
	if w, g := fmt.Sprint(want.m["args"]), fmt.Sprint(got.m["args"]); w != g {
		t.Errorf("%s: args %s, want %s", where, g, w)
	}
	for _, obj := range []string{"channel", "peer"} {
		wc, ok := want.m[obj].(map[string]any)
		if !ok {
			continue
		}
		gc, _ := got.m[obj].(map[string]any)
		if want.typ() == "Dial" && want.str("dialstatus") == "RINGING" {
			// Whether the peer already says Ringing depends on which of the
			// pair came first.
			wc = cloneWithout(wc, "state")
			gc = cloneWithout(gc, "state")
		}
		r.compareJSON(where, obj, wc, gc)
	}
	if wb, ok := want.m["bridge"].(map[string]any); ok {
		r.compareJSON(where, "bridge", wb, got.m["bridge"])
	}
}

func cloneWithout(m map[string]any, key string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

// acceptRingingFirst handles the one race a replay cannot reproduce on
// purpose. In recording i ("now" case) the DELETE beat Asterisk's dial
// thread: ChannelHangupRequest (Down), then the first Dial, Dial NOANSWER,
// ChannelDestroyed 16. The emulator starts the dial as soon as the
// originate's 200 is written, so a DELETE sent after reading that 200 finds
// the channel already ringing. The README lists both as what Asterisk does
// ("DELETE right after the originate's 200 (still Down): the same, with or
// without a Ringing first"), so when the emulator's channel rang before its
// HangupRequest the expectation becomes the Ringing-first variant. The
// recorded order itself is checked by TestCancelRacingTheDial.
func (r *replayer) acceptRingingFirst(exp, got []event) []event {
	for i := 0; i < len(exp); i++ {
		hr := exp[i]
		if hr.typ() != "ChannelHangupRequest" || hr.str("channel", "state") != "Down" || hr.str("cause") != "32" {
			continue
		}
		key := eventKey(hr)
		j := i + 1
		for j < len(exp) && eventKey(exp[j]) != key {
			j++
		}
		if j == len(exp) || exp[j].typ() != "Dial" || exp[j].str("dialstatus") != "" {
			continue
		}
		emuKey := r.mapID(key)
		rang := false
		for _, g := range got {
			if eventKey(g) != emuKey {
				continue
			}
			if g.typ() == "ChannelHangupRequest" {
				break
			}
			if isRinging(g) {
				rang = true
			}
		}
		if !rang {
			continue
		}
		dial := exp[j]
		ringing := func(e event, typ, dialstatus string) event {
			m := deepCopy(e.m)
			m["type"] = typ
			delete(m, "cause")
			delete(m, "soft")
			if typ == "Dial" {
				m["dialstatus"] = dialstatus
			} else {
				ch := m["peer"]
				delete(m, "peer")
				for _, k := range []string{"dialstatus", "forward", "dialstring"} {
					delete(m, k)
				}
				m["channel"] = ch
			}
			return event{m: m}
		}
		seq := []event{
			dial,
			withState(ringing(dial, "ChannelStateChange", ""), "Ringing"),
			withState(ringing(dial, "Dial", "RINGING"), "Ringing"),
			withState(event{m: deepCopy(hr.m)}, "Ringing"),
		}
		var out []event
		out = append(out, exp[:i]...)
		out = append(out, seq...)
		for k := i + 1; k < len(exp); k++ {
			if k == j {
				continue
			}
			e := exp[k]
			if eventKey(e) == key && (e.str("channel", "state") == "Down" || e.str("peer", "state") == "Down") {
				e = withState(event{m: deepCopy(e.m)}, "Ringing")
			}
			out = append(out, e)
		}
		exp = out
	}
	return exp
}

func withState(e event, state string) event {
	for _, k := range []string{"channel", "peer"} {
		if c, ok := e.m[k].(map[string]any); ok {
			c["state"] = state
		}
	}
	e.raw = nil
	return e
}

func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	json.Unmarshal(b, &out)
	return out
}

type logfWriter struct{ t tb }

func (w logfWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
