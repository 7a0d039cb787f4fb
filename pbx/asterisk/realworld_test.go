package asterisk

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/ariemu"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// Tests of the call engine under real-world conditions (early media, slow
// originates, partitions, other replicas, cause 0, confirm-to-join),
// against the emulator behaving as recorded.

// bridgeWatch polls the emulator and remembers whether the leg was ever in
// a bridge.
func bridgeWatch(t *testing.T, emu *ariemu.Server, leg string) (everBridged func() bool, stop func()) {
	t.Helper()
	var mu sync.Mutex
	bridged := false
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if c, ok := emuChannel(emu, leg); ok && c.BridgeID != "" {
				mu.Lock()
				bridged = true
				mu.Unlock()
			}
		}
	}()
	stop = sync.OnceFunc(func() { close(done); <-finished })
	t.Cleanup(stop)
	return func() bool { mu.Lock(); defer mu.Unlock(); return bridged }, stop
}

// Early media (o): Dial PROGRESS is ringing; the leg is not in the bridge
// during the early media (it is not in Stasis); connected and bridged
// after the 200. 183 then 480: ended 19, never bridged, never connected.
func TestEmu_givenEarlyMedia_thenRingingUnbridgedUntilAnswer_and480EndsWith19(t *testing.T) {
	emu := startEmu(t, func(c *ariemu.Config) { c.Timing.EarlyMedia = 800 * time.Millisecond })
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-em")
	if err := dial(t, d, "leg-183", "conf-em", "+12025550183", 0); err != nil {
		t.Fatal(err)
	}
	if err := dial(t, d, "leg-187", "conf-em", "+12025550187", 0); err != nil {
		t.Fatal(err)
	}
	bridged187, stop187 := bridgeWatch(t, emu, "leg-187")
	rec.WaitEvent(t, "leg-183", pbx.EventRinging)
	rec.WaitEvent(t, "leg-187", pbx.EventRinging)
	time.Sleep(300 * time.Millisecond) // inside the early media
	if c, ok := emuChannel(emu, "leg-183"); !ok || c.BridgeID != "" || c.InStasis {
		t.Fatalf("during early media: %+v", c)
	}
	if n := pbxtest.CountType(rec.All(), "leg-183", pbx.EventConnected); n != 0 {
		t.Fatal("connected during early media")
	}
	rec.WaitEvent(t, "leg-183", pbx.EventConnected)
	if c, ok := emuChannel(emu, "leg-183"); !ok || c.BridgeID != "conf-em" {
		t.Fatalf("after the answer: %+v", c)
	}
	e := rec.WaitEvent(t, "leg-187", pbx.EventEnded)
	stop187()
	if e.Cause != pbx.CauseNoAnswer {
		t.Errorf("183 then 480 ended %+v, want 19", e)
	}
	if bridged187() || pbxtest.CountType(rec.All(), "leg-187", pbx.EventConnected) != 0 {
		t.Error("the 480 leg was bridged or connected")
	}
	wantTypes(t, rec, "leg-187", pbx.EventRinging, pbx.EventEnded)
}

// Hang-up while the originate is still held by a slow Asterisk (DELETE
// 404): Hangup succeeds, the channel is hung up as soon as it exists, never
// bridged, never reported ringing or connected; its end is ours.
func TestEmu_givenSlowOriginate_whenHungUpBeforeTheChannelExists_thenHungUpOnSightNeverBridged(t *testing.T) {
	var mu sync.Mutex
	var created time.Time
	emu := startEmu(t, func(c *ariemu.Config) {
		c.OnOriginate = func(_ string, at time.Time) { mu.Lock(); created = at; mu.Unlock() }
	})
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-slow")
	emu.SetOriginateDelay(600 * time.Millisecond)
	dialed := make(chan error, 1)
	go func() { dialed <- dial(t, d, "leg-slow", "conf-slow", numAnswer, 0) }()
	pbxtest.Eventually(t, "the originate in flight", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		l := d.legs["leg-slow"]
		return l != nil && l.dialing
	})
	if err := d.Hangup(context.Background(), "leg-slow"); err != nil {
		t.Fatalf("Hangup during the originate: %v", err)
	}
	bridged, stop := bridgeWatch(t, emu, "leg-slow")
	if err := <-dialed; err != nil {
		t.Fatalf("Dial: %v", err)
	}
	e := rec.WaitEvent(t, "leg-slow", pbx.EventEnded)
	mu.Lock()
	lived := time.Since(created)
	mu.Unlock()
	stop()
	if created.IsZero() || lived > time.Second {
		t.Errorf("the cancelled channel lived %v after it was created", lived)
	}
	if e.Reason != "hung up by convoice" {
		t.Errorf("ended %+v, want ours", e)
	}
	if bridged() {
		t.Error("the cancelled leg was bridged")
	}
	wantTypes(t, rec, "leg-slow", pbx.EventEnded)
	if _, ok := emuChannel(emu, "leg-slow"); ok {
		t.Error("channel still on the PBX")
	}
}

