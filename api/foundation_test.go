package api_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

func num(label, n string) controller.NumberInput {
	return controller.NumberInput{Label: label, Number: n}
}

func TestGivenAConversation_WhenAParticipantPostsAndReadsEvents_ThenTheStreamCarriesEverything(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	bob := env.AddUser("Bob", num("work", "+12025550111"))

	r := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{
		"kind": "im", "subject": "Planning", "participants": []string{bob.ID}})
	conv := r.Map(t)
	id := conv["id"].(string)
	if conv["kind"] != "im" || conv["subject"] != "Planning" || len(conv["participants"].([]any)) != 2 {
		t.Fatalf("conversation: %s", r.Body)
	}
	stream := env.Subscribe(id, bob.Token, "")
	defer stream.Close()
	created := stream.Next(t, 5*time.Second, nil)
	if created.Type != "conversation.created" || created.ID != "1" {
		t.Fatalf("first event %+v", created)
	}
	m := env.Must(201, "POST", "/api/v1/conversations/"+id+"/messages", alice.Token, map[string]any{"text": "hello Bob"}).Map(t)
	if m["text"] != "hello Bob" || m["author_name"] != "Alice" {
		t.Fatalf("message %v", m)
	}
	ev := stream.Next(t, 5*time.Second, nil)
	if ev.Type != "message.created" || ev.ID != "2" || ev.Data["text"] != "hello Bob" {
		t.Fatalf("event %+v", ev)
	}
	page := env.Must(200, "GET", "/api/v1/conversations/"+id+"/messages", bob.Token, nil).Map(t)
	if msgs := page["messages"].([]any); len(msgs) != 1 {
		t.Fatalf("messages %v", page)
	}
	list := env.Must(200, "GET", "/api/v1/conversations", bob.Token, nil).Map(t)
	if cs := list["conversations"].([]any); len(cs) != 1 {
		t.Fatalf("bob's conversations %v", list)
	}
}

func TestGivenAStreamThatDropped_WhenTheClientResumesWithLastEventID_ThenNoGapAndNoDuplicate(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice")
	id := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)

	first := env.Subscribe(id, alice.Token, "")
	for i := 0; i < 5; i++ {
		env.Must(201, "POST", "/api/v1/conversations/"+id+"/messages", alice.Token, map[string]any{"text": fmt.Sprint("m", i)})
	}
	var seen []string
	for len(seen) < 6 { // conversation.created + 5 messages
		seen = append(seen, first.Next(t, 5*time.Second, nil).ID)
	}
	first.Close()
	// While the client is away, more happens.
	for i := 5; i < 40; i++ {
		env.Must(201, "POST", "/api/v1/conversations/"+id+"/messages", alice.Token, map[string]any{"text": fmt.Sprint("m", i)})
	}
	resumed := env.Subscribe(id, alice.Token, seen[len(seen)-1])
	defer resumed.Close()
	// And more happens while it catches up.
	go func() {
		for i := 40; i < 60; i++ {
			env.Do("POST", "/api/v1/conversations/"+id+"/messages", alice.Token, map[string]any{"text": fmt.Sprint("m", i)})
		}
	}()
	want := 6
	for want < 61 {
		ev := resumed.Next(t, 10*time.Second, nil)
		want++
		if ev.ID != fmt.Sprint(want) {
			t.Fatalf("got event %s, want %d (gap or duplicate)", ev.ID, want)
		}
		if ev.Data["text"] != fmt.Sprint("m", want-2) {
			t.Fatalf("event %s carries %v", ev.ID, ev.Data["text"])
		}
	}
}

