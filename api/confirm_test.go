package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

// Confirm-to-join over the real API against both emulators. The
// emulator's "0111" answers and presses 1 1.5 s later; "0190" answers
// like a voicemail box and never presses a key.

// confirmEnv starts convoice with confirm-to-join in mode, waiting timeout
// in all for the key (two prompts).
func confirmEnv(t *testing.T, kind, mode string, timeout time.Duration) *apitest.Env {
	t.Helper()
	logs := &apitest.LogBuffer{}
	env := apitest.Start(t, apitest.Options{PBX: kind, Logs: logs,
		Confirm: controller.ConfirmConfig{Mode: mode, Timeout: timeout}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("convoice logs:\n%s", tail(logs.String(), 120))
		}
	})
	return env
}

// legStates collects the states a leg goes through on stream s until it
// reaches a final one (or d passes); check is asked, at every leg.updated
// of the leg, what the PBX holds for its call.
func legStates(t *testing.T, env *apitest.Env, s *apitest.Stream, legID string, d time.Duration,
	check func(state string, call apitest.PBXLeg, there bool)) []string {
	t.Helper()
	states, _ := legStatesAndLast(t, env, s, legID, d, check)
	return states
}

// legStatesAndLast is legStates, with the leg as its last event showed it.
func legStatesAndLast(t *testing.T, env *apitest.Env, s *apitest.Stream, legID string, d time.Duration,
	check func(state string, call apitest.PBXLeg, there bool)) ([]string, map[string]any) {
	t.Helper()
	var states []string
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				t.Fatalf("stream ended; leg %s went %v", legID, states)
			}
			if ev.Type != "leg.updated" || ev.Data["id"] != legID {
				continue
			}
			st := ev.Data["state"].(string)
			call, there := env.PBXLegs()[legID]
			check(st, call, there)
			if len(states) == 0 || states[len(states)-1] != st {
				states = append(states, st)
			}
			if st != "dialing" && st != "ringing" && st != "confirming" {
				return states, ev.Data
			}
		case <-deadline:
			t.Fatalf("leg %s went %v and no further within %v", legID, states, d)
		}
	}
}

// everInMix samples the PBX's view of a call every 20 ms until the
// returned function is called, which reports whether the call was ever
// seen in a room.
func everInMix(env *apitest.Env, legID string) func() bool {
	stop, done := make(chan struct{}), make(chan bool)
	go func() {
		seen := false
		for {
			seen = seen || env.PBXLegs()[legID].Room != ""
			select {
			case <-stop:
				done <- seen
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() bool { close(stop); return <-done }
}

// outOfMixWhileConfirming is legStates' check that a confirming call is
// answered on the PBX but in no room.
func outOfMixWhileConfirming(t *testing.T) func(string, apitest.PBXLeg, bool) {
	return func(state string, call apitest.PBXLeg, there bool) {
		t.Helper()
		if state == "confirming" && there && call.Room != "" {
			t.Errorf("leg confirming but on the PBX already in room %q", call.Room)
		}
	}
}

// With "all", a phone that presses 1 is confirming (answered, hearing the
// prompt, not in the mix) and then connected, in the conference only
// after the key; a voicemail box that never presses is unconfirmed after
// the timeout, says why, and never was in the mix.
func TestConfirmToJoin_GivenAll_ThenTheKeyJoinsAndAVoicemailNeverDoes(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env := confirmEnv(t, kind, controller.ConfirmAll, 4*time.Second)
		a := env.AddUser("Alice")
		b := env.AddUser("Bob")
		conv := newConversation(t, env, a, b)
		s := env.Subscribe(conv, a.Token, "")
		defer s.Close()

		person := joinNumber(t, env, conv, a, "+12025550111")
		states, l := legStatesAndLast(t, env, s, person, 15*time.Second, outOfMixWhileConfirming(t))
		if strings.Join(states, ",") != "dialing,ringing,confirming,connected" && strings.Join(states, ",") != "dialing,confirming,connected" {
			t.Fatalf("0111 went %v, want dialing, (ringing,) confirming, connected", states)
		}
		conf := env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", a.Token, nil).Map(t)
		env.WaitFor("0111 in the conference's room on the PBX", 5*time.Second, func() bool {
			return env.PBXLegs()[person].Room == conf["id"]
		})
		if l["state"] != "connected" || l["answered_at"] == nil || l["connected_at"] == nil {
			t.Fatalf("0111's leg %v", l)
		}

		box := joinNumber(t, env, conv, b, "+12025550190")
		inMix := everInMix(env, box)
		states, l = legStatesAndLast(t, env, s, box, 20*time.Second, outOfMixWhileConfirming(t))
		if strings.Join(states, ",") != "dialing,ringing,confirming,unconfirmed" && strings.Join(states, ",") != "dialing,confirming,unconfirmed" {
			t.Fatalf("0190 went %v, want dialing, (ringing,) confirming, unconfirmed", states)
		}
		if inMix() {
			t.Fatal("the voicemail box was in the mix")
		}
		reason, _ := l["end_reason"].(string)
		if l["state"] != "unconfirmed" || !strings.Contains(reason, "nobody pressed 1") || !strings.Contains(reason, "voicemail") ||
			l["answered_at"] == nil || l["connected_at"] != nil || l["ended_at"] == nil {
			t.Fatalf("0190's leg %v", l)
		}
		answered, _ := time.Parse(time.RFC3339Nano, l["answered_at"].(string))
		ended, _ := time.Parse(time.RFC3339Nano, l["ended_at"].(string))
		if waited := ended.Sub(answered); waited < 4*time.Second {
			t.Fatalf("0190 hung up %v after the answer, before the confirm timeout (4 s)", waited)
		}
		env.WaitFor("0190's call gone from the PBX", 5*time.Second, func() bool { _, there := env.PBXLegs()[box]; return !there })
		// The person's call is untouched and the conference goes on.
		if l := legOf(env.Must(200, "GET", "/api/v1/conversations/"+conv+"/audio", a.Token, nil).Map(t), person); l == nil || l["state"] != "connected" {
			t.Fatalf("0111 after the voicemail box ended: %v", l)
		}
		waitConverged(t, env, 5*time.Second)
	})
}

// With "off" both phones join on answer as they always did: no
// confirming, the voicemail box too.
func TestConfirmToJoin_GivenOff_ThenAnsweringJoins(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env := confirmEnv(t, kind, controller.ConfirmOff, 0)
		a := env.AddUser("Alice")
		b := env.AddUser("Bob")
		conv := newConversation(t, env, a, b)
		s := env.Subscribe(conv, a.Token, "")
		defer s.Close()
		for _, n := range []struct {
			u      apitest.User
			number string
		}{{a, "+12025550111"}, {b, "+12025550190"}} {
			id := joinNumber(t, env, conv, n.u, n.number)
			states := legStates(t, env, s, id, 10*time.Second, func(string, apitest.PBXLeg, bool) {})
			if states[len(states)-1] != "connected" || strings.Contains(strings.Join(states, ","), "confirming") {
				t.Fatalf("%s went %v, want connected on answer", n.number, states)
			}
		}
		waitConverged(t, env, 5*time.Second)
	})
}

