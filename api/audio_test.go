package api_test

import (
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
)

// audioState polls GET …/audio until cond holds for the conference view.
func waitAudio(t *testing.T, env *apitest.Env, convID, token string, what string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	var last map[string]any
	env.WaitFor(what, 10*time.Second, func() bool {
		r := env.Do("GET", "/api/v1/conversations/"+convID+"/audio?last=true", token, nil)
		if r.Status != 200 {
			return false
		}
		last = r.Map(t)
		return cond(last)
	})
	return last
}

func legOf(conf map[string]any, legID string) map[string]any {
	for _, l := range conf["legs"].([]any) {
		if m := l.(map[string]any); m["id"] == legID {
			return m
		}
	}
	return nil
}

func invitationOf(conf map[string]any, userID string) map[string]any {
	for _, l := range conf["invitations"].([]any) {
		if m := l.(map[string]any); m["user_id"] == userID {
			return m
		}
	}
	return nil
}

func legState(t *testing.T, env *apitest.Env, convID, token, legID, want string) map[string]any {
	t.Helper()
	conf := waitAudio(t, env, convID, token, "leg "+legID+" "+want, func(c map[string]any) bool {
		l := legOf(c, legID)
		return l != nil && l["state"] == want
	})
	return legOf(conf, legID)
}

