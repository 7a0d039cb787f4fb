package ariemu

import (
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emutest"
)

type apiDoc struct {
	Apis []struct {
		Path       string `json:"path"`
		Operations []struct {
			HTTPMethod string `json:"httpMethod"`
			Parameters []struct {
				Name      string `json:"name"`
				ParamType string `json:"paramType"`
				Required  bool   `json:"required"`
			} `json:"parameters"`
		} `json:"operations"`
	} `json:"apis"`
}

func loadAPIDocs(t *testing.T) map[string]bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(testdataDir, "api-docs", "*.json"))
	ops := map[string]bool{}
	for _, f := range files {
		if filepath.Base(f) == "resources.json" {
			continue
		}
		var d apiDoc
		emutest.ReadJSON(t, f, &d)
		for _, a := range d.Apis {
			for _, op := range a.Operations {
				ops[op.HTTPMethod+" "+a.Path] = true
			}
		}
	}
	if len(ops) < 100 {
		t.Fatalf("only %d operations in api-docs", len(ops))
	}
	return ops
}

// TestRoutesCoverAPIDocs: the emulator knows exactly the operations of
// Asterisk 22.10.1's ARI description — every one is routed (answered, or 501
// when not emulated, never "Resource not found" or "Invalid method"), and
// nothing else is.
func TestRoutesCoverAPIDocs(t *testing.T) {
	ops := loadAPIDocs(t)
	ours := map[string]bool{}
	for _, d := range routeDefs {
		ours[d.method+" "+d.pattern] = true
	}
	for op := range ops {
		if !ours[op] {
			t.Errorf("api-docs operation %s is not routed", op)
		}
	}
	for op := range ours {
		if !ops[op] {
			t.Errorf("route %s is not in api-docs", op)
		}
	}
	s := startServer(t, Config{})
	param := regexp.MustCompile(`\{[^}]+\}`)
	for op := range ops {
		method, path, _ := strings.Cut(op, " ")
		r := rest(t, s, method, "/ari"+param.ReplaceAllString(path, "x"), nil)
		body := string(r.Body)
		if strings.Contains(body, "Resource not found") || strings.Contains(body, "Invalid method") || r.Status == 405 {
			t.Errorf("%s: %d %s", op, r.Status, body)
		}
	}
}

