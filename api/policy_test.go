package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/ariemu"
)

// noLimitsBut is a policy with the default number rules and only the
// limits set in p.
func noLimitsBut(p controller.PolicyConfig) *controller.PolicyConfig {
	for _, l := range []*int{&p.MaxLiveLegsPerUser, &p.MaxLiveLegsPerGuest, &p.MaxLiveLegsPerConversation, &p.MaxLiveLegs,
		&p.DialsPerUser, &p.DialsPerGuest, &p.DialsPerConversation, &p.GuestDialsPerConversation, &p.DialsTotal,
		&p.GuestDialsPerLinkMaker, &p.MaxJoinLinksPerUser, &p.MaxGuestsPerLink, &p.AccountSharePercent} {
		if *l == 0 {
			*l = controller.Unlimited
		}
	}
	return &p
}

// addAdmin creates a user with the admin role and a token.
func addAdmin(t *testing.T, env *apitest.Env, name string) apitest.User {
	t.Helper()
	var u struct{ ID string }
	env.Must(201, "POST", "/api/v1/users", apitest.AdminToken, map[string]any{"display_name": name, "role": "admin",
		"email": fmt.Sprintf("%s.%d@example.com", strings.ToLower(name), time.Now().UnixNano())}).JSON(t, &u)
	var tok struct{ Token string }
	env.Must(201, "POST", "/api/v1/users/"+u.ID+"/tokens", apitest.AdminToken, nil).JSON(t, &tok)
	return apitest.User{ID: u.ID, Token: tok.Token, Name: name}
}

// auditEntries reads the whole audit log matching query (newest first)
// through the admin API, page by page.
func auditEntries(t *testing.T, env *apitest.Env, query string) []controller.AuditRecord {
	t.Helper()
	var out []controller.AuditRecord
	cursor := ""
	for pages := 0; pages < 100; pages++ {
		q := query
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		var p controller.AuditPage
		env.Must(200, "GET", "/api/v1/audit?limit=50&"+q, apitest.AdminToken, nil).JSON(t, &p)
		out = append(out, p.Entries...)
		if cursor = p.NextCursor; cursor == "" {
			return out
		}
	}
	t.Fatalf("audit log: more than 100 pages")
	return nil
}

// originates are the emulator's requests that would place a call or
// build a conference.
func originates(emu *ariemu.Server) []ariemu.Request {
	var out []ariemu.Request
	for _, r := range emu.Requests() {
		if r.Method == "POST" && (regexp.MustCompile(`^/ari/channels(/[^/]+)?$`).MatchString(r.Path) || r.Path == "/ari/bridges" ||
			regexp.MustCompile(`^/ari/bridges/[^/]+$`).MatchString(r.Path)) {
			out = append(out, r)
		}
	}
	return out
}

