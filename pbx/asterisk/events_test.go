package asterisk

import (
	"time"

	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// replay feeds a recording's websocket frames to the driver, in order.
func replay(d *Driver, f fixture) {
	for _, fr := range f.frames() {
		d.dispatch(fr)
	}
}

func wantTypes(t *testing.T, rec *pbxtest.Recorder, leg string, want ...pbx.EventType) {
	t.Helper()
	if got := rec.Types(leg); !slices.Equal(got, want) {
		t.Fatalf("leg %s: events %v, want %v\n%s", leg, got, want, pbxtest.Dump(rec.All()))
	}
}

func endedOf(t *testing.T, rec *pbxtest.Recorder, leg string) pbx.Event {
	t.Helper()
	return rec.WaitEvent(t, leg, pbx.EventEnded)
}

// Recording a: two phones answer, each is added to the bridge on its
// StasisStart and reported ringing → connected → ended 16 (the cause of
// ChannelDestroyed, not the soft 32 of ChannelHangupRequest).
func TestGivenRecordingA_whenReplayed_thenLegsRingConnectJoinAndEndWithDestroyedCause(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	fx := dialedForRecordingA(t, d)
	replay(d, fx)
	wantRecordingALegs(t, rec)
	if n := f.count("POST", "/bridges/"+recordingABridge+"/addChannel"); n != 2 {
		t.Errorf("addChannel calls = %d, want 2", n)
	}
	for _, r := range f.requests() {
		if strings.HasSuffix(r.Path, "/addChannel") && !strings.HasPrefix(r.Query, "channel=1795756080.") {
			t.Errorf("addChannel query %q", r.Query)
		}
	}
	if got := d.Status().LostEvents; got != 0 {
		t.Errorf("LostEvents = %d, want 0 (every recorded frame decodes)", got)
	}
}

// Recording b: busy never reaches StasisStart: ended 17 "User busy", never
// connected, never added to a bridge.
func TestGivenRecordingB_busy_thenEndedCause17WithoutConnect(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	d.dialedForTest("1795756087.2", "conf-b")
	replay(d, loadFixture(t, "b_originate_busy.json"))
	e := endedOf(t, rec, "1795756087.2")
	if e.Cause != 17 || e.CauseText != "User busy" {
		t.Fatalf("ended %d %q, want 17 User busy", e.Cause, e.CauseText)
	}
	wantTypes(t, rec, "1795756087.2", pbx.EventEnded)
	if n := len(f.requests()); n != 0 {
		t.Errorf("driver made %d REST calls for a busy leg, want 0: %v", n, f.requests())
	}
}

// Recording c: rings, the originate timeout expires: ringing then ended 19.
func TestGivenRecordingC_noAnswer_thenRingingThenEnded19(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	d.dialedForTest("1795756090.3", "conf-c")
	replay(d, loadFixture(t, "c_originate_noanswer_timeout.json"))
	e := endedOf(t, rec, "1795756090.3")
	if e.Cause != 19 {
		t.Fatalf("cause %d, want 19", e.Cause)
	}
	wantTypes(t, rec, "1795756090.3", pbx.EventRinging, pbx.EventEnded)
}

// Recording i: our DELETE while ringing gives ChannelDestroyed 16 — the
// same as a normal hangup — so the driver marks the end as ours.
func TestGivenRecordingI_cancelWhileRinging_thenEndedSaysWeHungUp(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	d.dialedForTest("lab-chan-i-plain", "conf-i")
	if err := d.Hangup(context.Background(), "lab-chan-i-plain"); err != nil {
		t.Fatal(err)
	}
	fx := loadFixture(t, "i_cancel_before_answer.json")
	replay(d, fx)
	e := endedOf(t, rec, "lab-chan-i-plain")
	if e.Cause != 16 || e.Reason != "hung up by convoice" {
		t.Fatalf("ended cause %d reason %q, want 16 and our hangup", e.Cause, e.Reason)
	}
	wantTypes(t, rec, "lab-chan-i-plain", pbx.EventRinging, pbx.EventEnded)
	// The recording's other legs (not dialed by this driver) still map:
	// reason_code=21 → cause 21, reason=busy → 17.
	if e := endedOf(t, rec, "lab-chan-i-code"); e.Cause != 21 {
		t.Errorf("lab-chan-i-code cause %d, want 21", e.Cause)
	}
	if e := endedOf(t, rec, "lab-chan-i-busy"); e.Cause != 17 {
		t.Errorf("lab-chan-i-busy cause %d, want 17", e.Cause)
	}
}

// Recording j: the far end's BYE while bridged (HangupRequest without
// cause) ends the leg with 16; the other leg stays connected.
func TestGivenRecordingJ_farEndHangup_thenEnded16AndOtherLegUntouched(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	d.dialedForTest("lab-chan-j-0101", "lab-bridge-j")
	d.dialedForTest("lab-chan-j-0200", "lab-bridge-j")
	fx := loadFixture(t, "j_remote_hangup.json")
	// Up to the far end's hangup only (the recording's cleanup follows).
	var frames [][]byte
	for _, fr := range fx.frames() {
		frames = append(frames, fr)
		if strings.Contains(string(fr), `"ChannelDestroyed"`) {
			break
		}
	}
	for _, fr := range frames {
		d.dispatch(fr)
	}
	e := endedOf(t, rec, "lab-chan-j-0200")
	if e.Cause != 16 || e.Reason != "" {
		t.Fatalf("far-end hangup: cause %d reason %q, want 16 and no reason", e.Cause, e.Reason)
	}
	wantTypes(t, rec, "lab-chan-j-0200", pbx.EventRinging, pbx.EventConnected, pbx.EventEnded)
	rec.WaitEvent(t, "lab-chan-j-0101", pbx.EventConnected)
	wantTypes(t, rec, "lab-chan-j-0101", pbx.EventRinging, pbx.EventConnected)
}

// Recording h with TalkDetect: TALK_DETECT(set) is set before addChannel,
// and ChannelTalkingStarted becomes talking_started.
func TestGivenRecordingH_withTalkDetect_thenVariableBeforeAddChannelAndTalkingEvents(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, func(c *Config) { c.TalkDetect = true })
	d.dialedForTest("lab-chan-h-0101", "lab-bridge-h")
	d.dialedForTest("lab-chan-h-0111", "lab-bridge-h")
	replay(d, loadFixture(t, "h_mute_and_talk_detect.json"))
	for _, leg := range []string{"lab-chan-h-0101", "lab-chan-h-0111"} {
		endedOf(t, rec, leg)
		wantTypes(t, rec, leg, pbx.EventRinging, pbx.EventConnected, pbx.EventTalkingStarted, pbx.EventEnded)
		var order []string
		for _, r := range f.requests() {
			if r.Path == "/channels/"+leg+"/variable" {
				order = append(order, "variable:"+r.Query)
			}
			if strings.HasSuffix(r.Path, "/addChannel") && r.Query == "channel="+leg {
				order = append(order, "addChannel")
			}
		}
		want := []string{"variable:value=&variable=TALK_DETECT%28set%29", "addChannel"}
		if !slices.Equal(order, want) {
			t.Errorf("leg %s: requests %v, want %v", leg, order, want)
		}
	}
}