// TestRequestValidation: Asterisk's answers to malformed or unusual
// requests, from its generated handlers (resource_*.c, res_ari.c) and the
// recordings.
func TestRequestValidation(t *testing.T) {
	s := startServer(t, Config{User: "ari", Password: "ari", Timing: emuphone.Timing{Ring: 20 * time.Millisecond}})
	c := newWSClient(t)
	if err := c.connect(s.Addr(), "app=convoice&api_key=ari:ari"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return socketCount(s) == 1 })
	// A ringing leg and an answered one to work with.
	mustStatus(t, rest(t, s, "POST", originatePath("ring", "PJSIP/+12025550480@trunk", ""), nil), 200)
	mustStatus(t, rest(t, s, "POST", originatePath("up", "PJSIP/+12025550101@trunk", ""), nil), 200)
	c.waitEvent(t, "StasisStart", "up")
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/br?type=mixing", nil), 200)

	long := strings.Repeat("x", 150)
	cases := []struct {
		name, method, path string
		body               any
		status             int
		want               string // exact body, or "" for no check
	}{
		{"unknown query parameters are ignored", "POST", "/ari/bridges/b2?type=mixing&nonsense=1&name=n", nil, 200, ""},
		{"form-encoded body works like the query", "POST", "/ari/bridges", "bridgeId=formbr&type=mixing", 200, ""},
		{"malformed JSON body", "POST", "/ari/channels", []byte(`{"endpoint":`), 400, `{"message":"Error parsing request body"}`},
		{"originate without endpoint", "POST", "/ari/channels?app=convoice", nil, 400, `{"message":"Endpoint must be specified"}`},
		{"originate without app or extension", "POST", "/ari/channels?endpoint=PJSIP/1001", nil, 400, `{"message":"Application or extension must be specified"}`},
		{"channel id too long", "POST", "/ari/channels/" + long + "?endpoint=PJSIP/1001&app=convoice", nil, 400, `{"message":"Uniqueid length exceeds maximum of 149"}`},
		{"unknown format", "POST", "/ari/channels?endpoint=PJSIP/1001&app=convoice&formats=ulaw,xyz", nil, 400, `{"message":"Provided format (xyz) was not found"}`},
		{"originator and formats", "POST", "/ari/channels?endpoint=PJSIP/1001&app=convoice&formats=ulaw&originator=up", nil, 400, `{"message":"Originator and formats can't both be specified"}`},
		{"unknown originator", "POST", "/ari/channels?endpoint=PJSIP/1001&app=convoice&originator=nobody", nil, 400, `{"message":"Provided originator channel was not found"}`},
		{"non-string variables", "POST", "/ari/channels", map[string]any{"endpoint": "PJSIP/1001", "app": "convoice", "variables": map[string]any{"A": 1}}, 400, `{"message":"Only string values in the 'variables' object allowed"}`},
		{"addChannel without channel", "POST", "/ari/bridges/br/addChannel", nil, 400, `{"message":"Missing parameter channel"}`},
		{"addChannel of a ringing leg", "POST", "/ari/bridges/br/addChannel?channel=ring", nil, 422, `{"message":"Channel not in Stasis application"}`},
		{"removeChannel of a leg not in the bridge", "POST", "/ari/bridges/br/removeChannel?channel=up", nil, 422, `{"message":"Channel not in this bridge"}`},
		{"removeChannel of an unknown leg", "POST", "/ari/bridges/br/removeChannel?channel=zz", nil, 400, `{"message":"Channel not found"}`},
		{"mute with a bad direction", "POST", "/ari/channels/up/mute?direction=sideways", nil, 400, `{"message":"Invalid direction specified"}`},
		{"mute with an empty direction", "POST", "/ari/channels/up/mute?direction=", nil, 400, `{"message":"Direction is required"}`},
		{"mute of a ringing leg", "POST", "/ari/channels/ring/mute", nil, 409, `{"message":"Channel not in Stasis application"}`},
		{"answer of an unknown channel", "POST", "/ari/channels/zz/answer", nil, 404, `{"message":"Channel not found"}`},
		{"dtmf without digits", "POST", "/ari/channels/up/dtmf", nil, 400, `{"message":"DTMF is required"}`},
		{"set variable without name", "POST", "/ari/channels/up/variable?value=1", nil, 400, `{"message":"Variable name is required"}`},
		{"set variable", "POST", "/ari/channels/up/variable", map[string]string{"variable": "LEG", "value": "<a&b>"}, 204, ""},
		{"get variable", "GET", "/ari/channels/up/variable?variable=LEG", nil, 200, `{"value":"<a&b>"}`},
		{"get unknown variable", "GET", "/ari/channels/up/variable?variable=NOPE", nil, 404, `{"message":"Provided variable was not found"}`},
		{"get variable of unknown channel", "GET", "/ari/channels/zz/variable?variable=X", nil, 404, `{"message":"Provided channel was not found"}`},
		{"get caller id", "GET", "/ari/channels/up/variable?variable=CALLERID(num)", nil, 200, `{"value":"+12025550100"}`},
		{"unknown application", "GET", "/ari/applications/nope", nil, 404, `{"message":"Application not found"}`},
		{"unknown resource", "GET", "/ari/nothing/here", nil, 404, `{"message":"Resource not found"}`},
		{"trailing slash", "GET", "/ari/channels/", nil, 404, `{"message":"ARI URLs do not end with a slash. Try /ari/channels"}`},
		{"wrong method", "PUT", "/ari/channels", nil, 405, `{"message":"Invalid method"}`},
		{"not emulated", "GET", "/ari/endpoints", nil, 501, `{"message":"Not implemented by the convoice ARI emulator"}`},
		{"literal segment wins over an id", "POST", "/ari/channels/create", nil, 501, ""},
	}
	for _, tc := range cases {
		r := rest(t, s, tc.method, tc.path, tc.body)
		if r.Status != tc.status || (tc.want != "" && string(r.Body) != tc.want) {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.Status, r.Body, tc.status, tc.want)
		}
	}
	if got := rest(t, s, "PUT", "/ari/channels", nil).Header.Get("Allow"); got != "OPTIONS,GET,POST" {
		t.Errorf("Allow %q", got)
	}
	if len(s.Bridges()) != 3 {
		t.Errorf("bridges %+v", s.Bridges())
	}

	// A JSON body and the query string are the same request; the body wins.
	r := rest(t, s, "POST", "/ari/channels?endpoint=PJSIP/1001&app=wrong", map[string]any{
		"endpoint": "PJSIP/+12025550155@trunk", "app": "convoice", "appArgs": "a,b",
		"callerId": `"Quoted Name" <+1 (202) 555-0100>`, "timeout": 7, "channelId": "fromjson",
		"variables": map[string]string{"CDR(userfield)": "x"},
	})
	mustStatus(t, r, 200)
	got := r.json(t).(map[string]any)
	if got["id"] != "fromjson" || got["name"] != "PJSIP/trunk-00000002" {
		t.Errorf("JSON originate: %s", r.Body)
	}
	if caller := got["caller"].(map[string]any); caller["name"] != "Quoted Name" || caller["number"] != "+12025550100" {
		t.Errorf("caller %v", caller)
	}
	st := c.waitEvent(t, "StasisStart", "fromjson")
	if st.str("channel", "dialplan", "app_data") != "convoice,a,b" {
		t.Errorf("app_data %q", st.str("channel", "dialplan", "app_data"))
	}
	// timeout: seconds; -1 none; anything else (0, "abc") Asterisk's 30 s.
	for q, want := range map[string]int{"timeout=7": 7000, "timeout=-1": -1, "timeout=0": 30000, "timeout=abc": 30000, "": 30000} {
		id := "t" + strings.NewReplacer("=", "", "-", "m").Replace(q)
		mustStatus(t, rest(t, s, "POST", originatePath(id, "PJSIP/+12025550480@trunk", "&"+q), nil), 200)
		s.mu.Lock()
		ms := s.channels[id].timeoutMs
		s.mu.Unlock()
		if ms != want {
			t.Errorf("%q: timeout %d ms, want %d", q, ms, want)
		}
	}

	// Hangup reasons map to causes; the final Dial follows the cause.
	for reason, want := range map[string][3]string{"congestion": {"34", "CONGESTION", "503"}, "rejected": {"21", "NOANSWER", "403"}, "no_answer": {"19", "NOANSWER", "480"}} {
		id := "r-" + reason
		mustStatus(t, rest(t, s, "POST", originatePath(id, "PJSIP/+12025550480@trunk", ""), nil), 200)
		mustStatus(t, rest(t, s, "DELETE", "/ari/channels/"+id+"?reason="+reason, nil), 204)
		d := c.waitEvent(t, "ChannelDestroyed", id)
		var final string
		for _, e := range c.events() {
			if e.typ() == "Dial" && e.chanID() == id {
				final = e.str("dialstatus")
			}
		}
		if d.str("cause") != want[0] || final != want[1] || d.str("tech_cause") != want[2] {
			t.Errorf("reason=%s: cause %s dial %s tech %s, want %v", reason, d.str("cause"), final, d.str("tech_cause"), want)
		}
	}
}