func TestGivenAStranger_WhenTheyTouchAConversation_ThenEveryRouteAnswersLikeAnUnknownID(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	mallory := env.AddUser("Mallory", num("work", "+12025550199"))
	id := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "sharing", "subject": "secret"}).Map(t)["id"].(string)
	unknown := controller.NewID()
	routes := []struct{ method, path, body string }{
		{"GET", "/api/v1/conversations/%s", ""},
		{"GET", "/api/v1/conversations/%s/messages", ""},
		{"POST", "/api/v1/conversations/%s/messages", `{"text":"hi"}`},
		{"GET", "/api/v1/conversations/%s/events", ""},
		{"POST", "/api/v1/conversations/%s/participants", `{"user_ids":["x"]}`},
		{"DELETE", "/api/v1/conversations/%s/participants/me", ""},
		{"PUT", "/api/v1/conversations/%s/presenter", ""},
		{"DELETE", "/api/v1/conversations/%s/presenter", ""},
		{"POST", "/api/v1/conversations/%s/audio", `{"published":"work"}`},
		{"GET", "/api/v1/conversations/%s/audio", ""},
		{"DELETE", "/api/v1/conversations/%s/audio", ""},
		{"POST", "/api/v1/conversations/%s/audio/invitations", `{"user_ids":["x"]}`},
	}
	for _, rt := range routes {
		var body any
		if rt.body != "" {
			body = rt.body
		}
		stranger := env.Do(rt.method, fmt.Sprintf(rt.path, id), mallory.Token, body)
		missing := env.Do(rt.method, fmt.Sprintf(rt.path, unknown), mallory.Token, body)
		if stranger.Status != 404 || missing.Status != 404 {
			t.Errorf("%s %s: stranger %d, unknown id %d, want 404 both", rt.method, rt.path, stranger.Status, missing.Status)
			continue
		}
		if string(stranger.Body) != string(missing.Body) {
			t.Errorf("%s %s: stranger sees %s but unknown id gives %s", rt.method, rt.path, stranger.Body, missing.Body)
		}
	}
}

func TestGivenBadInput_ThenA400NamesTheField(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	cases := []struct {
		name, method, path, token string
		body                      any
		field                     string
	}{
		{"malformed JSON", "POST", "/api/v1/conversations", alice.Token, `{"kind": "im",`, ""},
		{"unknown field", "POST", "/api/v1/conversations", alice.Token, `{"kind":"im","colour":"red"}`, "colour"},
		{"wrong type", "POST", "/api/v1/conversations", alice.Token, `{"kind":"im","subject":42}`, "subject"},
		{"bad kind", "POST", "/api/v1/conversations", alice.Token, `{"kind":"video"}`, "kind"},
		{"unknown participant", "POST", "/api/v1/conversations", alice.Token, `{"kind":"im","participants":["nobody"]}`, "participants"},
		{"bad phone number", "POST", "/api/v1/users", apitest.AdminToken,
			`{"display_name":"X","email":"x@example.com","numbers":[{"label":"work","number":"12"}]}`, "numbers[0].number"},
		{"letters in number", "PUT", "/api/v1/me/numbers", alice.Token,
			`{"numbers":[{"label":"mobile","number":"+1 202 CALL NOW"}]}`, "numbers[0].number"},
		{"bad label", "PUT", "/api/v1/me/numbers", alice.Token,
			`{"numbers":[{"label":"pager","number":"+12025550101"}]}`, "numbers[0].label"},
		{"bad email", "POST", "/api/v1/users", apitest.AdminToken, `{"display_name":"X","email":"not-an-email"}`, "email"},
		{"empty message", "POST", "/api/v1/conversations/%s/messages", alice.Token, `{"text":"   "}`, "text"},
	}
	conv := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if strings.Contains(path, "%s") {
				path = fmt.Sprintf(path, conv)
			}
			r := env.Do(tc.method, path, tc.token, tc.body)
			if r.Status != 400 {
				t.Fatalf("status %d, want 400: %s", r.Status, r.Body)
			}
			var eb struct {
				Error struct{ Code, Message, Field string } `json:"error"`
			}
			r.JSON(t, &eb)
			if eb.Error.Code == "" || eb.Error.Message == "" {
				t.Fatalf("error body lacks code or message: %s", r.Body)
			}
			if tc.field != "" && (eb.Error.Field != tc.field || !strings.Contains(eb.Error.Message, tc.field)) {
				t.Fatalf("error should name field %q: %s", tc.field, r.Body)
			}
		})
	}
	// Nothing was lost: Alice's numbers are as before.
	me := env.Must(200, "GET", "/api/v1/me", alice.Token, nil).Map(t)
	nums := me["numbers"].([]any)
	if len(nums) != 1 || nums[0].(map[string]any)["number"] != "+12025550101" {
		t.Fatalf("numbers changed by a refused request: %v", nums)
	}
}