// The others are invited once the conference's first call is connected,
// so it waits (a few seconds at most) for the invitation to appear.
func pendingInvitation(t *testing.T, env *apitest.Env, u apitest.User, convID string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		invs := env.Must(200, "GET", "/api/v1/invitations", u.Token, nil).Map(t)["invitations"].([]any)
		for _, i := range invs {
			if m := i.(map[string]any); m["conversation_id"] == convID {
				return m["id"].(string)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no pending invitation for %s", u.Name, convID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pbxKinds are the PBXs every audio scenario runs against, unchanged: the
// Asterisk driver on the ARI emulator and the FreeSWITCH driver on the
// event-socket emulator.
var pbxKinds = []string{"asterisk", "freeswitch"}

func forEachPBX(t *testing.T, f func(t *testing.T, kind string)) {
	for _, kind := range pbxKinds {
		t.Run(kind, func(t *testing.T) { f(t, kind) })
	}
}

// The seed's whole story, over the real HTTP API against each PBX emulator.
func TestSeedStory_JoinInviteAcceptRedirectDeclineInviteSomeoneMuteHangupEnd(t *testing.T) {
	forEachPBX(t, seedStory)
}

func seedStory(t *testing.T, kind string) {
	env := apitest.Start(t, apitest.Options{PBX: kind})
	a := env.AddUser("Alice", num("work", "+12025550101"), num("mobile", "+12025550102"))
	b := env.AddUser("Bob", num("work", "+12025550111"))
	c := env.AddUser("Carol", num("work", "+12025550121"))
	d := env.AddUser("Dave", num("work", "+12025550131"))
	e := env.AddUser("Erin", num("work", "+12025550141"))
	env.Must(200, "PUT", "/api/v1/me/contacts", a.Token, map[string]any{"user_ids": []string{b.ID, c.ID, d.ID, e.ID}})
	conv := env.Must(201, "POST", "/api/v1/conversations", a.Token, map[string]any{
		"kind": "im", "subject": "Launch", "participants": []string{b.ID, c.ID, d.ID}}).Map(t)["id"].(string)
	stream := env.Subscribe(conv, d.Token, "")
	defer stream.Close()

	// A: Phone → Join Conference Now Using → Mobile.
	join := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", a.Token, map[string]any{"published": "mobile"}).Map(t)
	aLeg := join["leg"].(map[string]any)
	if aLeg["number"] != "+12025550102" || join["conference"].(map[string]any)["state"] != "active" {
		t.Fatalf("join answer %v", join)
	}
	legState(t, env, conv, a.Token, aLeg["id"].(string), "connected")
	// Every other participant was invited.
	conf := waitAudio(t, env, conv, a.Token, "invitations", func(c map[string]any) bool { return len(c["invitations"].([]any)) == 3 })
	for _, u := range []apitest.User{b, c, d} {
		if inv := invitationOf(conf, u.ID); inv == nil || inv["state"] != "pending" {
			t.Fatalf("%s not invited: %v", u.Name, conf["invitations"])
		}
	}
	// B accepts: their default published number rings.
	acc := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, b, conv)+"/accept", b.Token, map[string]any{}).Map(t)
	bLeg := acc["leg"].(map[string]any)
	if bLeg["number"] != "+12025550111" || acc["invitation"].(map[string]any)["state"] != "accepted" {
		t.Fatalf("accept answer %v", acc)
	}
	// C redirects to a mobile number.
	red := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, c, conv)+"/redirect", c.Token,
		map[string]any{"number": "(202) 555-0177"}).Map(t)
	cLeg := red["leg"].(map[string]any)
	if cLeg["number"] != "+12025550177" || red["invitation"].(map[string]any)["state"] != "redirected" {
		t.Fatalf("redirect answer %v", red)
	}
	// B's and C's calls are up (on FreeSWITCH the originate is a bgapi job:
	// the call exists only a moment after the answer), so D's decline can be
	// seen to ring nothing.
	legState(t, env, conv, a.Token, bLeg["id"].(string), "connected")
	legState(t, env, conv, a.Token, cLeg["id"].(string), "connected")
	// D declines: nothing rings, D stays in the IM conversation.
	before := env.PBXCalls()
	dec := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, d, conv)+"/decline", d.Token, nil).Map(t)
	if dec["invitation"].(map[string]any)["state"] != "declined" || dec["leg"] != nil {
		t.Fatalf("decline answer %v", dec)
	}
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", d.Token, map[string]any{"text": "I'll follow by IM"})
	if got := env.PBXCalls(); got > before {
		t.Fatalf("declining rang something: %d channels, was %d", got, before)
	}

	// A invites E (a contact, not yet in the conversation) with Invite Someone.
	invs := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio/invitations", a.Token,
		map[string]any{"user_ids": []string{e.ID}}).Map(t)["invitations"].([]any)
	if len(invs) != 1 || invs[0].(map[string]any)["user_id"] != e.ID {
		t.Fatalf("invite someone: %v", invs)
	}
	eAcc := env.Must(200, "POST", "/api/v1/invitations/"+pendingInvitation(t, env, e, conv)+"/accept", e.Token, map[string]any{"published": "work"}).Map(t)
	legState(t, env, conv, a.Token, eAcc["leg"].(map[string]any)["id"].(string), "connected")

	// All four are in the emulator's mixing room.
	env.WaitFor("four calls in the room", 5*time.Second, func() bool {
		rs := env.PBXRooms()
		return len(rs) == 1 && rs[0] == 4
	})

	// A mutes B; the emulator's channel is muted.
	m := env.Must(200, "POST", "/api/v1/legs/"+bLeg["id"].(string)+"/mute", a.Token, nil).Map(t)
	if m["muted"] != true {
		t.Fatalf("mute answer %v", m)
	}
	env.WaitFor("B muted on the PBX", 5*time.Second, func() bool { return env.PBXMuted(bLeg["id"].(string)) })
	// B cannot mute A (not the organiser); B can hang up themselves.
	if r := env.Do("POST", "/api/v1/legs/"+aLeg["id"].(string)+"/mute", b.Token, nil); r.Status != 403 {
		t.Fatalf("non-organiser mute: %d %s", r.Status, r.Body)
	}
	env.Must(200, "POST", "/api/v1/legs/"+bLeg["id"].(string)+"/unmute", a.Token, nil)

	// A hangs up C.
	env.Must(204, "DELETE", "/api/v1/legs/"+cLeg["id"].(string), a.Token, nil)
	legState(t, env, conv, a.Token, cLeg["id"].(string), "ended")
	// A ends the audio: every leg hangs up, the IM conversation goes on.
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", a.Token, nil)
	final := waitAudio(t, env, conv, a.Token, "every leg ended", func(c map[string]any) bool {
		for _, l := range c["legs"].([]any) {
			if s := l.(map[string]any)["state"]; s == "dialing" || s == "ringing" || s == "connected" {
				return false
			}
		}
		return c["state"] == "ended"
	})
	if len(final["legs"].([]any)) != 4 {
		t.Fatalf("legs %v", final["legs"])
	}
	env.WaitFor("nothing left on the PBX", 5*time.Second, func() bool {
		return env.PBXCalls() == 0 && len(env.PBXRooms()) == 0
	})
	if r := env.Do("GET", "/api/v1/conversations/"+conv+"/audio", a.Token, nil); r.Status != 404 || r.ErrorCode() != "no_audio" {
		t.Fatalf("audio after end: %d %s", r.Status, r.Body)
	}
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", a.Token, map[string]any{"text": "thanks all"})

	// D's stream saw the story, in order, with no gap.
	seen := map[string]int{}
	prev := 0
	deadline := time.After(5 * time.Second)
	for seen["audio.ended"] == 0 {
		select {
		case ev := <-stream.Events:
			seen[ev.Type]++
			var id int
			for _, ch := range ev.ID {
				id = id*10 + int(ch-'0')
			}
			if id != prev+1 {
				t.Fatalf("event %d after %d", id, prev)
			}
			prev = id
		case <-deadline:
			t.Fatalf("D's stream lacks audio.ended: %v", seen)
		}
	}
	for _, typ := range []string{"audio.started", "leg.updated", "invitation.updated", "message.created", "participant.joined"} {
		if seen[typ] == 0 {
			t.Fatalf("no %s on the stream: %v", typ, seen)
		}
	}
}

