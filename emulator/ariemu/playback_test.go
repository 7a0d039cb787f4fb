package ariemu

import (
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

func TestGivenPromptWhenPlayedStoppedOrHungUpThenPlaybackEventsAsRecorded(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 20 * time.Millisecond, DigitAfter: 100 * time.Millisecond}})
	c := connectApp(t, s, "convoice")

	// A play on a leg still ringing is refused like every control
	// operation (409), an unknown channel is 404, media is required.
	s.SetAnswerDelay(2 * time.Second)
	mustStatus(t, rest(t, s, "POST", originatePath("ringing", "PJSIP/+12025550101@trunk", ""), nil), 200)
	s.SetAnswerDelay(0)
	mustStatus(t, rest(t, s, "POST", "/ari/channels/ringing/play?media=sound:vm-press", nil), 409)
	mustStatus(t, rest(t, s, "POST", "/ari/channels/nosuch/play?media=sound:vm-press", nil), 404)

	mustStatus(t, rest(t, s, "POST", originatePath("key", "PJSIP/+12025550111@trunk", ""), nil), 200)
	c.waitEvent(t, "StasisStart", "key")
	mustStatus(t, rest(t, s, "POST", "/ari/channels/key/play/pb1", nil), 400)
	r := rest(t, s, "POST", "/ari/channels/key/play/pb1?media=sound:conf-getpin", nil)
	mustStatus(t, r, 201)
	if m := r.json(t).(map[string]any); m["id"] != "pb1" || m["target_uri"] != "channel:key" || m["state"] != "queued" {
		t.Errorf("201 body %v", m)
	}
	mustStatus(t, rest(t, s, "POST", "/ari/channels/key/play/pb1?media=sound:vm-press", nil), 409)
	waitFor(t, func() bool { return hasPlayback(c.events(), "PlaybackStarted", "pb1") })
	if m := rest(t, s, "GET", "/ari/playbacks/pb1", nil).json(t).(map[string]any); m["state"] != "playing" {
		t.Errorf("GET while playing: %v", m)
	}
	// The phone presses 1 mid-prompt: one event at the key's end, with
	// its length; the prompt goes on.
	dtmf := c.waitEvent(t, "ChannelDtmfReceived", "key")
	if dtmf.str("digit") != "1" || dtmf.m["duration_ms"] != float64(160) {
		t.Errorf("DTMF event %s", dtmf.raw)
	}
	if hasPlayback(c.events(), "PlaybackFinished", "pb1") {
		t.Error("the digit stopped the prompt")
	}
	// addChannel while it plays: the 204 only after the prompt's end.
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/b1?type=mixing", nil), 200)
	start := time.Now()
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/b1/addChannel?channel=key", nil), 204)
	if el := time.Since(start); el < time.Second {
		t.Errorf("addChannel answered after %v, before the 2.4 s prompt was over", el)
	}
	c.waitEvent(t, "ChannelEnteredBridge", "key")
	evs := c.events()
	if i, j := indexOf(evs, "PlaybackFinished"), indexOf(evs, "ChannelEnteredBridge"); i < 0 || j < i {
		t.Errorf("want PlaybackFinished then ChannelEnteredBridge: %s", summarize(evs))
	}
	mustStatus(t, rest(t, s, "GET", "/ari/playbacks/pb1", nil), 404)
	mustStatus(t, rest(t, s, "DELETE", "/ari/playbacks/pb1", nil), 404)

	// Stopped: 204 and PlaybackFinished "done"; a channel hanging up
	// mid-prompt ends its playback too.
	mustStatus(t, rest(t, s, "POST", "/ari/channels/key/play/pb2?media=sound:conf-getpin", nil), 201)
	waitFor(t, func() bool { return hasPlayback(c.events(), "PlaybackStarted", "pb2") })
	mustStatus(t, rest(t, s, "DELETE", "/ari/playbacks/pb2", nil), 204)
	waitFor(t, func() bool { return hasPlayback(c.events(), "PlaybackFinished", "pb2") })
	mustStatus(t, rest(t, s, "POST", "/ari/channels/key/play/pb3?media=sound:conf-getpin", nil), 201)
	waitFor(t, func() bool { return hasPlayback(c.events(), "PlaybackStarted", "pb3") })
	mustStatus(t, rest(t, s, "DELETE", "/ari/channels/key", nil), 204)
	waitFor(t, func() bool { return hasPlayback(c.events(), "PlaybackFinished", "pb3") })
	mustStatus(t, rest(t, s, "GET", "/ari/playbacks/pb3", nil), 404)
	for _, e := range c.events() {
		if e.typ() == "PlaybackFinished" {
			if st := e.str("playback", "state"); st != "done" {
				t.Errorf("PlaybackFinished state %q, want done", st)
			}
		}
	}
}

func hasPlayback(evs []event, typ, id string) bool {
	for _, e := range evs {
		if e.typ() == typ && e.str("playback", "id") == id {
			return true
		}
	}
	return false
}

func indexOf(evs []event, typ string) int {
	for i, e := range evs {
		if e.typ() == typ {
			return i
		}
	}
	return -1
}