func TestAuth_NoTokenBadTokenRevokedTokenAndAdminOnly(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice")
	if r := env.Do("GET", "/api/v1/me", "", nil); r.Status != 401 || r.ErrorCode() != "unauthorized" {
		t.Fatalf("no token: %d %s", r.Status, r.Body)
	}
	if r := env.Do("GET", "/api/v1/me", "wrong", nil); r.Status != 401 {
		t.Fatalf("bad token: %d", r.Status)
	}
	if r := env.Do("POST", "/api/v1/users", alice.Token, map[string]any{"display_name": "X", "email": "x@example.com"}); r.Status != 403 {
		t.Fatalf("user creating users: %d", r.Status)
	}
	tok := env.Must(201, "POST", "/api/v1/users/"+alice.ID+"/tokens", alice.Token, map[string]any{"name": "laptop"}).Map(t)
	second := tok["token"].(string)
	env.Must(200, "GET", "/api/v1/me", second, nil)
	env.Must(204, "DELETE", "/api/v1/users/"+alice.ID+"/tokens/"+tok["id"].(string), alice.Token, nil)
	if r := env.Do("GET", "/api/v1/me", second, nil); r.Status != 401 {
		t.Fatalf("revoked token still works: %d", r.Status)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/api/openapi.yaml"} {
		if r := env.Do("GET", p, "", nil); r.Status == 401 {
			t.Fatalf("%s needs a token", p)
		}
	}
}

func TestCookieSession_NeedsCSRFHeaderForWrites(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice")
	r := env.Must(201, "POST", "/api/v1/session", "", map[string]any{"token": alice.Token})
	var sess struct {
		CSRFToken string `json:"csrf_token"`
	}
	r.JSON(t, &sess)
	var cookie string
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == "convoice_session" {
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
				t.Fatalf("cookie not HttpOnly/SameSite=Lax: %+v", c)
			}
			cookie = c.Name + "=" + c.Value
		}
	}
	if cookie == "" || sess.CSRFToken == "" {
		t.Fatalf("no session cookie or csrf token: %v %s", r.Header, r.Body)
	}
	env.Must(200, "GET", "/api/v1/me", "", nil, "Cookie", cookie)
	if r := env.Do("POST", "/api/v1/conversations", "", map[string]any{"kind": "im"}, "Cookie", cookie); r.Status != 403 || r.ErrorCode() != "csrf" {
		t.Fatalf("cookie write without CSRF: %d %s", r.Status, r.Body)
	}
	env.Must(201, "POST", "/api/v1/conversations", "", map[string]any{"kind": "im"}, "Cookie", cookie, "X-CSRF-Token", sess.CSRFToken)
	// A bearer client needs no CSRF header.
	env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im"})
}

func TestGivenARestart_ThenConversationsMessagesAndEventsAreKept(t *testing.T) {
	db := filepath.Join(t.TempDir(), "keep.db")
	env := apitest.Start(t, apitest.Options{NoPBX: true, DB: db})
	alice := env.AddUser("Alice")
	id := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im", "subject": "kept"}).Map(t)["id"].(string)
	for i := 0; i < 3; i++ {
		env.Must(201, "POST", "/api/v1/conversations/"+id+"/messages", alice.Token, map[string]any{"text": fmt.Sprint("m", i)})
	}
	env.Restart()
	conv := env.Must(200, "GET", "/api/v1/conversations/"+id, alice.Token, nil).Map(t)
	if conv["subject"] != "kept" || conv["last_event_id"] != "4" {
		t.Fatalf("after restart: %v", conv)
	}
	msgs := env.Must(200, "GET", "/api/v1/conversations/"+id+"/messages", alice.Token, nil).Map(t)["messages"].([]any)
	if len(msgs) != 3 {
		t.Fatalf("messages after restart: %v", msgs)
	}
	s := env.Subscribe(id, alice.Token, "")
	defer s.Close()
	for i := 1; i <= 4; i++ {
		if ev := s.Next(t, 5*time.Second, nil); ev.ID != fmt.Sprint(i) {
			t.Fatalf("replayed event %s, want %d", ev.ID, i)
		}
	}
}

