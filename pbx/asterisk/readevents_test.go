package asterisk

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/net/websocket"
)

// The event reader decodes the frames straight from a real websocket:
// recording a's frames, one per websocket frame as Asterisk sends them,
// reach the legs as replayed byte by byte; a frame of an ignored type with
// a field of another shape costs nothing, one of a handled type is counted
// lost, and the stream stays in step after both (the next frames still
// arrive). Bytes that are not JSON end the connection (the driver then
// reconnects and resyncs): the decoder cannot find the next frame after
// them.
func TestReadEvents_RecordedFramesOverAWebsocket(t *testing.T) {
	f := newFakeREST(t)
	d, rec := newOfflineDriver(t, f, nil)
	frames := dialedForRecordingA(t, d).frames()
	half := len(frames) / 2
	var send [][]byte
	send = append(send, frames[:half]...)
	send = append(send,
		[]byte(`{"type": "ChannelVarset", "channel": {"id": "x"}, "cause": "n/a"}`),
		[]byte(`{"cause": "sixteen", "type": "ChannelDestroyed", "channel": {"id": "y"}}`))
	send = append(send, frames[half:]...)
	send = append(send, []byte(`not json`), frames[0])
	srv := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		for _, fr := range send {
			if err := websocket.Message.Send(ws, string(fr)); err != nil {
				return
			}
		}
		var rest []byte
		websocket.Message.Receive(ws, &rest) // until the client goes
	}))
	defer srv.Close()
	ws, err := websocket.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), "", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	err = d.readEvents(ws)
	var syntax *json.SyntaxError
	if !errors.As(err, &syntax) {
		t.Fatalf("reader ended with %v, want the JSON syntax error", err)
	}
	wantRecordingALegs(t, rec)
	if got := d.Status().LostEvents; got != 2 {
		t.Errorf("LostEvents = %d, want 2 (the handled frame of another shape, the bytes that are not JSON)", got)
	}
	if got, want := d.stats.eventsReceived.Load(), int64(len(frames)+2); got != want {
		t.Errorf("%d frames dispatched, want %d (none after the bytes that are not JSON)", got, want)
	}
}
