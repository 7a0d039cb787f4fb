package ariemu

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

func originatePath(id, endpoint string, extra string) string {
	q := url.Values{}
	q.Set("endpoint", endpoint)
	q.Set("app", "convoice")
	q.Set("appArgs", "leg,"+id)
	q.Set("callerId", "Convoice <+12025550100>")
	return "/ari/channels/" + id + "?" + q.Encode() + extra
}

// TestPhoneTable dials every row of the contract's phone table over the
// default route PJSIP/{e164}@trunk and checks the event sequence, causes and
// texts the driver will see.
func TestPhoneTable(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 40 * time.Millisecond, Hold: 250 * time.Millisecond}})
	c := newWSClient(t)
	if err := c.connect(s.Addr(), "app=convoice"); err != nil {
		t.Fatal(err)
	}

	type row struct {
		last4     string
		types     []string
		cause     string
		causeTxt  string
		tech      string
		dialFinal string
	}
	refused := []string{"Dial", "ChannelHangupRequest", "Dial", "ChannelDestroyed"}
	rows := []row{
		{"0486", refused, "17", "User busy", "486", "BUSY"},
		{"0603", refused, "21", "Call Rejected", "603", "NOANSWER"},
		{"0404", refused, "1", "Unallocated (unassigned) number", "404", "NOANSWER"},
		{"0503", refused, "34", "Circuit/channel congestion", "503", "CONGESTION"},
		{"0480", []string{"Dial", "ChannelStateChange", "Dial", "ChannelDestroyed"}, "19", "User alerting, no answer", "480", "RINGING"},
		{"0200", []string{"Dial", "ChannelStateChange", "Dial", "ChannelStateChange", "Dial", "StasisStart",
			"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"}, "16", "Normal Clearing", "", "ANSWER"},
	}
	for _, r := range rows {
		id := "leg-" + r.last4
		resp := rest(t, s, "POST", originatePath(id, "PJSIP/+1202555"+r.last4+"@trunk", "&timeout=1"), nil)
		mustStatus(t, resp, 200)
		if st := resp.json(t).(map[string]any)["state"]; st != "Down" {
			t.Errorf("%s: originate answered state %v, want Down", r.last4, st)
		}
		d := c.waitEvent(t, "ChannelDestroyed", id)
		got := typesFor(c.events(), id)
		if !slices.Equal(got, r.types) {
			t.Errorf("%s: events %v, want %v", r.last4, got, r.types)
		}
		if d.str("cause") != r.cause || d.str("cause_txt") != r.causeTxt || d.str("tech_cause") != r.tech {
			t.Errorf("%s: ChannelDestroyed cause=%s %q tech_cause=%q, want %s %q %q", r.last4, d.str("cause"), d.str("cause_txt"), d.str("tech_cause"), r.cause, r.causeTxt, r.tech)
		}
		var dials []string
		for _, e := range c.events() {
			if e.typ() == "Dial" && e.chanID() == id {
				dials = append(dials, e.str("dialstatus"))
			}
		}
		if dials[len(dials)-1] != r.dialFinal {
			t.Errorf("%s: dial statuses %v, want last %s", r.last4, dials, r.dialFinal)
		}
		if r.last4 == "0200" {
			for _, e := range c.events() {
				if e.typ() == "ChannelHangupRequest" && e.chanID() == id {
					if _, has := e.m["cause"]; has {
						t.Errorf("far-end BYE: HangupRequest has a cause: %s", e.raw)
					}
				}
			}
		}
	}

	// Anything else rings, answers, stays, and ends with 16 when we hang up.
	id := "leg-0123"
	mustStatus(t, rest(t, s, "POST", originatePath(id, "PJSIP/+12025550123@trunk", ""), nil), 200)
	st := c.waitEvent(t, "StasisStart", id)
	if got := fmt.Sprint(st.m["args"]); got != "[leg leg-0123]" {
		t.Errorf("StasisStart args %s", got)
	}
	time.Sleep(300 * time.Millisecond)
	chans := s.Channels()
	if len(chans) != 1 || chans[0].ID != id || chans[0].State != "Up" || !chans[0].InStasis {
		t.Fatalf("answered phone should stay up in Stasis: %+v", chans)
	}
	mustStatus(t, rest(t, s, "DELETE", "/ari/channels/"+id, nil), 204)
	d := c.waitEvent(t, "ChannelDestroyed", id)
	if d.str("cause") != "16" {
		t.Errorf("hangup cause %s", d.str("cause"))
	}
	if got, want := typesFor(c.events(), id), []string{"Dial", "ChannelStateChange", "Dial", "ChannelStateChange", "Dial", "StasisStart", "ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

// TestPhoneTableDefaultTiming checks the contract's "rings briefly (≈ 300
// ms)" and the 0200 phone's 2 s hold with zero Timing.
func TestPhoneTableDefaultTiming(t *testing.T) {
	s := startServer(t, Config{})
	c := newWSClient(t)
	if err := c.connect(s.Addr(), "app=convoice"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	mustStatus(t, rest(t, s, "POST", originatePath("a", "PJSIP/+12025550199@trunk", ""), nil), 200)
	mustStatus(t, rest(t, s, "POST", originatePath("b", "PJSIP/+12025550200@trunk", ""), nil), 200)
	ans := c.waitEvent(t, "StasisStart", "a")
	if d := ans.at.Sub(t0); d < 250*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("answered after %v, want about 300ms", d)
	}
	c.waitEvent(t, "StasisStart", "b")
	bye := c.waitFor(4*time.Second, func(evs []event) bool { return slices.Contains(typesFor(evs, "b"), "ChannelDestroyed") })
	if !bye {
		t.Fatal("0200 phone never hung up")
	}
	var start, end time.Time
	for _, e := range c.events() {
		if e.chanID() == "b" && e.typ() == "StasisStart" {
			start = e.at
		}
		if e.chanID() == "b" && e.typ() == "ChannelDestroyed" {
			end = e.at
		}
	}
	if d := end.Sub(start); d < 1900*time.Millisecond || d > 3*time.Second {
		t.Errorf("0200 hung up %v after answering, want about 2s", d)
	}
}

// TestBadEndpoints: the originate answers for endpoints that cannot be
// dialed (recording d and the lab phones 1006/1007).
func TestBadEndpoints(t *testing.T) {
	s := startServer(t, Config{})
	cases := []struct {
		endpoint string
		status   int
		body     string
	}{
		{"PJSIP/1006", 500, `{"error":"Allocation failed"}`},
		{"PJSIP/1007", 500, `{"error":"Allocation failed"}`},
		{"PJSIP/nosuch", 500, `{"error":"Allocation failed"}`},
		{"PJSIP/+12025550123@", 500, `{"error":"Allocation failed"}`},
		{"FOO/bar", 500, `{"error":"Allocation failed"}`},
		{"garbage", 400, `{"message":"Invalid endpoint specified"}`},
		{"PJSIP/", 400, `{"message":"Invalid endpoint specified"}`},
		{"/1001", 400, `{"message":"Invalid endpoint specified"}`},
	}
	for _, c := range cases {
		r := rest(t, s, "POST", "/ari/channels?app=convoice&endpoint="+url.QueryEscape(c.endpoint), nil)
		if r.Status != c.status || strings.TrimSpace(string(r.Body)) != c.body {
			t.Errorf("%s: %d %s, want %d %s", c.endpoint, r.Status, r.Body, c.status, c.body)
		}
	}
	if n := len(s.Channels()); n != 0 {
		t.Errorf("%d channels left after failed originates", n)
	}
}