// extra/h2: ChannelTalkingFinished becomes talking_finished.
func TestGivenTalkDetectSpeech_thenTalkingStartedAndFinished(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	fx := loadFixture(t, "extra/h2_talk_detect_speech.json")
	var leg string
	for _, fr := range fx.frames() {
		if strings.Contains(string(fr), `"ChannelTalkingFinished"`) && leg == "" {
			var h frame
			_ = json.Unmarshal(fr, &h)
			leg = h.Channel.ID
		}
	}
	if leg == "" {
		t.Fatal("recording has no ChannelTalkingFinished")
	}
	d.dialedForTest(leg, "conf-h2")
	replay(d, fx)
	rec.WaitEvent(t, leg, pbx.EventTalkingFinished)
	evs := rec.Of(leg)
	if evs[0].Type == pbx.EventTalkingFinished {
		t.Fatalf("finished before started: %s", pbxtest.Dump(evs))
	}
}

// Duplicate frames are harmless: replaying recording a twice gives each
// event once, and one addChannel per leg.
func TestGivenDuplicateEvents_thenEachLegEventOnce(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	const bridge = "5881ad91-bb7a-44f0-b19a-96720dff2da6"
	d.dialedForTest("1795756080.0", bridge)
	d.dialedForTest("1795756080.1", bridge)
	fx := loadFixture(t, "a_bridge_two_phones.json")
	// Each frame twice in a row, then the whole recording again.
	for _, fr := range fx.frames() {
		d.dispatch(fr)
		d.dispatch(fr)
	}
	replay(d, fx)
	for _, leg := range []string{"1795756080.0", "1795756080.1"} {
		endedOf(t, rec, leg)
	}
	// Wait for the second pass to have drained: a sentinel on each shard.
	for _, leg := range []string{"1795756080.0", "1795756080.1"} {
		if err := d.enqueueWait(context.Background(), leg, func() {}); err != nil {
			t.Fatal(err)
		}
		wantTypes(t, rec, leg, pbx.EventRinging, pbx.EventConnected, pbx.EventEnded)
	}
	if n := f.count("POST", "/bridges/"+recordingABridge+"/addChannel"); n != 2 {
		t.Errorf("addChannel calls = %d, want 2", n)
	}
}