func TestMessagesPageWithCursor(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice")
	id := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "im"}).Map(t)["id"].(string)
	for i := 0; i < 7; i++ {
		env.Must(201, "POST", "/api/v1/conversations/"+id+"/messages", alice.Token, map[string]any{"text": fmt.Sprint("m", i)})
	}
	var got []string
	cursor := ""
	for pages := 0; pages < 10; pages++ {
		p := env.Must(200, "GET", "/api/v1/conversations/"+id+"/messages?limit=3&cursor="+cursor, alice.Token, nil).Map(t)
		for _, m := range p["messages"].([]any) {
			got = append(got, m.(map[string]any)["text"].(string))
		}
		cursor, _ = p["next_cursor"].(string)
		if cursor == "" {
			break
		}
	}
	if strings.Join(got, ",") != "m0,m1,m2,m3,m4,m5,m6" {
		t.Fatalf("paged messages %v", got)
	}
	if r := env.Do("GET", "/api/v1/conversations/"+id+"/messages?cursor=abc", alice.Token, nil); r.Status != 400 {
		t.Fatalf("bad cursor: %d", r.Status)
	}

	// Newest first: a long conversation opens on what was said last, and
	// the cursor goes back in time.
	var pages []string
	cursor = ""
	for n := 0; n < 10; n++ {
		p := env.Must(200, "GET", "/api/v1/conversations/"+id+"/messages?order=newest&limit=3&cursor="+cursor, alice.Token, nil).Map(t)
		var texts []string
		for _, m := range p["messages"].([]any) {
			texts = append(texts, m.(map[string]any)["text"].(string))
		}
		pages = append(pages, strings.Join(texts, ","))
		cursor, _ = p["next_cursor"].(string)
		if cursor == "" {
			break
		}
	}
	if got := strings.Join(pages, " | "); got != "m6,m5,m4 | m3,m2,m1 | m0" {
		t.Fatalf("newest-first pages %q", got)
	}
	if r := env.Do("GET", "/api/v1/conversations/"+id+"/messages?order=latest", alice.Token, nil); r.Status != 400 || r.ErrorCode() != "invalid_order" {
		t.Fatalf("unknown order: %d %s", r.Status, r.Body)
	}
}

func TestSharingPresenterAndLeaving(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	alice := env.AddUser("Alice")
	bob := env.AddUser("Bob")
	conv := env.Must(201, "POST", "/api/v1/conversations", alice.Token, map[string]any{"kind": "sharing", "participants": []string{bob.ID}}).Map(t)
	id := conv["id"].(string)
	if conv["presenter_id"] != alice.ID {
		t.Fatalf("sharing starts with its creator presenting: %v", conv["presenter_id"])
	}
	c2 := env.Must(200, "PUT", "/api/v1/conversations/"+id+"/presenter", bob.Token, nil).Map(t)
	if c2["presenter_id"] != bob.ID {
		t.Fatalf("bob presents: %v", c2["presenter_id"])
	}
	env.Must(204, "DELETE", "/api/v1/conversations/"+id+"/participants/me", bob.Token, nil)
	if r := env.Do("GET", "/api/v1/conversations/"+id, bob.Token, nil); r.Status != 404 {
		t.Fatalf("bob left but still sees it: %d", r.Status)
	}
	c3 := env.Must(200, "GET", "/api/v1/conversations/"+id, alice.Token, nil).Map(t)
	if c3["presenter_id"] != nil {
		t.Fatalf("presenter left, presenter should be cleared: %v", c3["presenter_id"])
	}
}