func TestHostileNumbers_AreRefusedWithTheirRuleBeforeThePBXHearsOfThem(t *testing.T) {
	env := apitest.Start(t, apitest.Options{Extensions: regexp.MustCompile(`^[0-9]{4}$`),
		Policy: &controller.PolicyConfig{DenyPrefixes: []string{"+1202555099"}}})
	// Mallory has no published number: an empty "number" falls back to
	// none and is a 400 too.
	mallory := env.AddUser("Mallory")
	pete := env.AddUser("Pete", num("work", "+1 900 555 0123")) // an admin typed a premium-rate number
	conv := env.Must(201, "POST", "/api/v1/conversations", mallory.Token, map[string]any{"kind": "im", "participants": []string{pete.ID}}).Map(t)["id"].(string)
	const bad, policy = 400, 403
	cases := []struct {
		number string
		status int
		code   string
	}{
		{"abc", bad, "invalid_number"},
		{"+1 202 CALL NOW", bad, "invalid_number"},
		{"1-800-FLOWERS", bad, "invalid_number"},
		{"+12025550101&Local/x@evil", bad, "invalid_number"},
		{"+12025550101@trunk", bad, "invalid_number"},
		{"PJSIP/1001", bad, "invalid_number"},
		{"+12025550101/1", bad, "invalid_number"},
		{"+12025550101,1", bad, "invalid_number"},
		{"+12025550101;x", bad, "invalid_number"},
		{"+12025550101|x", bad, "invalid_number"},
		{"+1 202 555 0101 ,w123", bad, "invalid_number"}, // a DTMF pause
		{"1001@lab", bad, "invalid_number"},
		{"${DIAL}", bad, "invalid_number"},
		{"+１２０２５５５０１０１", bad, "invalid_number"}, // fullwidth digits
		{"٠١٢٣٤٥٦٧٨٩", bad, "invalid_number"},   // Arabic-Indic digits
		{"+1202555010١", bad, "invalid_number"},
		{"+" + strings.Repeat("1", 40), bad, "invalid_number"},
		{strings.Repeat("2", 33), bad, "invalid_number"},
		{"+12025550101\n", bad, "invalid_number"},
		{"\x00+12025550101", bad, "invalid_number"},
		{"1001\r\n", bad, "invalid_number"},
		{"+1 (202) 555-0101 ext. 12", bad, "invalid_number"},
		{"12", bad, "invalid_number"},
		{"+999 123 456", bad, "invalid_number"},
		{"", bad, "invalid_number"},
		{"   ", bad, "invalid_number"},
		{"1001#", bad, "invalid_number"}, // extension look-alikes
		{"*1001", bad, "invalid_number"},
		{"10011", bad, "invalid_number"},
		{"+1001", bad, "invalid_number"},
		{"+1 900 555 0123", policy, controller.RuleNumberTypeNotAllowed}, // US premium rate
		{"1 (900) 200-1234", policy, controller.RuleNumberTypeNotAllowed},
		{"+1 500 555 0123", policy, controller.RuleNumberTypeNotAllowed}, // US personal number
		{"+44 909 879 0123", policy, controller.RuleCountryNotAllowed},   // UK premium rate
		{"+44 20 7946 0958", policy, controller.RuleCountryNotAllowed},
		{"+1 876 555 1234", policy, controller.RuleCountryNotAllowed},  // Jamaica, in +1
		{"+1 809 555 1234", policy, controller.RuleCountryNotAllowed},  // Dominican Republic, in +1
		{"+1 416 555 0123", policy, controller.RuleCountryNotAllowed},  // Canada
		{"+881 612 345 678", policy, controller.RuleCountryNotAllowed}, // satellite
		{"+870 772 345 678", policy, controller.RuleCountryNotAllowed}, // Inmarsat
		{"+979 123 456 789", policy, controller.RuleCountryNotAllowed}, // international premium rate
		{"+33 6 12 34 56 78", policy, controller.RuleCountryNotAllowed},
		{"+53 7234 5678", policy, controller.RuleCountryNotAllowed},
		{"(202) 555-0999", policy, controller.RuleNumberNotAllowed}, // deny list
		{"+1 202 555 0990", policy, controller.RuleNumberNotAllowed},
	}
	env.Emu.ResetRequests()
	refusals := map[string]int{} // E.164 and rule → how many
	for _, tc := range cases {
		r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", mallory.Token, map[string]any{"number": tc.number})
		if r.Status != tc.status || r.ErrorCode() != tc.code {
			t.Errorf("%q: %d %s, want %d %s", tc.number, r.Status, r.Body, tc.status, tc.code)
		}
		if tc.status == policy {
			e164, err := controller.Numbers{Region: "US"}.Normalize("number", tc.number)
			if err != nil {
				t.Fatalf("%q: %v", tc.number, err)
			}
			refusals[e164+" "+tc.code]++
		}
	}
	// A published number is held to the same rules as a typed one.
	if r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", pete.Token, map[string]any{"published": "work"}); r.Status != 403 ||
		r.ErrorCode() != controller.RuleNumberTypeNotAllowed {
		t.Errorf("premium published number: %d %s", r.Status, r.Body)
	}
	refusals["+19005550123 "+controller.RuleNumberTypeNotAllowed]++
	if rs := env.Emu.Requests(); len(rs) > 0 {
		for _, r := range rs {
			if r.Method != "GET" {
				t.Errorf("the emulator was asked %s %s", r.Method, r.Path)
			}
		}
	}
	conf := env.Do("GET", "/api/v1/conversations/"+conv+"/audio?last=true", mallory.Token, nil)
	if conf.Status != 404 || conf.ErrorCode() != "no_audio" {
		t.Errorf("a refused dial left a conference behind: %d %s", conf.Status, conf.Body)
	}
	// Every refusal is in the audit log with its rule, number and who.
	if len(cases) < 30 {
		t.Fatalf("only %d hostile numbers", len(cases))
	}
	for _, e := range auditEntries(t, env, "action=dial.refused&conversation_id="+conv) {
		key := e.Number + " " + e.Rule
		if refusals[key] == 0 || e.ActorKind != "user" || (e.ActorID != mallory.ID && e.ActorID != pete.ID) || e.Source == "" {
			t.Errorf("audit entry %+v: not one of the refusals, or not by mallory or pete", e)
		}
		refusals[key]--
	}
	for key, n := range refusals {
		if n != 0 {
			t.Errorf("refusal %s: %d more answered than audited", key, n)
		}
	}
}