// A StasisStart for a channel this driver did not dial (a leg of an earlier
// run of convoice) is adopted: its conference comes from the Stasis args.
func TestGivenStasisStartOfUnknownLeg_thenJoinedToConferenceFromArgs(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	fx := loadFixture(t, "e_originate_with_channel_id.json")
	replay(d, fx)
	rec.WaitEvent(t, "lab-chan-e-0001", pbx.EventEnded)
	if n := f.count("POST", "/bridges/with-id/addChannel"); n != 1 {
		t.Fatalf("addChannel into the args' conference: %d calls, want 1: %v", n, f.requests())
	}
	wantTypes(t, rec, "lab-chan-e-0001", pbx.EventRinging, pbx.EventConnected, pbx.EventEnded)
}

// A late answer after EndConference is hung up, not joined (here a leg
// this run did not dial, whose Stasis argument names the ended conference).
func TestGivenConferenceEnded_whenLegAnswersLate_thenHungUpNotJoined(t *testing.T) {
	f := newFakeREST(t)
	f.on("GET", "/bridges/with-id", 404, `{"message": "Bridge not found"}`)
	d, rec := newOfflineDriver(t, f, nil)
	if err := d.EndConference(context.Background(), "with-id"); err != nil {
		t.Fatal(err)
	}
	for _, fr := range loadFixture(t, "e_originate_with_channel_id.json").frames() {
		d.dispatch(fr)
		if strings.Contains(string(fr), `"StasisStart"`) {
			break
		}
	}
	if err := d.enqueueWait(context.Background(), "lab-chan-e-0001", func() {}); err != nil {
		t.Fatal(err)
	}
	if n := f.count("POST", "/bridges/with-id/addChannel"); n != 0 {
		t.Errorf("late leg was added to an ended conference")
	}
	if n := f.count("DELETE", "/channels/lab-chan-e-0001"); n != 1 {
		t.Errorf("late leg not hung up (DELETEs: %d)", n)
	}
	if c := pbxtest.CountType(rec.All(), "lab-chan-e-0001", pbx.EventConnected); c != 0 {
		t.Errorf("late leg reported connected")
	}
}