// Each unhappy path ends in the right state with the right cause.
func TestUnhappyPaths_EndInTheRightStateWithTheRightCause(t *testing.T) {
	forEachPBX(t, unhappyPaths)
}

func unhappyPaths(t *testing.T, kind string) {
	// Extension 1006 is a PBX refusal: on Asterisk an unregistered PJSIP
	// endpoint (500 Allocation failed); on FreeSWITCH a gateway that does
	// not exist.
	routes := `^10[0-9][0-9]$=PJSIP/{ext};.*=PJSIP/{e164}@trunk`
	congestion := 34.0
	if kind == "freeswitch" {
		routes = `^10[0-9][0-9]$=sofia/gateway/nosuchgw/{ext};.*=sofia/gateway/pbx/{e164}`
		congestion = 41 // FreeSWITCH reports a 503 as NORMAL_TEMPORARY_FAILURE (recording d)
	}
	env := apitest.Start(t, apitest.Options{PBX: kind, RingTimeout: 2 * time.Second,
		Routes: routes, Extensions: regexp.MustCompile(`^10[0-9][0-9]$`)})
	cases := []struct {
		number, state string
		cause         float64
	}{
		{"+12025550486", "busy", 17},
		{"+12025550480", "no_answer", 19},
		{"+12025550603", "rejected", 21},
		{"+12025550404", "failed", 1},
		{"+12025550503", "failed", congestion},
	}
	for _, tc := range cases {
		t.Run(tc.state+"_"+tc.number, func(t *testing.T) {
			u := env.AddUser("U")
			conv := env.Must(201, "POST", "/api/v1/conversations", u.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
			leg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", u.Token, map[string]any{"number": tc.number}).Map(t)["leg"].(map[string]any)
			end := legState(t, env, conv, u.Token, leg["id"].(string), tc.state)
			if end["cause"].(float64) != tc.cause {
				t.Fatalf("cause %v, want %v", end["cause"], tc.cause)
			}
			// The conference ended with its only leg; nothing stays on the PBX.
			waitAudio(t, env, conv, u.Token, "conference ended", func(c map[string]any) bool { return c["state"] == "ended" })
		})
	}
	t.Run("invalid number never reaches the PBX", func(t *testing.T) {
		u := env.AddUser("U")
		conv := env.Must(201, "POST", "/api/v1/conversations", u.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
		env.PBXResetRequests()
		for _, bad := range []string{"12", "+1 202 555 01", "+12025550101&PJSIP/evil", "ＡＢＣ", "+999 123"} {
			r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", u.Token, map[string]any{"number": bad})
			if r.Status != 400 || !strings.Contains(string(r.Body), `"field":"number"`) {
				t.Fatalf("%q: %d %s", bad, r.Status, r.Body)
			}
		}
		if n := env.PBXWrites(); n != 0 {
			t.Fatalf("a refused number reached the PBX (%d requests)", n)
		}
	})
	t.Run("PBX refusing the originate", func(t *testing.T) {
		u := env.AddUser("U")
		conv := env.Must(201, "POST", "/api/v1/conversations", u.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
		r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", u.Token, map[string]any{"number": "1006"})
		// Asterisk refuses the originate at once (502); FreeSWITCH accepts
		// the bgapi and fails the job (the leg ends failed).
		if (r.Status != 502 || r.ErrorCode() != "pbx_refused") && r.Status != 201 {
			t.Fatalf("refused originate: %d %s", r.Status, r.Body)
		}
		conf := waitAudio(t, env, conv, u.Token, "failed leg", func(c map[string]any) bool {
			ls := c["legs"].([]any)
			return len(ls) == 1 && ls[0].(map[string]any)["state"] == "failed"
		})
		if conf["state"] != "ended" {
			t.Fatalf("conference should end with its only leg: %v", conf["state"])
		}
	})
	t.Run("double click rings once", func(t *testing.T) {
		u := env.AddUser("U", num("work", "+12025550161"))
		conv := env.Must(201, "POST", "/api/v1/conversations", u.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
		env.PBXResetRequests()
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i] = env.Do("POST", "/api/v1/conversations/"+conv+"/audio", u.Token, map[string]any{"published": "work"}).Status
			}()
		}
		wg.Wait()
		if !(statuses[0] == 201 && statuses[1] == 409) && !(statuses[0] == 409 && statuses[1] == 201) {
			t.Fatalf("double click answers %v, want one 201 and one 409", statuses)
		}
		if originates := env.PBXOriginates(); originates != 1 {
			t.Fatalf("%d originates for a double click", originates)
		}
		// The same with an Idempotency-Key: the repeat gets the first answer.
		conv2 := env.Must(201, "POST", "/api/v1/conversations", u.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
		r1 := env.Must(201, "POST", "/api/v1/conversations/"+conv2+"/audio", u.Token, map[string]any{"published": "work"}, "Idempotency-Key", "k1")
		r2 := env.Must(201, "POST", "/api/v1/conversations/"+conv2+"/audio", u.Token, map[string]any{"published": "work"}, "Idempotency-Key", "k1")
		if string(r1.Body) != string(r2.Body) {
			t.Fatalf("idempotent repeat differs:\n%s\n%s", r1.Body, r2.Body)
		}
	})
}

func TestInvitationRules(t *testing.T) {
	forEachPBX(t, invitationRules)
}

func invitationRules(t *testing.T, kind string) {
	env := apitest.Start(t, apitest.Options{PBX: kind})
	a := env.AddUser("Alice", num("work", "+12025550101"))
	b := env.AddUser("Bob", num("work", "+12025550111"))
	c := env.AddUser("Carol") // no published number
	conv := env.Must(201, "POST", "/api/v1/conversations", a.Token, map[string]any{"kind": "im", "participants": []string{b.ID, c.ID}}).Map(t)["id"].(string)
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", a.Token, map[string]any{"published": "work"})
	bInv := pendingInvitation(t, env, b, conv)
	// Only the invitee can answer: anyone else sees an unknown invitation.
	if r := env.Do("POST", "/api/v1/invitations/"+bInv+"/accept", a.Token, map[string]any{}); r.Status != 404 {
		t.Fatalf("someone else's invitation: %d", r.Status)
	}
	// Carol has no published number: accepting says so; redirect works.
	cInv := pendingInvitation(t, env, c, conv)
	if r := env.Do("POST", "/api/v1/invitations/"+cInv+"/accept", c.Token, map[string]any{}); r.Status != 400 {
		t.Fatalf("accept with no number: %d %s", r.Status, r.Body)
	}
	env.Must(200, "POST", "/api/v1/invitations/"+cInv+"/redirect", c.Token, map[string]any{"number": "+1 202 555 0188"})
	// B accepts; accepting again is refused.
	env.Must(200, "POST", "/api/v1/invitations/"+bInv+"/accept", b.Token, map[string]any{})
	if r := env.Do("POST", "/api/v1/invitations/"+bInv+"/accept", b.Token, map[string]any{}); r.Status != 409 {
		t.Fatalf("second accept: %d %s", r.Status, r.Body)
	}
	// Joining again while your leg is live is a 409, not a second call,
	// naming the call there is.
	if r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", b.Token, map[string]any{"published": "work"}); r.Status != 409 ||
		r.ErrorCode() != "already_in_audio" || !strings.Contains(string(r.Body), "hang it up first") {
		t.Fatalf("join while live: %d %s", r.Status, r.Body)
	}
	// Inviting someone already in the audio is refused.
	if r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio/invitations", a.Token, map[string]any{"user_ids": []string{b.ID}}); r.Status != 409 {
		t.Fatalf("invite a live participant: %d %s", r.Status, r.Body)
	}
	// Only the organiser ends the audio.
	if r := env.Do("DELETE", "/api/v1/conversations/"+conv+"/audio", b.Token, nil); r.Status != 403 {
		t.Fatalf("non-organiser end: %d", r.Status)
	}
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", a.Token, nil)
	// An invitation to an ended conference cannot be answered.
	invs := env.Must(200, "GET", "/api/v1/invitations", c.Token, nil).Map(t)["invitations"].([]any)
	if len(invs) != 0 {
		t.Fatalf("pending invitations after the end: %v", invs)
	}
}