// TestAuth: 401 with the realm for REST (basic or api_key) and for the
// websocket; no auth when User is empty.
func TestAuth(t *testing.T) {
	s := startServer(t, Config{User: "ari", Password: "secret"})
	for _, tc := range []struct {
		user, pass, path string
		status           int
	}{
		{"", "", "/ari/asterisk/info", 401},
		{"ari", "wrong", "/ari/asterisk/info", 401},
		{"ari", "secret", "/ari/asterisk/info", 200},
		{"", "", "/ari/asterisk/info?api_key=ari:secret", 200},
		{"", "", "/ari/asterisk/info?api_key=ari:nope", 401},
	} {
		r, err := restErr(s.Addr(), tc.user, tc.pass, "GET", tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != tc.status {
			t.Errorf("%s %s:%s: %d, want %d", tc.path, tc.user, tc.pass, r.Status, tc.status)
		}
		if tc.status == 401 {
			if string(r.Body) != `{"message":"Authentication required"}` || r.Header.Get("WWW-Authenticate") != `Basic realm="Asterisk REST Interface"` {
				t.Errorf("401: %s %v", r.Body, r.Header)
			}
		}
	}
	if _, code, _ := dialRawWS(s.Addr(), "app=a&api_key=ari:nope"); code != 401 {
		t.Errorf("websocket with a wrong api_key: %d", code)
	}
	if _, code, _ := dialRawWS(s.Addr(), "api_key=ari:secret"); code != 400 {
		t.Errorf("websocket without app: %d", code)
	}
	w, code, err := dialRawWS(s.Addr(), "app=a&api_key=ari:secret")
	if err != nil || code != 101 {
		t.Fatalf("websocket: %d %v", code, err)
	}
	w.conn.Close()
	r, _ := restErr(s.Addr(), "ari", "secret", "GET", "/ari/events?app=a", nil)
	if r.Status != http.StatusUpgradeRequired {
		t.Errorf("plain GET /events: %d", r.Status)
	}
	r, _ = restErr(s.Addr(), "", "", "GET", "/index.html", nil)
	if r.Status != 404 || !strings.Contains(string(r.Body), "The requested URL was not found on this server.") {
		t.Errorf("non-ARI path: %d %s", r.Status, r.Body)
	}

	open := startServer(t, Config{})
	mustStatus(t, rest(t, open, "GET", "/ari/asterisk/info", nil), 200)
}

// TestSubscribeAll: subscribeAll=true adds ChannelCreated and BridgeCreated
// and the events of other applications' channels; without it neither comes.
func TestSubscribeAll(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 20 * time.Millisecond}})
	app := newWSClient(t)
	all := newWSClient(t)
	if err := app.connect(s.Addr(), "app=convoice"); err != nil {
		t.Fatal(err)
	}
	if err := all.connect(s.Addr(), "app=observer&subscribeAll=true"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return socketCount(s) == 2 })
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/b1", nil), 200)
	mustStatus(t, rest(t, s, "POST", originatePath("x", "PJSIP/+12025550101@trunk", ""), nil), 200)
	app.waitEvent(t, "StasisStart", "x")
	all.waitEvent(t, "StasisStart", "x")
	all.waitEvent(t, "ChannelCreated", "x")
	all.waitEvent(t, "BridgeCreated", "b1")
	for _, e := range app.events() {
		if e.typ() == "ChannelCreated" || e.typ() == "BridgeCreated" {
			t.Errorf("%s without subscribeAll", e.typ())
		}
		if e.str("application") != "convoice" {
			t.Errorf("application %q", e.str("application"))
		}
	}
	for _, e := range all.events() {
		if e.str("application") != "observer" {
			t.Errorf("observer got application %q", e.str("application"))
		}
	}
}