// Under the default ("mobile") a US number a user publishes joins on
// answer (FIXED_LINE_OR_MOBILE is not MOBILE), while every number a
// guest or a redirect gives is confirmed: 0111 presses 1 and joins,
// 0190 ends unconfirmed.
func TestConfirmToJoin_GivenMobile_ThenGuestAndRedirectNumbersAreConfirmed(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env := confirmEnv(t, kind, controller.ConfirmMobile, 3*time.Second)
		a := env.AddUser("Alice", num("work", "+12025550101"))
		b := env.AddUser("Bob")
		c := env.AddUser("Carol")
		conv := newConversation(t, env, a, b, c)
		s := env.Subscribe(conv, a.Token, "")
		defer s.Close()

		// Alice's published US number: no prompt.
		join := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", a.Token, map[string]any{"published": "work"}).Map(t)
		aLeg := join["leg"].(map[string]any)["id"].(string)
		if states := legStates(t, env, s, aLeg, 10*time.Second, func(string, apitest.PBXLeg, bool) {}); strings.Join(states, ",") != "dialing,ringing,connected" &&
			strings.Join(states, ",") != "dialing,connected" {
			t.Fatalf("Alice's published number went %v, want connected on answer", states)
		}

		// Bob redirects his invitation to 0111, Carol hers to 0190.
		red := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, b, conv)+"/redirect", b.Token,
			map[string]any{"number": "+12025550111"}).Map(t)
		bLeg := red["leg"].(map[string]any)["id"].(string)
		if states := legStates(t, env, s, bLeg, 15*time.Second, outOfMixWhileConfirming(t)); !confirmedThen(states, "connected") {
			t.Fatalf("redirect to 0111 went %v, want confirming then connected", states)
		}
		red = env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, c, conv)+"/redirect", c.Token,
			map[string]any{"number": "+12025550190"}).Map(t)
		cLeg := red["leg"].(map[string]any)["id"].(string)
		if states := legStates(t, env, s, cLeg, 15*time.Second, outOfMixWhileConfirming(t)); !confirmedThen(states, "unconfirmed") {
			t.Fatalf("redirect to 0190 went %v, want confirming then unconfirmed", states)
		}

		// Guests through a join link: 0111 joins after the key, 0190 never.
		_, token := jlLink(t, env, a, conv, nil)
		g := jlJoin(t, env, token, "Gina Guest", "+1 202 555 0111")
		gLeg := g["leg"].(map[string]any)["id"].(string)
		if states := legStates(t, env, s, gLeg, 15*time.Second, outOfMixWhileConfirming(t)); !confirmedThen(states, "connected") {
			t.Fatalf("guest on 0111 went %v, want confirming then connected", states)
		}
		jlGuestLegState(t, env, g["guest_token"].(string), "connected")
		h := jlJoin(t, env, token, "Hal Guest", "+1 202 555 0190")
		hLeg := h["leg"].(map[string]any)["id"].(string)
		if states := legStates(t, env, s, hLeg, 15*time.Second, outOfMixWhileConfirming(t)); !confirmedThen(states, "unconfirmed") {
			t.Fatalf("guest on 0190 went %v, want confirming then unconfirmed", states)
		}
		// The guest sees it on their own page's data too.
		gl := jlGuestLegState(t, env, h["guest_token"].(string), "unconfirmed")
		if reason, _ := gl["end_reason"].(string); !strings.Contains(reason, "nobody pressed 1") {
			t.Fatalf("guest's unconfirmed leg says %q", reason)
		}
		waitConverged(t, env, 5*time.Second)
	})
}

// confirmedThen reports whether a leg went through confirming and ended
// in final.
func confirmedThen(states []string, final string) bool {
	n := len(states)
	return n >= 2 && states[n-2] == "confirming" && states[n-1] == final
}
