package asterisk

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

func readyForTest(d *Driver) { d.health.Set(true, "test") }

func dialReq(leg, number string) pbx.DialRequest {
	return pbx.DialRequest{LegID: leg, ConferenceID: "conf-1", Number: number,
		CallerIDName: `Ann "the host" <x>`, CallerIDNumber: "+12025550100", RingTimeout: 1500 * time.Millisecond}
}

// The originate is POST /channels/{leg} with the recorded JSON-body form:
// endpoint from the routes, our app, the conference as app argument,
// `"Name" <number>`, and the timeout in whole seconds.
func TestGivenDial_thenOriginateCarriesRouteAppConferenceCallerIDAndTimeout(t *testing.T) {
	f := newFakeREST(t)
	fx := loadFixture(t, "e_originate_with_channel_id.json")
	_, body := fx.response(t, "POST", "/ari/channels/lab-chan-e-0001", 0)
	f.on("POST", "/channels/leg-1", 200, string(body))
	d, _ := newOfflineDriver(t, f, nil)
	readyForTest(d)
	if err := d.Dial(context.Background(), dialReq("leg-1", "+12025550123")); err != nil {
		t.Fatal(err)
	}
	r := f.requests()[0]
	var got map[string]any
	if err := json.Unmarshal([]byte(r.Body), &got); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
	want := map[string]any{"endpoint": "PJSIP/+12025550123@trunk", "app": "convoice", "appArgs": "conf-1",
		"callerId": `"Ann the host x" <+12025550100>`, "timeout": float64(2)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v (body %s)", k, got[k], v, r.Body)
		}
	}
}

// Every recorded refusal of an originate maps onto the pbx sentinels and
// keeps Asterisk's words and the status.
func TestGivenRecordedOriginateAnswers_thenDialErrorsMapToSentinels(t *testing.T) {
	d := loadFixture(t, "d_originate_bad_endpoint.json")
	e := loadFixture(t, "e_originate_with_channel_id.json")
	pick := func(fx fixture, path string, n int) (int, string) {
		st, b := fx.response(t, "POST", path, n)
		return st, string(b)
	}
	cases := []struct {
		name    string
		fx      fixture
		path    string
		n       int
		want    error
		message string
	}{
		{"allocation failed (unknown endpoint)", d, "/ari/channels", 0, pbx.ErrRefused, "Allocation failed"},
		{"invalid endpoint", d, "/ari/channels", 3, pbx.ErrRefused, "Invalid endpoint specified"},
		{"duplicate id", e, "/ari/channels/lab-chan-e-0001", 1, pbx.ErrExists, "already exists"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := pick(c.fx, c.path, c.n)
			f := newFakeREST(t)
			f.on("POST", "/channels/leg-x", status, body)
			drv, _ := newOfflineDriver(t, f, nil)
			readyForTest(drv)
			err := drv.Dial(context.Background(), dialReq("leg-x", "+12025550123"))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != status {
				t.Fatalf("status lost: %v", err)
			}
			if !strings.Contains(err.Error(), c.message) {
				t.Fatalf("message lost: %v", err)
			}
		})
	}
}

