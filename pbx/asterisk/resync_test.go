package asterisk

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// serveRecordedState makes the fake answer the resync reads with what the
// recording answered to the first such reads at or after tms.
func serveRecordedState(t *testing.T, f *fakeREST, fx fixture, app string, tms float64) {
	t.Helper()
	for _, p := range []string{"/applications/" + app, "/channels", "/bridges"} {
		st, body := fx.responseAfter(t, "GET", "/ari"+p, tms)
		f.on("GET", p, st, string(body))
	}
}

func withApp(app string) func(*Config) { return func(c *Config) { c.App = app } }

// Recording l: two legs bridged and one ringing. The snapshot lists the
// three legs with their conference, answered/bridged flags, and the bridge.
func TestGivenRecordingL_whenSnapshot_thenLegsAndConferenceAsThePBXHoldsThem(t *testing.T) {
	fx := loadFixture(t, "l_applications_resync.json")
	f := newFakeREST(t)
	serveRecordedState(t, f, fx, "confbridge-lab", 0)
	d, _ := newOfflineDriver(t, f, withApp("confbridge-lab"))
	d.dialedForTest("lab-chan-l-0480", "lab-bridge-l")
	snap, err := d.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []pbx.LegSnapshot{
		{LegID: "lab-chan-l-0101", ConferenceID: "lab-bridge-l", Answered: true, InConference: true},
		{LegID: "lab-chan-l-0111", ConferenceID: "lab-bridge-l", Answered: true, InConference: true},
		{LegID: "lab-chan-l-0480", ConferenceID: "lab-bridge-l"},
	}
	if !slices.Equal(snap.Legs, want) {
		t.Fatalf("legs %+v\nwant %+v", snap.Legs, want)
	}
	if !slices.Equal(snap.Conferences, []string{"lab-bridge-l"}) {
		t.Fatalf("conferences %v", snap.Conferences)
	}
}

// An app that holds nothing is a 404 (recording m, part 2): an empty
// snapshot, not an error.
func TestGivenAppHoldsNothing_whenSnapshot_thenEmpty(t *testing.T) {
	fx := loadFixture(t, "m_websocket_drop_while_in_stasis.json")
	f := newFakeREST(t)
	st, body := fx.responseAfter(t, "GET", "/ari/applications/confbridge-lab", 11000)
	if st != 404 {
		t.Fatalf("recording changed: status %d", st)
	}
	f.on("GET", "/applications/confbridge-lab", st, string(body))
	f.on("GET", "/channels", 200, "[]")
	f.on("GET", "/bridges", 200, "[]")
	d, _ := newOfflineDriver(t, f, withApp("confbridge-lab"))
	snap, err := d.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Legs) != 0 || len(snap.Conferences) != 0 {
		t.Fatalf("snapshot %+v, want empty", snap)
	}
}

// Recording m: after the websocket gap, the leg whose far end hung up in
// the gap and the leg originated in the gap are gone; the resync reports
// them ended (the real cause went with the missed events), leaves the
// bridged leg alone, and does not mistake this for a restart.
func TestGivenRecordingM_whenResyncAfterReconnect_thenLegsGoneInTheGapEndedNoRestart(t *testing.T) {
	fx := loadFixture(t, "m_websocket_drop_while_in_stasis.json")
	f := newFakeREST(t)
	serveRecordedState(t, f, fx, "confbridge-lab", 9816) // the reads after the reconnect
	d, rec := newOfflineDriver(t, f, withApp("confbridge-lab"))
	for _, leg := range []string{"lab-chan-m-0101", "lab-chan-m-0200", "lab-chan-m-0111"} {
		d.dialedForTest(leg, "lab-bridge-m")
	}
	d.mu.Lock()
	d.legs["lab-chan-m-0101"].connected = true
	d.legs["lab-chan-m-0200"].connected = true
	d.mu.Unlock()
	if err := d.resync(context.Background(), true, ""); err != nil {
		t.Fatal(err)
	}
	for _, leg := range []string{"lab-chan-m-0200", "lab-chan-m-0111"} {
		e := rec.WaitEvent(t, leg, pbx.EventEnded)
		if e.Cause != 0 || e.Reason == "" {
			t.Errorf("%s: ended cause %d reason %q", leg, e.Cause, e.Reason)
		}
	}
	evs := rec.All()
	if n := pbxtest.CountType(evs, "", pbx.EventPBXRestarted); n != 0 {
		t.Fatalf("a websocket drop was taken for a restart:\n%s", pbxtest.Dump(evs))
	}
	if len(rec.Of("lab-chan-m-0101")) != 0 {
		t.Fatalf("the bridged leg got events:\n%s", pbxtest.Dump(evs))
	}
	for _, r := range f.requests() {
		if strings.HasSuffix(r.Path, "/addChannel") {
			t.Errorf("unexpected %s %s?%s", r.Method, r.Path, r.Query)
		}
	}
}