// TestNewestWebsocketWins: a second websocket for an application takes its
// events over, as a new registration replaces the handler in Asterisk; when
// it goes, the previous one gets them again.
func TestNewestWebsocketWins(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 20 * time.Millisecond}})
	old := newWSClient(t)
	if err := old.connect(s.Addr(), "app=convoice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return socketCount(s) == 1 })
	nw := newWSClient(t)
	if err := nw.connect(s.Addr(), "app=convoice,other"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return socketCount(s) == 2 })
	mustStatus(t, rest(t, s, "POST", originatePath("x", "PJSIP/+12025550101@trunk", ""), nil), 200)
	nw.waitEvent(t, "StasisStart", "x")
	if n := len(old.events()); n != 0 {
		t.Errorf("the replaced websocket got %d events", n)
	}
	nw.drop()
	waitFor(t, func() bool { return socketCount(s) == 1 })
	mustStatus(t, rest(t, s, "DELETE", "/ari/channels/x", nil), 204)
	old.waitEvent(t, "ChannelDestroyed", "x")
	apps := rest(t, s, "GET", "/ari/applications", nil).json(t).([]any)
	var names []string
	for _, a := range apps {
		names = append(names, a.(map[string]any)["name"].(string))
	}
	if !slices.Equal(names, []string{"convoice"}) {
		t.Errorf("applications %v", names)
	}
}