// A partition longer than a few pings: not ready, link down, reconnected
// when healed with the same startup_time: link up, no restart, the call
// still up not ended, the call gone meanwhile reported by the resync.
func TestEmu_givenPartition_whenHealed_thenLinkUpNoRestartLiveCallsKept(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-part")
	connectLeg(t, d, rec, "leg-stay", "conf-part")
	connectLeg(t, d, rec, "leg-gone", "conf-part")
	emu.SetPartitioned(true)
	rec.WaitEvent(t, "", pbx.EventLinkDown)
	if d.Status().Ready {
		t.Error("ready during the partition")
	}
	if err := emu.FarEndHangup("leg-gone"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * 250 * time.Millisecond) // several ping intervals more
	emu.SetPartitioned(false)
	rec.WaitFor(t, "link up again", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) >= 2 })
	rec.WaitEvent(t, "leg-gone", pbx.EventEnded)
	if n := pbxtest.CountType(rec.All(), "leg-stay", pbx.EventEnded); n != 0 {
		t.Errorf("the call still up was ended: %s", pbxtest.Dump(rec.All()))
	}
	if n := pbxtest.CountType(rec.All(), "", pbx.EventPBXRestarted); n != 0 {
		t.Errorf("a partition reported as a restart")
	}
	if c, ok := emuChannel(emu, "leg-stay"); !ok || c.BridgeID != "conf-part" {
		t.Errorf("the call still up: %+v", c)
	}
}