func TestHostileNumbers_OnAcceptAndRedirectAreRefusedAndTheInvitationStaysOpen(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	carol := env.AddUser("Carol", num("work", "+1 900 555 0124")) // premium rate
	conv := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im",
		"participants": []string{bob.ID, carol.ID}}).Map(t)["id"].(string)
	join := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{}).Map(t)
	legState(t, env, conv, alice.Token, join["leg"].(map[string]any)["id"].(string), "connected")
	bobInv, carolInv := pendingInvitation(t, env, bob, conv), pendingInvitation(t, env, carol, conv)
	env.Emu.ResetRequests()
	for _, tc := range []struct {
		number string
		status int
		code   string
	}{
		{"+1 900 555 0123", 403, controller.RuleNumberTypeNotAllowed},
		{"+44 20 7946 0958", 403, controller.RuleCountryNotAllowed},
		{"+1 876 555 1234", 403, controller.RuleCountryNotAllowed},
		{"+12025550111@evil", 400, "invalid_number"},
		{"", 400, "invalid_number"},
	} {
		r := env.Do("POST", "/api/v1/invitations/"+bobInv+"/redirect", bob.Token, map[string]any{"number": tc.number})
		if r.Status != tc.status || r.ErrorCode() != tc.code {
			t.Errorf("redirect to %q: %d %s, want %d %s", tc.number, r.Status, r.Body, tc.status, tc.code)
		}
	}
	if r := env.Do("POST", "/api/v1/invitations/"+carolInv+"/accept", carol.Token, map[string]any{}); r.Status != 403 ||
		r.ErrorCode() != controller.RuleNumberTypeNotAllowed {
		t.Errorf("accept on a premium published number: %d %s", r.Status, r.Body)
	}
	if o := originates(env.Emu); len(o) > 0 {
		t.Fatalf("refused dials reached the PBX: %+v", o)
	}
	// Nothing was consumed: Bob can still redirect, to an allowed number.
	red := env.Must(200, "POST", "/api/v1/invitations/"+bobInv+"/redirect", bob.Token, map[string]any{"number": "(202) 555-0177"}).Map(t)
	legState(t, env, conv, alice.Token, red["leg"].(map[string]any)["id"].(string), "connected")
	if n := len(auditEntries(t, env, "action=dial.refused&conversation_id="+conv)); n != 4 {
		t.Errorf("%d refusals audited, want 4", n)
	}
	dials := auditEntries(t, env, "action=dial&conversation_id="+conv)
	if len(dials) != 2 || dials[0].Number != "+12025550177" || dials[0].Source != "redirect" || dials[0].ActorID != bob.ID ||
		dials[1].Number != "+12025550101" || dials[1].Source != "published" {
		t.Errorf("dial-outs audited: %+v", dials)
	}
}