// An undecodable frame is counted and reported as EventLost, never
// silently dropped.
func TestGivenUndecodableFrame_thenLostCountedAndEventLost(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	// A malformed field in an event the driver does not act on loses
	// nothing: not counted.
	d.dispatch([]byte(`{"type": "ChannelVarset", "channel": {"id": "x"}, "cause": "n/a"}`))
	d.dispatch([]byte(`{"type": "ChannelDestroyed", "channel": {"id": "x"}, "cause": "sixteen"}`))
	d.dispatch([]byte(`not json`))
	rec.WaitEvent(t, "", pbx.EventLost)
	if got := d.Status().LostEvents; got != 2 {
		t.Fatalf("LostEvents = %d, want 2", got)
	}
}

// A queue that stays full past the reader's wait drops the frame, counts it
// and reports EventLost: a stuck consumer never blocks the reader for
// long, and nothing is lost silently.
func TestGivenSlowHandler_whenQueueOverflows_thenLostCountedAndReported(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	d.queueWait = time.Millisecond
	block := make(chan struct{})
	rec.Block(block)
	d.dialedForTest("lab-chan-h-0101", "lab-bridge-h")
	var talk []byte
	for _, fr := range loadFixture(t, "h_mute_and_talk_detect.json").frames() {
		if strings.Contains(string(fr), `"ChannelTalkingStarted"`) && strings.Contains(string(fr), "lab-chan-h-0101") {
			talk = fr
			break
		}
	}
	for i := 0; i < shardQueue+50; i++ {
		d.dispatch(talk)
	}
	if got := d.Status().LostEvents; got < 1 {
		t.Fatalf("LostEvents = %d after overflowing the queue", got)
	}
	rec.Block(nil)
	close(block)
	rec.WaitEvent(t, "", pbx.EventLost)
}

// Noise (ChannelVarset, soft ChannelHangupRequest, bridge events) reaches
// no worker and makes no event.
func TestGivenOnlyNoiseFrames_thenNoEvents(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	d.dialedForTest("1795756080.0", "b")
	n := 0
	for _, fr := range loadFixture(t, "a_bridge_two_phones.json").frames() {
		s := string(fr)
		if strings.Contains(s, `"ChannelVarset"`) || strings.Contains(s, `"ChannelHangupRequest"`) ||
			strings.Contains(s, `"ChannelEnteredBridge"`) || strings.Contains(s, `"ChannelLeftBridge"`) ||
			strings.Contains(s, `"BridgeDestroyed"`) {
			d.dispatch(fr)
			n++
		}
	}
	if n < 10 {
		t.Fatalf("only %d noise frames in the recording", n)
	}
	for _, s := range d.shards {
		if len(s.q) != 0 {
			t.Fatalf("noise was queued")
		}
	}
	if evs := rec.All(); len(evs) != 0 {
		t.Fatalf("noise made events:\n%s", pbxtest.Dump(evs))
	}
}

// recordingABridge is the bridge of recording a's two calls.
const recordingABridge = "5881ad91-bb7a-44f0-b19a-96720dff2da6"

// dialedForRecordingA makes d know recording a's two calls as its own, as
// if it had placed them, and returns the recording.
func dialedForRecordingA(t *testing.T, d *Driver) fixture {
	fx := loadFixture(t, "a_bridge_two_phones.json")
	d.dialedForTest("1795756080.0", recordingABridge)
	d.dialedForTest("1795756080.1", recordingABridge)
	return fx
}

// wantRecordingALegs checks that recording a's two calls rang, connected
// and ended 16 "Normal Clearing" in their bridge.
func wantRecordingALegs(t *testing.T, rec *pbxtest.Recorder) {
	t.Helper()
	for _, leg := range []string{"1795756080.0", "1795756080.1"} {
		e := endedOf(t, rec, leg)
		if e.Cause != 16 || e.CauseText != "Normal Clearing" || e.ConferenceID != recordingABridge {
			t.Errorf("leg %s ended with %d %q conf %q, want 16 Normal Clearing in %s", leg, e.Cause, e.CauseText, e.ConferenceID, recordingABridge)
		}
		wantTypes(t, rec, leg, pbx.EventRinging, pbx.EventConnected, pbx.EventEnded)
	}
}