// When every call of ours ended during a partition, the same startup_time
// still says "same Asterisk": no restart (the old guess "none of our
// channels left" called it one, ending the conference).
func TestEmu_givenPartition_whenAllOurCallsEndedMeanwhile_thenNoRestart(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-all")
	connectLeg(t, d, rec, "leg-only", "conf-all")
	// Another replica ends the conference's bridge, then the network
	// between us and Asterisk breaks and the last call ends: nothing of
	// ours is left when we are back.
	other := newRESTClient(emu.URL(), emuUser, emuPass, 2*time.Second, nil)
	if err := other.do(context.Background(), "DELETE", "/bridges/conf-all", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	emu.SetPartitioned(true)
	rec.WaitEvent(t, "", pbx.EventLinkDown)
	if err := emu.FarEndHangup("leg-only"); err != nil {
		t.Fatal(err)
	}
	emu.SetPartitioned(false)
	rec.WaitFor(t, "link up again", func(evs []pbx.Event) bool { return pbxtest.CountType(evs, "", pbx.EventLinkUp) >= 2 })
	rec.WaitEvent(t, "leg-only", pbx.EventEnded)
	if n := pbxtest.CountType(rec.All(), "", pbx.EventPBXRestarted); n != 0 {
		t.Errorf("same startup_time reported as a restart: %s", pbxtest.Dump(rec.All()))
	}
}

// A replica without the event link hangs up a leg it never placed, and
// ends the conference; a leg of that conference answering afterwards is
// hung up by the owner, and the bridge is not made again.
func TestPassive_givenLegsOfAnotherReplica_whenHungUpAndConferenceEnded_thenEndedAndBridgeNotRecreated(t *testing.T) {
	emu := startEmu(t, func(c *ariemu.Config) { c.Timing.SlowRing = 1500 * time.Millisecond })
	owner, rec := runDriver(t, emu.URL(), true, nil)
	passive := startPassive(t, emu.URL())
	createConf(t, owner, "conf-x")
	if err := dial(t, owner, "leg-ring", "conf-x", numNoAnswer, 0); err != nil {
		t.Fatal(err)
	}
	if err := dial(t, owner, "leg-late", "conf-x", numSlowRing, 0); err != nil {
		t.Fatal(err)
	}
	rec.WaitEvent(t, "leg-ring", pbx.EventRinging)
	rec.WaitEvent(t, "leg-late", pbx.EventRinging)
	if err := passive.Hangup(context.Background(), "leg-ring"); err != nil {
		t.Fatalf("passive Hangup of a leg it never placed: %v", err)
	}
	rec.WaitEvent(t, "leg-ring", pbx.EventEnded)
	// The passive replica ends the conference without knowing leg-late.
	if err := passive.EndConference(context.Background(), "conf-x"); err != nil {
		t.Fatal(err)
	}
	e := rec.WaitEvent(t, "leg-late", pbx.EventEnded)
	if n := pbxtest.CountType(rec.All(), "leg-late", pbx.EventConnected); n != 0 {
		t.Errorf("the late leg was connected: %+v", e)
	}
	for _, b := range emu.Bridges() {
		if b.ID == "conf-x" {
			t.Fatalf("the ended conference's bridge was made again: %+v", b)
		}
	}
}

// Cause 0 (a carrier BYE without a Reason header reaches ARI as cause 0
// "Unknown") on a connected leg: ended with cause 0 and no error words.
func TestGivenConnectedLegDestroyedWithCause0_thenEndedCause0WithoutErrorText(t *testing.T) {
	f := newFakeREST(t)
	f.on("POST", "/bridges/conf-0/addChannel", 204, "")
	d, rec := newOfflineDriver(t, f, nil)
	d.dialedForTest("leg-0", "conf-0")
	d.dispatch([]byte(`{"type":"StasisStart","timestamp":"2026-12-06T10:00:00.000+0000","args":["conf-0"],"channel":{"id":"leg-0","state":"Up"}}`))
	rec.WaitEvent(t, "leg-0", pbx.EventConnected)
	d.dispatch([]byte(`{"type":"ChannelHangupRequest","timestamp":"2026-12-06T10:00:05.000+0000","channel":{"id":"leg-0","state":"Up"}}`))
	d.dispatch([]byte(`{"type":"ChannelDestroyed","timestamp":"2026-12-06T10:00:05.010+0000","cause":0,"cause_txt":"Unknown","channel":{"id":"leg-0","state":"Up"}}`))
	e := rec.WaitEvent(t, "leg-0", pbx.EventEnded)
	if e.Cause != 0 || (e.CauseText != "" && e.CauseText != "Normal") || e.Reason != "" {
		t.Errorf("ended %+v, want cause 0 with no error text", e)
	}
}

// Confirm-to-join, offline with the recorded shapes (q): on StasisStart the
// leg is answered, not bridged, and hears the prompt with our playback id;
// another key does nothing; the key during the prompt stops it (DELETE
// /playbacks/{id}) before addChannel; a second press does no harm.
func TestGivenConfirmLeg_whenKeysArrive_thenPromptStoppedBridgedOnceOnTheKeyOnly(t *testing.T) {
	f := newFakeREST(t)
	f.on("POST", "/channels/leg-c/play/leg-c-confirm-1", 201, `{"id":"leg-c-confirm-1","state":"queued"}`)
	f.on("DELETE", "/playbacks/leg-c-confirm-1", 204, "")
	f.on("POST", "/bridges/conf-c/addChannel", 204, "")
	d, rec := newOfflineDriver(t, f, nil)
	d.dialedForTest("leg-c", "conf-c")
	d.mu.Lock()
	d.legs["leg-c"].confirm = newConfirmState(&pbx.Confirm{Timeout: time.Minute})
	d.mu.Unlock()
	frame := func(s string) { d.dispatch([]byte(s)) }
	frame(`{"type":"StasisStart","timestamp":"2026-12-06T10:00:00.000+0000","args":["conf-c"],"channel":{"id":"leg-c","state":"Up"}}`)
	rec.WaitEvent(t, "leg-c", pbx.EventAnswered)
	pbxtest.Eventually(t, "the prompt", func() bool { return f.count("POST", "/channels/leg-c/play/leg-c-confirm-1") == 1 })
	var media string
	for _, r := range f.requests() {
		if r.Path == "/channels/leg-c/play/leg-c-confirm-1" {
			media = r.Query
		}
	}
	if media != "media=sound%3Avm-press%2Cdigits%3A1" {
		t.Errorf("default prompt query %q", media)
	}
	frame(`{"type":"ChannelDtmfReceived","timestamp":"2026-12-06T10:00:00.500+0000","digit":"2","duration_ms":160,"channel":{"id":"leg-c","state":"Up"}}`)
	frame(`{"type":"ChannelDtmfReceived","timestamp":"2026-12-06T10:00:00.900+0000","digit":"1","duration_ms":160,"channel":{"id":"leg-c","state":"Up"}}`)
	rec.WaitEvent(t, "leg-c", pbx.EventConnected)
	frame(`{"type":"ChannelDtmfReceived","timestamp":"2026-12-06T10:00:01.400+0000","digit":"1","duration_ms":160,"channel":{"id":"leg-c","state":"Up"}}`)
	frame(`{"type":"PlaybackFinished","timestamp":"2026-12-06T10:00:01.500+0000","playback":{"id":"leg-c-confirm-1","target_uri":"channel:leg-c","state":"done"}}`)
	settle(d)
	var order []string
	for _, r := range f.requests() {
		order = append(order, r.Method+" "+r.Path)
	}
	want := []string{"POST /channels/leg-c/play/leg-c-confirm-1", "DELETE /playbacks/leg-c-confirm-1", "POST /bridges/conf-c/addChannel"}
	if len(order) != len(want) {
		t.Fatalf("requests %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("requests %v, want %v", order, want)
		}
	}
	wantTypes(t, rec, "leg-c", pbx.EventAnswered, pbx.EventConnected)
}

// Against the emulator: …0111 presses 1 after answering and joins only
// then; …0190 (voicemail) never presses, is hung up after Tries×Timeout
// and never was in the bridge.
func TestEmu_givenConfirm_then0111JoinsOnTheKeyAnd0190IsHungUpUnbridged(t *testing.T) {
	emu := startEmu(t, nil)
	d, rec := runDriver(t, emu.URL(), true, nil)
	createConf(t, d, "conf-k")
	confirm := &pbx.Confirm{Timeout: 400 * time.Millisecond, Tries: 2}
	for leg, number := range map[string]string{"leg-111": "+12025550111", "leg-190": "+12025550190"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := d.Dial(ctx, pbx.DialRequest{LegID: leg, ConferenceID: "conf-k", Number: number, Confirm: confirm})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	bridged190, stop190 := bridgeWatch(t, emu, "leg-190")
	rec.WaitEvent(t, "leg-111", pbx.EventAnswered)
	if c, _ := emuChannel(emu, "leg-111"); c.BridgeID != "" {
		t.Fatalf("bridged before the key: %+v", c)
	}
	rec.WaitEvent(t, "leg-111", pbx.EventConnected)
	if c, _ := emuChannel(emu, "leg-111"); c.BridgeID != "conf-k" {
		t.Fatalf("not bridged after the key: %+v", c)
	}
	rec.WaitEvent(t, "leg-190", pbx.EventAnswered)
	e := rec.WaitEvent(t, "leg-190", pbx.EventEnded)
	stop190()
	if e.Reason != "hung up by convoice" || bridged190() {
		t.Errorf("0190: ended %+v, bridged %v", e, bridged190())
	}
	wantTypes(t, rec, "leg-190", pbx.EventRinging, pbx.EventAnswered, pbx.EventEnded)
	wantTypes(t, rec, "leg-111", pbx.EventRinging, pbx.EventAnswered, pbx.EventConnected)
}
