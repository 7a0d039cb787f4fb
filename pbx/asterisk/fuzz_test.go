package asterisk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/CyCoreSystems/ari/v5"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// ---- fuzzing the event path: decoding and dispatch --------------------------

// quietPBX answers every REST call the way an idle Asterisk does for the
// calls event handling makes (addChannel, TALK_DETECT, hangup: 204; reads:
// 404), without logging.
func quietPBX(tb testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message": "Resource not found"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

// countingHandler counts events, whatever they are.
type countingHandler struct{ n atomic.Int64 }

func (c *countingHandler) HandleEvent(pbx.Event) { c.n.Add(1) }

// fuzzDriver is a driver whose workers run and whose REST goes to quietPBX,
// with no websocket: inputs are fed to dispatch as the reader would.
func fuzzDriver(tb testing.TB) *Driver {
	srv := quietPBX(tb)
	d, err := New(Config{URL: srv.URL + "/ari", User: "convoice", Password: "s3cret", App: "convoice",
		RequestTimeout: time.Second, TalkDetect: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	d.queueWait = 10 * time.Millisecond
	var h pbx.Handler = &countingHandler{}
	d.handler.Store(&h)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	d.runShards(ctx)
	go d.resyncLoop(ctx)
	return d
}

// settle waits until every shard has run what was queued before it.
func settle(d *Driver) {
	var dones []chan struct{}
	for _, s := range d.shards {
		t := task{fn: func() {}, done: make(chan struct{})}
		s.q <- t
		dones = append(dones, t.done)
	}
	for _, done := range dones {
		<-done
	}
}

// recordedFrames is every websocket message of every recording.
func recordedFrames(tb testing.TB) [][]byte {
	var out [][]byte
	for _, f := range pbxtest.Recordings[fixture](tb, "asterisk") {
		out = append(out, f.frames()...)
	}
	return out
}

// FuzzARIEventDispatch feeds arbitrary websocket messages through the
// driver's event path exactly as the reader does (dispatch: a first look at
// type and channel, then a shard worker decodes with ari.DecodeEvent and
// applies the event, making REST calls to a PBX that answers like an idle
// Asterisk). Nothing Asterisk (or anything pretending to be it) sends may
// panic a worker: a worker panic would take convoice down. The seed corpus
// is every frame of the recordings plus broken variants.
func FuzzARIEventDispatch(f *testing.F) {
	for _, fr := range recordedFrames(f) {
		f.Add(fr)
	}
	for _, s := range []string{
		``, `null`, `[]`, `{}`, `{"type":""}`, `{"type":7}`, `not json`,
		`{"type":"StasisStart"}`, `{"type":"StasisStart","channel":null,"args":null}`,
		`{"type":"StasisStart","channel":{"id":"x"},"args":[]}`,
		`{"type":"StasisStart","channel":{"id":"x"},"args":["c,d"]}`,
		`{"type":"Dial","peer":{"id":"x"},"dialstatus":"RINGING"}`,
		`{"type":"ChannelDestroyed","channel":{"id":"x","creationtime":17},"cause":"16"}`,
		`{"type":"ChannelHangupRequest","channel":{"id":"x"},"cause":4,"soft":true}`,
		`{"type":"ChannelStateChange","channel":{"id":"","state":"Ringing"}}`,
		`{"type":"ChannelTalkingFinished","channel":{"id":"x"},"duration":-1,"timestamp":"yesterday"}`,
		`{"type":"ApplicationReplaced","application":"convoice"}`,
	} {
		f.Add([]byte(s))
	}
	d := fuzzDriver(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _ = ari.DecodeEvent(raw) // the library's decoder on its own
		d.dispatch(raw)
		settle(d)
	})
}

// ---- a burst of 10,000 events with a slow consumer ----------------------------

// talkFrames makes n ChannelTalkingStarted/Finished frames (alternating,
// from the recorded frame of recording h) for channel id, the i-th stamped
// base+i ms so that the handled order can be checked.
func talkFrames(t *testing.T, id string, n int, base time.Time) [][]byte {
	t.Helper()
	var tmpl map[string]any
	for _, fr := range loadFixture(t, "h_mute_and_talk_detect.json").frames() {
		if strings.Contains(string(fr), `"ChannelTalkingStarted"`) {
			if err := json.Unmarshal(fr, &tmpl); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if tmpl == nil {
		t.Fatal("no ChannelTalkingStarted in recording h")
	}
	tmpl["channel"].(map[string]any)["id"] = id
	out := make([][]byte, n)
	for i := range out {
		tmpl["type"] = "ChannelTalkingStarted"
		delete(tmpl, "duration")
		if i%2 == 1 {
			tmpl["type"] = "ChannelTalkingFinished"
			tmpl["duration"] = 500
		}
		tmpl["timestamp"] = base.Add(time.Duration(i) * time.Millisecond).Format(ari.DateFormat)
		b, err := json.Marshal(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func burstDriver(t *testing.T, h pbx.Handler, mod func(*Driver)) (*Driver, *fakeREST) {
	t.Helper()
	f := newFakeREST(t)
	d, _ := newOfflineDriver(t, f, func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) })
	d.handler.Store(&h)
	if mod != nil {
		mod(d)
	}
	return d, f
}

// TestReliability_GivenBurstOf10000Events_WhenTheConsumerIsSlow_ThenAllHandledInOrderPerChannel:
// 10,000 talking events for two connected legs reach the reader back to
// back (more than a shard queue holds) while the handler takes its time
// over each: the reader waits for room instead of dropping (back-pressure
// on the PBX's socket), every event is handled, in the order sent per
// channel, and nothing is counted lost.
func TestReliability_GivenBurstOf10000Events_WhenTheConsumerIsSlow_ThenAllHandledInOrderPerChannel(t *testing.T) {
	c := pbxtest.NewSlowConsumer(20*time.Microsecond, false)
	d, _ := burstDriver(t, c, nil)
	legs := []string{"burst-leg-1", "burst-leg-2"}
	base := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	var frames [][][]byte
	for _, l := range legs {
		d.dialedForTest(l, "burst-conf")
		frames = append(frames, talkFrames(t, l, 5000, base))
	}
	for i := 0; i < 5000; i++ { // interleaved, as on the wire
		for _, fr := range frames {
			d.dispatch(fr[i])
		}
	}
	c.Wait(t, "10,000 events handled", func() bool { return c.Handled == 10000 })
	c.CheckOrder(t, base, legs, 0)
	if st := d.Status(); st.LostEvents != 0 {
		t.Fatalf("LostEvents = %d with a slow (not stuck) consumer", st.LostEvents)
	}
	if len(c.Lost) != 0 {
		t.Fatalf("EventLost reported: %+v", c.Lost)
	}
}

// TestReliability_GivenBurstOf10000Events_WhenTheConsumerIsStuck_ThenLossIsCountedResyncedAndReported:
// the same burst while the handler is stuck: once a shard queue stays full
// past the reader's wait, frames are dropped — each one counted in
// Status().LostEvents, so handled + lost = 10,000 (no silent loss); the
// events that were handled are still in order per channel; the driver
// resyncs with the PBX (GET /channels) and then reports pbx.EventLost so the
// controller resyncs too.
func TestReliability_GivenBurstOf10000Events_WhenTheConsumerIsStuck_ThenLossIsCountedResyncedAndReported(t *testing.T) {
	c := pbxtest.NewSlowConsumer(0, true)
	d, f := burstDriver(t, c, func(d *Driver) { d.queueWait = time.Millisecond })
	readyForTest(d) // a resync only runs on a live link
	legs := []string{"stuck-leg-1", "stuck-leg-2"}
	chans := []string{}
	for _, l := range legs {
		chans = append(chans, fmt.Sprintf(`{"id": %q, "name": "PJSIP/trunk-00000001", "state": "Up"}`, l))
	}
	f.on("GET", "/channels", 200, "["+strings.Join(chans, ",")+"]")
	f.on("GET", "/bridges", 200, "[]")
	base := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	var frames [][][]byte
	for _, l := range legs {
		d.dialedForTest(l, "burst-conf")
		frames = append(frames, talkFrames(t, l, 5000, base))
	}
	released := false
	for i := 0; i < 5000; i++ {
		for _, fr := range frames {
			d.dispatch(fr[i])
		}
		// Stuck until a hundred frames are gone, then slow again.
		if !released && d.Status().LostEvents >= 100 {
			c.Release()
			released = true
		}
	}
	if !released {
		t.Fatalf("the queues never overflowed (LostEvents %d)", d.Status().LostEvents)
	}
	lost := d.Status().LostEvents
	c.Wait(t, "every event handled or counted lost", func() bool { return int64(c.Handled)+lost == 10000 })
	c.CheckOrder(t, base, legs, 0)
	c.Wait(t, "EventLost", func() bool { return len(c.Lost) > 0 })
	if n := f.count("GET", "/channels"); n < 1 {
		t.Fatalf("EventLost reported without a resync (GET /channels %d times)", n)
	}
	if !strings.Contains(c.Lost[0].Reason, "dropped") {
		t.Fatalf("EventLost reason %q", c.Lost[0].Reason)
	}
	if st := d.Status(); st.LostEvents != lost {
		t.Fatalf("LostEvents moved from %d to %d after the burst", lost, st.LostEvents)
	}
}

// ---- an originate that times out but was placed --------------------------------

// TestReliability_GivenOriginateThatTimesOut_WhenTheCallShowsUpLater_ThenItIsHungUpNotBridged:
// Asterisk takes the originate but answers after our request timeout, so
// Dial reports ErrUnavailable (the controller ends the leg as failed and
// tells the user). The call was placed all the same: when it rings or
// answers, the driver hangs it up instead of reporting it and putting it
// into the conference, where it would be an invisible listener the store
// calls failed.
func TestReliability_GivenOriginateThatTimesOut_WhenTheCallShowsUpLater_ThenItIsHungUpNotBridged(t *testing.T) {
	f := newFakeREST(t)
	f.handle("POST", "/channels/leg-late", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answered too late: the driver has given up
	})
	var deletes atomic.Int32
	f.handle("DELETE", "/channels/leg-late", func(w http.ResponseWriter, r *http.Request) {
		if deletes.Add(1) == 1 {
			w.WriteHeader(http.StatusNotFound) // not placed yet when we cancel
			io.WriteString(w, `{"message": "Channel not found"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	d, rec := newOfflineDriver(t, f, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	readyForTest(d)
	err := d.Dial(context.Background(), pbx.DialRequest{LegID: "leg-late", ConferenceID: "conf-late", Number: "+12025550123"})
	if !errors.Is(err, pbx.ErrUnavailable) {
		t.Fatalf("Dial: %v, want ErrUnavailable", err)
	}
	pbxtest.Eventually(t, "the cancel attempt", func() bool { return deletes.Load() >= 1 })

	d.dispatch([]byte(`{"type":"ChannelStateChange","timestamp":"2026-11-27T05:00:00.000+0000","channel":{"id":"leg-late","name":"PJSIP/trunk-00000001","state":"Ringing"},"application":"convoice"}`))
	d.dispatch([]byte(`{"type":"StasisStart","timestamp":"2026-11-27T05:00:01.000+0000","args":["conf-late"],"channel":{"id":"leg-late","name":"PJSIP/trunk-00000001","state":"Up","dialplan":{"context":"default","exten":"s","priority":1,"app_name":"Stasis","app_data":"convoice,conf-late"}},"application":"convoice"}`))
	settle(d)
	if n := deletes.Load(); n < 2 {
		t.Fatalf("the late call was not hung up (%d DELETEs)", n)
	}
	if n := f.count("POST", "/bridges/conf-late/addChannel"); n != 0 {
		t.Fatalf("the late call was put into the conference")
	}
	for _, e := range rec.Of("leg-late") {
		if e.Type == pbx.EventConnected || e.Type == pbx.EventRinging {
			t.Fatalf("the late call was reported %s", e.Type)
		}
	}
}