func TestGivenPBXNotBooted_whenDial_thenUnavailable(t *testing.T) {
	f := newFakeREST(t)
	f.on("POST", "/channels/leg-1", 503, `{"message": "Asterisk not booted"}`)
	d, _ := newOfflineDriver(t, f, nil)
	readyForTest(d)
	err := d.Dial(context.Background(), dialReq("leg-1", "+12025550123"))
	if !errors.Is(err, pbx.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

// A stalled Asterisk does not hang the caller: RequestTimeout bounds it.
func TestGivenStalledPBX_whenDial_thenUnavailableAfterRequestTimeout(t *testing.T) {
	f := newFakeREST(t)
	release := make(chan struct{})
	defer close(release)
	f.handle("POST", "/channels/leg-1", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	d, _ := newOfflineDriver(t, f, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	readyForTest(d)
	done := make(chan error, 1)
	go func() { done <- d.Dial(context.Background(), dialReq("leg-1", "+12025550123")) }()
	select {
	case err := <-done:
		if !errors.Is(err, pbx.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Dial hung on a stalled PBX")
	}
}

func TestGivenNothingListens_whenDial_thenUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d, err := New(Config{URL: "http://" + addr + "/ari", User: "u", Password: "p", Logger: pbxtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	readyForTest(d)
	err = d.Dial(context.Background(), dialReq("leg-1", "+12025550123"))
	if !errors.Is(err, pbx.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

// Dial while the event link is not up fails at once, without touching the
// PBX (Asterisk would ring the phone and drop it on answer: recording m).
func TestGivenLinkNotReady_whenDial_thenUnavailableWithoutOriginate(t *testing.T) {
	f := newFakeREST(t)
	d, _ := newOfflineDriver(t, f, nil)
	err := d.Dial(context.Background(), dialReq("leg-1", "+12025550123"))
	if !errors.Is(err, pbx.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if n := len(f.requests()); n != 0 {
		t.Fatalf("%d requests sent while the link is down", n)
	}
}

func TestGivenNoRoute_whenDial_thenRefused(t *testing.T) {
	f := newFakeREST(t)
	rs, err := pbx.ParseRoutes(`^\+1555=PJSIP/{e164}@lab`)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := newOfflineDriver(t, f, func(c *Config) { c.Routes = rs })
	readyForTest(d)
	err = d.Dial(context.Background(), dialReq("leg-1", "+12025550123"))
	if !errors.Is(err, pbx.ErrRefused) || !errors.Is(err, pbx.ErrNoRoute) {
		t.Fatalf("err = %v, want ErrRefused wrapping ErrNoRoute", err)
	}
}

// Recorded answers of k/d for mute, hangup and bridges.
func TestGivenRecordedAnswers_thenMuteHangupAndConferenceErrorsMap(t *testing.T) {
	k := loadFixture(t, "k_unhappy_bridge_ops.json")
	st409, b409 := k.response(t, "POST", "/ari/channels/lab-chan-k-0480/mute", 0)
	st404, b404 := k.response(t, "POST", "/ari/channels/no-such-channel/mute", 0)
	stDup, bDup := k.response(t, "POST", "/ari/bridges/lab-bridge-k", 1)
	d := loadFixture(t, "d_originate_bad_endpoint.json")
	stH404, bH404 := d.response(t, "DELETE", "/ari/channels/does-not-exist", 0)

	f := newFakeREST(t)
	f.on("POST", "/channels/ringing/mute", st409, string(b409))
	f.on("POST", "/channels/gone/mute", st404, string(b404))
	f.on("DELETE", "/channels/gone", stH404, string(bH404))
	f.on("POST", "/bridges/conf-1", stDup, string(bDup))
	f.on("POST", "/channels/up/mute", 204, "")
	f.on("DELETE", "/channels/up/mute", 204, "")
	drv, _ := newOfflineDriver(t, f, nil)
	ctx := context.Background()

	if err := drv.SetMute(ctx, "conf-1", "ringing", true); !errors.Is(err, pbx.ErrNotReady) {
		t.Errorf("mute of a ringing leg: %v, want ErrNotReady", err)
	}
	if err := drv.SetMute(ctx, "conf-1", "gone", true); !errors.Is(err, pbx.ErrNotFound) {
		t.Errorf("mute of an unknown leg: %v, want ErrNotFound", err)
	}
	if err := drv.Hangup(ctx, "gone"); !errors.Is(err, pbx.ErrNotFound) {
		t.Errorf("hangup of an unknown leg: %v, want ErrNotFound", err)
	}
	if err := drv.CreateConference(ctx, "conf-1"); err != nil {
		t.Errorf("create of an existing bridge (409): %v, want nil", err)
	}
	if err := drv.SetMute(ctx, "conf-1", "up", true); err != nil {
		t.Errorf("mute: %v", err)
	}
	if err := drv.SetMute(ctx, "conf-1", "up", false); err != nil {
		t.Errorf("unmute: %v", err)
	}
	var mutes []string
	for _, r := range f.requests() {
		if r.Path == "/channels/up/mute" {
			mutes = append(mutes, r.Method+"?"+r.Query)
		}
	}
	if strings.Join(mutes, " ") != "POST?direction=in DELETE?direction=in" {
		t.Errorf("mute requests %v", mutes)
	}
	for _, r := range f.requests() {
		if r.Path == "/bridges/conf-1" && r.Query != "name=convoice%3Aconf-1&type=mixing" {
			t.Errorf("create bridge query %q", r.Query)
		}
	}
	// 422 on addChannel of a ringing leg is "not ready" too.
	f.on("POST", "/channels/ringing422/mute", 422, `{"message": "Channel not in Stasis application"}`)
	if err := drv.SetMute(ctx, "conf-1", "ringing422", true); !errors.Is(err, pbx.ErrNotReady) {
		t.Errorf("422: %v, want ErrNotReady", err)
	}
}

// EndConference hangs up the bridge's channels and the legs still ringing
// for it, then deletes the bridge; it takes the DELETE's 204 as the end.
func TestGivenConferenceWithBridgedAndRingingLegs_whenEnd_thenAllHungUpAndBridgeDeleted(t *testing.T) {
	l := loadFixture(t, "l_applications_resync.json")
	_, bridge := l.response(t, "GET", "/ari/bridges/lab-bridge-l", 0)
	f := newFakeREST(t)
	f.on("GET", "/bridges/lab-bridge-l", 200, string(bridge))
	f.on("DELETE", "/channels/lab-chan-l-0111", 404, `{"message": "Channel not found"}`) // gone meanwhile: fine
	drv, _ := newOfflineDriver(t, f, nil)
	drv.dialedForTest("lab-chan-l-0480", "lab-bridge-l") // ringing, not in the bridge
	drv.dialedForTest("other-conf-leg", "another")
	if err := drv.EndConference(context.Background(), "lab-bridge-l"); err != nil {
		t.Fatal(err)
	}
	var deletes []string
	for _, r := range f.requests() {
		if r.Method == "DELETE" {
			deletes = append(deletes, r.Path)
		}
	}
	for _, want := range []string{"/channels/lab-chan-l-0101", "/channels/lab-chan-l-0111", "/channels/lab-chan-l-0480"} {
		if !contains(deletes, want) {
			t.Errorf("%s not hung up: %v", want, deletes)
		}
	}
	if contains(deletes, "/channels/other-conf-leg") {
		t.Errorf("a leg of another conference was hung up")
	}
	if deletes[len(deletes)-1] != "/bridges/lab-bridge-l" {
		t.Errorf("bridge not deleted last: %v", deletes)
	}
	// An unknown conference is not an error.
	if err := drv.EndConference(context.Background(), "no-such"); err != nil {
		t.Errorf("unknown conference: %v", err)
	}
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// The websocket URL carries the credentials in api_key; nothing the driver
// logs or reports contains the password.
func TestGivenBadCredentials_thenStatusSaysSoAndPasswordNeverShows(t *testing.T) {
	f := newFakeREST(t)
	var logs pbxtest.LockedBuffer
	d, err := New(Config{URL: f.url(), User: "convoice", Password: "wrong-pass-XYZ", App: "convoice",
		Logger: pbxtest.TextLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	stop := pbxtest.Run(t, d, pbxtest.NewRecorder())
	pbxtest.Eventually(t, "status says credentials rejected", func() bool {
		return strings.Contains(d.Status().Detail, "credentials rejected")
	})
	if d.Status().Ready {
		t.Fatal("ready with bad credentials")
	}
	stop()
	if strings.Contains(logs.String(), "wrong-pass-XYZ") || strings.Contains(d.Status().Detail, "wrong-pass-XYZ") {
		t.Fatalf("password leaked:\n%s", logs.String())
	}
}