// A leg in Stasis but in no bridge (it answered while we were blind) is put
// into its bridge by the resync and reported connected, once.
func TestGivenLegAnsweredWhileBlind_whenResync_thenAddedToBridgeAndConnected(t *testing.T) {
	fx := loadFixture(t, "l_applications_resync.json")
	f := newFakeREST(t)
	serveRecordedState(t, f, fx, "confbridge-lab", 0)
	// The bridge as the PBX holds it once leg 0111 answered unseen.
	var bridges []map[string]any
	_, body := fx.response(t, "GET", "/ari/bridges", 0)
	if err := json.Unmarshal(body, &bridges); err != nil {
		t.Fatal(err)
	}
	bridges[0]["channels"] = []string{"lab-chan-l-0101"}
	b, _ := json.Marshal(bridges)
	f.on("GET", "/bridges", 200, string(b))

	d, rec := newOfflineDriver(t, f, withApp("confbridge-lab"))
	for _, leg := range []string{"lab-chan-l-0101", "lab-chan-l-0111", "lab-chan-l-0480"} {
		d.dialedForTest(leg, "lab-bridge-l")
	}
	d.mu.Lock()
	d.legs["lab-chan-l-0101"].connected = true
	d.legs["lab-chan-l-0111"].ringing = true
	d.legs["lab-chan-l-0480"].ringing = true
	d.mu.Unlock()
	for i := 0; i < 2; i++ { // twice: the second finds nothing new to report
		if err := d.resync(context.Background(), true, ""); err != nil {
			t.Fatal(err)
		}
	}
	e := rec.WaitEvent(t, "lab-chan-l-0111", pbx.EventConnected)
	if e.ConferenceID != "lab-bridge-l" || !strings.Contains(e.Reason, "while the event link was down") {
		t.Errorf("connected %+v", e)
	}
	if n := pbxtest.CountType(rec.All(), "lab-chan-l-0111", pbx.EventConnected); n != 1 {
		t.Errorf("connected reported %d times", n)
	}
	var adds []string
	for _, r := range f.requests() {
		if strings.HasSuffix(r.Path, "/addChannel") {
			adds = append(adds, r.Path+"?"+r.Query)
		}
	}
	if len(adds) < 1 || adds[0] != "/bridges/lab-bridge-l/addChannel?channel=lab-chan-l-0111" {
		t.Fatalf("addChannel requests %v", adds)
	}
	if len(rec.Of("lab-chan-l-0101"))+len(rec.Of("lab-chan-l-0480")) != 0 {
		t.Errorf("untouched legs got events:\n%s", pbxtest.Dump(rec.All()))
	}
	if d.Stats().BridgeFixes < 1 {
		t.Errorf("bridge fix not counted")
	}
}

// Recording f: after `core restart now` the state is empty and the startup
// time changed: one EventPBXRestarted, and the old state is forgotten.
func TestGivenRecordingF_whenReconnectAfterRestart_thenPBXRestarted(t *testing.T) {
	fx := loadFixture(t, "f_restart_mid_call.json")
	for _, tc := range []struct {
		name                string
		oldStartup, startup string
	}{
		{"startup time changed", "2026-11-27T05:07:59.489+0000", "2026-11-27T05:08:49.108+0000"},
		{"startup time unknown, our bridge gone", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeREST(t)
			serveRecordedState(t, f, fx, "confbridge-lab", 0)
			d, rec := newOfflineDriver(t, f, withApp("confbridge-lab"))
			d.startupTime = tc.oldStartup
			d.dialedForTest("1795756126.14", "ade85c70-cec6-47c0-9d59-10e8bccf24fc")
			if err := d.resync(context.Background(), true, tc.startup); err != nil {
				t.Fatal(err)
			}
			e := rec.WaitEvent(t, "", pbx.EventPBXRestarted)
			if e.Reason == "" {
				t.Error("no reason")
			}
			// Forgotten: a second reconnect finds nothing to compare.
			if err := d.resync(context.Background(), true, tc.startup); err != nil {
				t.Fatal(err)
			}
			if n := pbxtest.CountType(rec.All(), "", pbx.EventPBXRestarted); n != 1 {
				t.Fatalf("restarted reported %d times", n)
			}
		})
	}
}

// The first connect, knowing nothing, is not a restart.
func TestGivenNothingKnown_whenFirstConnect_thenNoRestart(t *testing.T) {
	fx := loadFixture(t, "f_restart_mid_call.json")
	f := newFakeREST(t)
	serveRecordedState(t, f, fx, "confbridge-lab", 0)
	d, rec := newOfflineDriver(t, f, withApp("confbridge-lab"))
	if err := d.resync(context.Background(), true, "2026-11-27T05:08:49.108+0000"); err != nil {
		t.Fatal(err)
	}
	if evs := rec.All(); len(evs) != 0 {
		t.Fatalf("events on a first connect:\n%s", pbxtest.Dump(evs))
	}
	if d.startupTime != "2026-11-27T05:08:49.108+0000" {
		t.Fatalf("startup time not kept")
	}
}