func TestPolicy_RateLimitRefusesTheNPlusFirstUntilTheWindowFrees(t *testing.T) {
	const window = 3 * time.Second
	env := apitest.Start(t, apitest.Options{Policy: noLimitsBut(controller.PolicyConfig{DialsPerUser: 2, Window: window})})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	var convs []string
	for i := 0; i < 3; i++ {
		convs = append(convs, env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string))
	}
	join := func(conv string) apitest.Response {
		return env.Do("POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"})
	}
	start := time.Now()
	for i := 0; i < 2; i++ {
		if r := join(convs[i]); r.Status != 201 {
			t.Fatalf("dial %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	env.Emu.ResetRequests()
	r := join(convs[2])
	if time.Since(start) >= window {
		t.Fatalf("the machine is too slow for a %s window (%s spent)", window, time.Since(start))
	}
	if r.Status != 429 || r.ErrorCode() != controller.RuleRateLimited || !strings.Contains(r.Map(t)["error"].(map[string]any)["message"].(string), "try again in") {
		t.Fatalf("3rd dial in the window: %d %s, want 429 rate_limited", r.Status, r.Body)
	}
	if o := originates(env.Emu); len(o) > 0 {
		t.Fatalf("a rate-limited dial reached the PBX: %+v", o)
	}
	refused := 1
	env.WaitFor("the rate window to free a dial", 5*window, func() bool {
		r := join(convs[2])
		if r.Status == 429 {
			refused++
		}
		return r.Status == 201
	})
	if time.Since(start) < window {
		t.Fatalf("allowed again after %s, inside the %s window", time.Since(start), window)
	}
	if n := len(auditEntries(t, env, "action=dial.refused&actor="+alice.ID)); n != refused {
		t.Errorf("%d refusals audited, %d answered 429", n, refused)
	}
	if n := len(auditEntries(t, env, "action=dial&actor="+alice.ID)); n != 3 {
		t.Errorf("%d dial-outs audited, want 3", n)
	}
}

func TestPolicy_CapsOnCallsUpAtOnceFreeWhenACallEnds(t *testing.T) {
	env := apitest.Start(t, apitest.Options{Policy: noLimitsBut(controller.PolicyConfig{MaxLiveLegsPerUser: 1, MaxLiveLegs: 3})})
	users := map[string]apitest.User{}
	convs := map[string]string{}
	for i, name := range []string{"Alice", "Bob", "Carol", "Dave"} {
		users[name] = env.AddUser(name, num("work", fmt.Sprintf("+1202555%04d", 101+10*i)))
		convs[name] = env.Must(201, "POST", "/api/v1/conversations", users[name].Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
	}
	aliceSecond := env.Must(201, "POST", "/api/v1/conversations", users["Alice"].Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
	join := func(name, conv string) apitest.Response {
		return env.Do("POST", "/api/v1/conversations/"+conv+"/audio", users[name].Token, map[string]any{})
	}
	legs := map[string]string{}
	for _, name := range []string{"Alice"} {
		r := join(name, convs[name])
		if r.Status != 201 {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
		legs[name] = r.Map(t)["leg"].(map[string]any)["id"].(string)
	}
	// Per user: Alice has a call up; a second one, elsewhere, is refused.
	if r := join("Alice", aliceSecond); r.Status != 403 || r.ErrorCode() != controller.RuleTooManyCalls {
		t.Fatalf("Alice's second call: %d %s", r.Status, r.Body)
	}
	for _, name := range []string{"Bob", "Carol"} {
		r := join(name, convs[name])
		if r.Status != 201 {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
		legs[name] = r.Map(t)["leg"].(map[string]any)["id"].(string)
	}
	// The service: three calls up, the fourth is refused.
	env.Emu.ResetRequests()
	if r := join("Dave", convs["Dave"]); r.Status != 403 || r.ErrorCode() != controller.RuleTooManyCalls {
		t.Fatalf("4th call of the service: %d %s", r.Status, r.Body)
	}
	for _, o := range originates(env.Emu) {
		t.Errorf("a refused call reached the PBX: %s %s", o.Method, o.Path)
	}
	// Alice hangs up: her own limit and the service's free one place.
	env.Must(204, "DELETE", "/api/v1/legs/"+legs["Alice"], users["Alice"].Token, nil)
	waitAudio(t, env, convs["Alice"], users["Alice"].Token, "alice's call to end", func(c map[string]any) bool {
		l := legOf(c, legs["Alice"])
		return l != nil && l["state"] != "dialing" && l["state"] != "ringing" && l["state"] != "connected"
	})
	r := join("Alice", aliceSecond)
	if r.Status != 201 {
		t.Fatalf("Alice after hanging up: %d %s", r.Status, r.Body)
	}
	if r := join("Dave", convs["Dave"]); r.Status != 403 || r.ErrorCode() != controller.RuleTooManyCalls {
		t.Fatalf("Dave, the service still full: %d %s", r.Status, r.Body)
	}
	env.Must(204, "DELETE", "/api/v1/legs/"+legs["Bob"], users["Bob"].Token, nil)
	env.WaitFor("Dave's call to be allowed once Bob's has ended", 10*time.Second, func() bool {
		return join("Dave", convs["Dave"]).Status == 201
	})
	refused := auditEntries(t, env, "action=dial.refused")
	for _, e := range refused {
		if e.Rule != controller.RuleTooManyCalls || !strings.HasPrefix(e.Detail, "max_live_legs") {
			t.Errorf("refusal %+v", e)
		}
	}
	if len(refused) < 3 {
		t.Errorf("%d refusals audited, want at least 3", len(refused))
	}
	if n := len(auditEntries(t, env, "action=dial")); n != 5 {
		t.Errorf("%d dial-outs audited, want 5", n)
	}
}

func TestStranger_LegsAndInvitationsAnswerLikeUnknownIDsAndOnlyModeratorsModerate(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))
	carol := env.AddUser("Carol", num("work", "+12025550121"))
	mallory := env.AddUser("Mallory", num("work", "+12025550199"))
	conv := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im",
		"participants": []string{bob.ID, carol.ID}}).Map(t)["id"].(string)
	aLeg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, aLeg, "connected")
	bobInv := pendingInvitation(t, env, bob, conv)
	unknown := controller.NewID()

	same := func(who apitest.User, method, path string, id string, body any) {
		t.Helper()
		got := env.Do(method, fmt.Sprintf(path, id), who.Token, body)
		missing := env.Do(method, fmt.Sprintf(path, unknown), who.Token, body)
		if got.Status != 404 || missing.Status != 404 || string(got.Body) != string(missing.Body) {
			t.Errorf("%s %s by %s: %d %s; unknown id: %d %s; want the same 404", method, path, who.Name, got.Status, got.Body, missing.Status, missing.Body)
		}
	}
	// A stranger: every conversation, leg and invitation route.
	for _, rt := range []struct {
		method, path, id string
		body             any
	}{
		{"GET", "/api/v1/conversations/%s", conv, nil},
		{"GET", "/api/v1/conversations/%s/messages", conv, nil},
		{"POST", "/api/v1/conversations/%s/messages", conv, map[string]any{"text": "hi"}},
		{"GET", "/api/v1/conversations/%s/events", conv, nil},
		{"POST", "/api/v1/conversations/%s/participants", conv, map[string]any{"user_ids": []string{mallory.ID}}},
		{"DELETE", "/api/v1/conversations/%s/participants/me", conv, nil},
		{"PUT", "/api/v1/conversations/%s/presenter", conv, nil},
		{"DELETE", "/api/v1/conversations/%s/presenter", conv, nil},
		{"POST", "/api/v1/conversations/%s/audio", conv, map[string]any{"published": "work"}},
		{"GET", "/api/v1/conversations/%s/audio", conv, nil},
		{"DELETE", "/api/v1/conversations/%s/audio", conv, nil},
		{"POST", "/api/v1/conversations/%s/audio/invitations", conv, map[string]any{"user_ids": []string{mallory.ID}}},
		{"POST", "/api/v1/legs/%s/mute", aLeg, nil},
		{"POST", "/api/v1/legs/%s/unmute", aLeg, nil},
		{"DELETE", "/api/v1/legs/%s", aLeg, nil},
		{"POST", "/api/v1/invitations/%s/accept", bobInv, map[string]any{}},
		{"POST", "/api/v1/invitations/%s/decline", bobInv, nil},
		{"POST", "/api/v1/invitations/%s/redirect", bobInv, map[string]any{"number": "+12025550199"}},
	} {
		same(mallory, rt.method, rt.path, rt.id, rt.body)
	}
	// Every route with an id, including those added later: a stranger
	// gets exactly what an unknown id gets.
	link := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/join-links", alice.Token, map[string]any{}).Map(t)["id"].(string)
	known := map[string]string{"conversations": conv, "legs": aLeg, "invitations": bobInv, "join-links": link, "users": alice.ID}
	param := regexp.MustCompile(`:[a-z_]+`)
	generic := 0
	for _, rt := range api.New(api.Config{}, env.Ctl).Routes() {
		parts := strings.Split(strings.TrimPrefix(rt.Path, "/api/v1/"), "/")
		id, ok := known[parts[0]]
		if !ok || len(parts) < 2 || parts[1] != ":id" || !strings.HasPrefix(rt.Path, "/api/v1/") || !strings.Contains("GET POST PUT DELETE", rt.Method) {
			continue
		}
		other := controller.NewID() // any further parameter (a guest id, a token id)
		fill := func(first string) string {
			n := 0
			return param.ReplaceAllStringFunc(rt.Path, func(string) string {
				n++
				if n == 1 {
					return first
				}
				return other
			})
		}
		var body any
		if rt.Method != "GET" && rt.Method != "DELETE" {
			body = map[string]any{}
		}
		got, missing := env.Do(rt.Method, fill(id), mallory.Token, body), env.Do(rt.Method, fill(unknown), mallory.Token, body)
		if got.Status != missing.Status || string(got.Body) != string(missing.Body) {
			t.Errorf("%s %s by a stranger: %d %s; unknown id: %d %s", rt.Method, rt.Path, got.Status, got.Body, missing.Status, missing.Body)
		}
		generic++
	}
	if generic < 20 {
		t.Errorf("only %d routes with ids checked", generic)
	}
	// A participant answering someone else's invitation: as unknown.
	same(carol, "POST", "/api/v1/invitations/%s/accept", bobInv, map[string]any{})
	same(carol, "POST", "/api/v1/invitations/%s/decline", bobInv, nil)
	same(carol, "POST", "/api/v1/invitations/%s/redirect", bobInv, map[string]any{"number": "+12025550121"})
	// Nothing of that touched Alice's call or Bob's invitation.
	conf := waitAudio(t, env, conv, alice.Token, "state", func(map[string]any) bool { return true })
	if l := legOf(conf, aLeg); l["state"] != "connected" || l["muted"] != false {
		t.Fatalf("alice's leg after the strangers: %v", l)
	}
	if inv := invitationOf(conf, bob.ID); inv["state"] != "pending" {
		t.Fatalf("bob's invitation after the strangers: %v", inv)
	}

	// Moderation: Bob (a participant) cannot mute or hang up Alice, nor
	// end the audio; he can hang up himself.
	bLeg := env.Must(200, "POST", "/api/v1/invitations/"+bobInv+"/accept", bob.Token, map[string]any{}).Map(t)["leg"].(map[string]any)["id"].(string)
	legState(t, env, conv, alice.Token, bLeg, "connected")
	for _, rt := range [][2]string{{"POST", "/api/v1/legs/" + aLeg + "/mute"}, {"POST", "/api/v1/legs/" + aLeg + "/unmute"},
		{"DELETE", "/api/v1/legs/" + aLeg}, {"DELETE", "/api/v1/conversations/" + conv + "/audio"}} {
		if r := env.Do(rt[0], rt[1], bob.Token, nil); r.Status != 403 || r.ErrorCode() != "organizer_only" {
			t.Errorf("bob %s %s: %d %s, want 403 organizer_only", rt[0], rt[1], r.Status, r.Body)
		}
	}
	env.Must(200, "POST", "/api/v1/legs/"+bLeg+"/mute", bob.Token, nil) // his own
	// The organiser mutes Bob; an admin who is in no conversation may too.
	env.Must(200, "POST", "/api/v1/legs/"+bLeg+"/unmute", alice.Token, nil)
	env.Must(200, "POST", "/api/v1/legs/"+bLeg+"/mute", apitest.AdminToken, nil)
	env.Must(204, "DELETE", "/api/v1/legs/"+bLeg, bob.Token, nil) // his own, always
	// A participant with the admin role, not the organiser, may end the
	// audio for everyone.
	root := addAdmin(t, env, "Root")
	env.Must(200, "POST", "/api/v1/conversations/"+conv+"/participants", alice.Token, map[string]any{"user_ids": []string{root.ID}})
	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/audio", root.Token, nil)

	// Admin routes: users get 403 admin_only.
	for _, p := range []string{"/api/v1/audit", "/api/v1/audit/export", "/api/v1/users", "/api/v1/pbx"} {
		if r := env.Do("GET", p, alice.Token, nil); r.Status != 403 || r.ErrorCode() != "admin_only" {
			t.Errorf("GET %s as a user: %d %s", p, r.Status, r.Body)
		}
	}
	// Moderation is in the audit log: who did what to which leg.
	want := map[string]int{"leg.mute": 2, "leg.unmute": 1, "leg.hangup": 1, "audio.end": 1}
	for action, n := range want {
		es := auditEntries(t, env, "action="+action+"&conversation_id="+conv)
		if len(es) != n {
			t.Errorf("%s: %d audit entries, want %d: %+v", action, len(es), n, es)
		}
	}
	byAdmin := auditEntries(t, env, "action=leg.mute&actor=admin")
	if len(byAdmin) != 1 || byAdmin[0].TargetID != bLeg || byAdmin[0].ActorKind != "admin" || byAdmin[0].Number != "+12025550111" {
		t.Errorf("the admin's mute: %+v", byAdmin)
	}
}

func TestAudit_FiltersCursorPagesAndJSONLinesExport(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550486"), num("mobile", "+12025550102"))
	c1 := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
	c2 := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
	for i := 0; i < 3; i++ {
		env.Must(403, "POST", "/api/v1/conversations/"+c1+"/audio", alice.Token, map[string]any{"number": fmt.Sprintf("+1 900 555 %04d", 100+i)})
	}
	env.Must(403, "POST", "/api/v1/conversations/"+c2+"/audio", alice.Token, map[string]any{"number": "+44 20 7946 0958"})
	leg := env.Must(201, "POST", "/api/v1/conversations/"+c2+"/audio", alice.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)["id"].(string)
	env.Do("GET", "/api/v1/me", "not-a-real-token-but-a-secret", nil)

	// Filters.
	if es := auditEntries(t, env, "conversation_id="+c1); len(es) != 3 {
		t.Errorf("c1: %d entries, want 3", len(es))
	}
	c2es := auditEntries(t, env, "conversation_id="+c2)
	if len(c2es) != 2 || c2es[0].Action != "dial" || c2es[0].TargetID != leg || c2es[1].Rule != controller.RuleCountryNotAllowed {
		t.Errorf("c2 (newest first): %+v", c2es)
	}
	if es := auditEntries(t, env, "actor="+alice.ID+"&action=dial.refused"); len(es) != 4 {
		t.Errorf("alice's refusals: %d, want 4", len(es))
	}
	// Everything after the dial's own entry (a fixed slack before a clock
	// reading failed once the dial's answer came within a millisecond of
	// its audit entry).
	if len(c2es) == 0 {
		t.Fatal("no audit entries for c2")
	}
	since := auditEntries(t, env, "since="+url.QueryEscape(c2es[0].At.Add(time.Microsecond).Format(time.RFC3339Nano)))
	if len(since) != 1 || since[0].Action != "auth.failed" || since[0].Route != "GET /api/v1/me" || since[0].Remote == "" {
		t.Errorf("since: %+v", since)
	}
	// Pages of 2 go back in time without gaps or repeats.
	var ids []string
	cursor := ""
	for {
		var p controller.AuditPage
		env.Must(200, "GET", "/api/v1/audit?action=dial.refused&limit=2&cursor="+cursor, apitest.AdminToken, nil).JSON(t, &p)
		for _, e := range p.Entries {
			ids = append(ids, e.ID)
		}
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if len(ids) != 4 {
		t.Errorf("paged ids %v, want the 4 refusals", ids)
	}
	for i := 1; i < len(ids); i++ {
		a, _ := strconv.ParseInt(ids[i-1], 10, 64)
		b, _ := strconv.ParseInt(ids[i], 10, 64)
		if b >= a {
			t.Errorf("paged ids %v: not newest first without repeats", ids)
		}
	}
	for _, bad := range []string{"since=yesterday", "cursor=abc", "limit=0", "limit=5000"} {
		if r := env.Do("GET", "/api/v1/audit?"+bad, apitest.AdminToken, nil); r.Status != 400 {
			t.Errorf("%s: %d", bad, r.Status)
		}
	}
	// The export: JSON lines, oldest first, same filters.
	r := env.Must(200, "GET", "/api/v1/audit/export?conversation_id="+c2, apitest.AdminToken, nil)
	if ct := r.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("export content type %q", ct)
	}
	lines := strings.Split(strings.TrimSpace(string(r.Body)), "\n")
	if len(lines) != 2 {
		t.Fatalf("export: %d lines: %s", len(lines), r.Body)
	}
	var first, second controller.AuditRecord
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first.Action != "dial.refused" || second.Action != "dial" || second.Number != "+12025550486" {
		t.Errorf("export order or content: %s", r.Body)
	}
	if r := env.Must(200, "GET", "/api/v1/audit/export?actor=nobody", apitest.AdminToken, nil); len(r.Body) != 0 {
		t.Errorf("empty export: %q", r.Body)
	}
}

func TestSecret_SessionCookieIsSecureOverHTTPSAndCSRFGuardsEveryWrite(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice")
	sessionCookie := func(h http.Header) *http.Cookie {
		for _, c := range (&http.Response{Header: h}).Cookies() {
			if c.Name == "convoice_session" {
				return c
			}
		}
		t.Fatalf("no session cookie in %v", h)
		return nil
	}
	// Plain HTTP: not Secure (a browser would drop it), but HttpOnly, Lax.
	plain := sessionCookie(env.Must(201, "POST", "/api/v1/session", "", map[string]any{"token": alice.Token}).Header)
	if plain.Secure || !plain.HttpOnly || plain.SameSite != http.SameSiteLaxMode {
		t.Errorf("cookie over plain HTTP: %+v", plain)
	}
	// Behind a TLS proxy on this host (echo trusts forwarding headers from
	// loopback and private peers only).
	fwd := sessionCookie(env.Must(201, "POST", "/api/v1/session", "", map[string]any{"token": alice.Token}, "X-Forwarded-Proto", "https").Header)
	if !fwd.Secure || !fwd.HttpOnly || fwd.SameSite != http.SameSiteLaxMode {
		t.Errorf("cookie behind an HTTPS proxy: %+v", fwd)
	}
	// Served over TLS itself.
	srv := httptest.NewTLSServer(api.New(api.Config{AdminTokenHash: controller.HashSecret(apitest.AdminToken), Gatherer: prometheus.NewRegistry()}, env.Ctl))
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/api/v1/session", "application/json", strings.NewReader(`{"token":"`+alice.Token+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tlsCookie := sessionCookie(resp.Header); resp.StatusCode != 201 || !tlsCookie.Secure || !tlsCookie.HttpOnly || tlsCookie.SameSite != http.SameSiteLaxMode {
		t.Errorf("cookie over TLS: %d %+v", resp.StatusCode, tlsCookie)
	}
	req, _ := http.NewRequest("DELETE", srv.URL+"/api/v1/session", nil)
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if out := sessionCookie(resp.Header); !out.Secure || out.MaxAge >= 0 {
		t.Errorf("sign-out cookie over TLS: %+v", out)
	}

	// CSRF: every state-changing route that takes the session cookie
	// refuses it without the header, and lets it through with it.
	var csrf struct {
		CSRFToken string `json:"csrf_token"`
	}
	env.Must(200, "GET", "/api/v1/session", alice.Token, nil).JSON(t, &csrf)
	cookie := "convoice_session=" + alice.Token
	param := regexp.MustCompile(`:[a-z_]+`)
	checked := 0
	var otherAuth []string
	for _, rt := range api.New(api.Config{}, env.Ctl).Routes() {
		switch rt.Method {
		case "POST", "PUT", "PATCH", "DELETE":
		default:
			continue // reads, and echo's not-found entries
		}
		if !strings.HasPrefix(rt.Path, "/api/v1/") || strings.HasSuffix(rt.Path, "*") || rt.Path == "/api/v1/session" {
			continue
		}
		path := param.ReplaceAllString(rt.Path, controller.NewID())
		if r := env.Do(rt.Method, path, "", nil); r.Status != 401 {
			continue // public (join links): no session to forge
		}
		r := env.Do(rt.Method, path, "", nil, "Cookie", cookie)
		if r.Status == 401 {
			otherAuth = append(otherAuth, rt.Method+" "+rt.Path) // another session kind (guests): not this cookie
			continue
		}
		checked++
		if r.Status != 403 || r.ErrorCode() != "csrf" {
			t.Errorf("%s %s with the cookie and no CSRF header: %d %s", rt.Method, rt.Path, r.Status, r.Body)
		}
		if r := env.Do(rt.Method, path, "", nil, "Cookie", cookie, "X-CSRF-Token", csrf.CSRFToken); r.ErrorCode() == "csrf" {
			t.Errorf("%s %s with the right CSRF header: still refused", rt.Method, rt.Path)
		}
	}
	if checked < 20 {
		t.Fatalf("only %d state-changing routes checked", checked)
	}
	t.Logf("CSRF checked on %d routes; with their own session kind: %v", checked, otherAuth)
	if n := len(auditEntries(t, env, "action=auth.failed")); n == 0 {
		t.Errorf("CSRF failures and token-less calls are not audited")
	}
}
