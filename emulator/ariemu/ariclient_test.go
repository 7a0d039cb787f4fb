package ariemu

import (
	"testing"
	"time"

	"github.com/CyCoreSystems/ari/v5"
	"github.com/CyCoreSystems/ari/v5/client/native"

	"github.com/convoice/convoice/emulator/emuphone"
)

// TestAriV5Client drives the emulator with the client library the Asterisk
// driver uses, through the calls convoice makes: mixing bridge with our id,
// originate with our channel id, addChannel, mute, TALK_DETECT, hangup,
// delete — all sent as the library sends them (JSON bodies). Events are read
// with golang.org/x/net/websocket, the library's own websocket package:
// native.Connect's reconnect loop writes an unsynchronised flag that its
// Close also writes, which the race detector rightly reports.
func TestAriV5Client(t *testing.T) {
	s := startServer(t, Config{User: "ari", Password: "ari", Timing: emuphone.Timing{Ring: 30 * time.Millisecond}})
	cl := native.New(&native.Options{
		Application:  "convoice",
		URL:          s.URL(),
		WebsocketURL: "ws://" + s.Addr() + "/ari/events",
		Username:     "ari",
		Password:     "ari",
	})
	ws := newWSClient(t)
	if err := ws.connect(s.Addr(), "app=convoice&api_key=ari:ari"); err != nil {
		t.Fatal(err)
	}
	next := func(typ string) ari.Event {
		t.Helper()
		e := ws.waitEvent(t, typ, "")
		ws.inbox.Consume(func(x event) bool { return &x.raw[0] == &e.raw[0] })
		ev, err := ari.DecodeEvent(e.raw)
		if err != nil {
			t.Fatalf("the library cannot decode %s: %v", e.raw, err)
		}
		return ev
	}

	bh, err := cl.Bridge().Create(ari.NewKey(ari.BridgeKey, "conf-1"), "mixing", "conf-1")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := cl.Channel().Originate(nil, ari.OriginateRequest{
		ChannelID: "leg-1", Endpoint: "PJSIP/+12025550101@trunk", App: "convoice",
		AppArgs: "leg-1", CallerID: "Convoice <+12025550100>", Timeout: 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	st := next(ari.Events.StasisStart).(*ari.StasisStart)
	if st.Channel.ID != "leg-1" || len(st.Args) != 1 || st.Args[0] != "leg-1" || st.Channel.Caller.Number != "+12025550100" {
		t.Errorf("StasisStart %+v", st)
	}
	if err := bh.AddChannel("leg-1"); err != nil {
		t.Fatal(err)
	}
	if e := next(ari.Events.ChannelEnteredBridge).(*ari.ChannelEnteredBridge); e.Bridge.ID != "conf-1" {
		t.Errorf("entered %s", e.Bridge.ID)
	}
	if err := ch.Mute(ari.DirectionIn); err != nil {
		t.Fatal(err)
	}
	if err := ch.SetVariable("TALK_DETECT(set)", ""); err != nil {
		t.Fatal(err)
	}
	next(ari.Events.ChannelTalkingStarted)
	chans := s.Channels()
	if len(chans) != 1 || !chans[0].MutedIn || chans[0].MutedOut || !chans[0].TalkDetect || chans[0].BridgeID != "conf-1" {
		t.Errorf("channel state %+v", chans)
	}
	// Our id again: 409, which the library keeps as a code.
	_, err = cl.Channel().Originate(nil, ari.OriginateRequest{ChannelID: "leg-1", Endpoint: "PJSIP/+12025550102@trunk", App: "convoice"})
	if code := native.CodeFromError(err); code != 409 {
		t.Errorf("duplicate originate: %v (code %d), want 409", err, code)
	}
	data, err := ch.Data()
	if err != nil || data.State != "Up" || data.Dialplan.Context != "from-trunk" {
		t.Errorf("channel data %+v %v", data, err)
	}
	if err := ch.Hangup(); err != nil {
		t.Fatal(err)
	}
	if d := next(ari.Events.ChannelDestroyed).(*ari.ChannelDestroyed); d.Cause != 16 || d.CauseTxt != "Normal Clearing" {
		t.Errorf("destroyed %d %q", d.Cause, d.CauseTxt)
	}
	if err := bh.Delete(); err != nil {
		t.Fatal(err)
	}
	next(ari.Events.BridgeDestroyed)
	if len(s.Bridges()) != 0 || len(s.Channels()) != 0 {
		t.Errorf("left behind: %+v %+v", s.Bridges(), s.Channels())
	}
}
