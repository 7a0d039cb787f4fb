package api

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/convoice/convoice/controller"
)

// requestBodies are the request types of every route that reads a body:
// one constructor per type, so each fuzz input is decoded into a fresh
// value of each. A new route with a body adds its type here.
var requestBodies = map[string]func() any{
	"session":      func() any { return new(sessionRequest) },
	"user":         func() any { return new(controller.NewUser) },
	"token":        func() any { return new(tokenRequest) },
	"numbers":      func() any { return new(numbersRequest) },
	"user_ids":     func() any { return new(userIDsRequest) },
	"conversation": func() any { return new(controller.NewConversation) },
	"text":         func() any { return new(textRequest) },
	"join":         func() any { return new(joinRequest) },
	"accept":       func() any { return new(acceptRequest) },
	"redirect":     func() any { return new(redirectRequest) },
	"empty":        func() any { return new(struct{}) },
	"join_link":    func() any { return new(controller.NewJoinLink) },
	"guest_join":   func() any { return new(controller.GuestJoin) },
	"guest_dial":   func() any { return new(guestDialRequest) },
}

// FuzzRequestBodies decodes arbitrary bodies, with arbitrary Content-Types,
// into every request type with the API's own strict decoder (decodeJSON).
// It must never panic, and every refusal must be a 400 (KindInvalid) with a
// machine code: a body can never make the API answer 500.
func FuzzRequestBodies(f *testing.F) {
	for _, seed := range []struct{ body, ct string }{
		{`{"published":"work"}`, "application/json"},
		{`{"number":"+1 202 555 0101"}`, "application/json; charset=utf-8"},
		{`{"display_name":"Ann","email":"ann@example.com","numbers":[{"label":"work","number":"+12025550101","default":true}]}`, "application/json"},
		{`{"kind":"im","subject":"s","participants":["a","b"]}`, "application/json"},
		{`{"user_ids":["x"]}`, ""},
		{`{"numbers":[{"label":"work","number":12}]}`, "application/json"},
		{`{"text":"hi"} {"text":"again"}`, "application/json"},
		{`{"token":"t","extra":1}`, "application/json"},
		{`{"name":"guest","number":"+12025550101"}`, "application/json"},
		{`{"expires_in_minutes":60,"max_uses":3}`, "application/json"},
		{`[]`, "application/json"},
		{`null`, "application/json"},
		{``, "text/plain"},
		{`{"published":`, "application/json"},
		{"{\"text\":\"\xff\xfe\"}", "application/json"},
		{`{"numbers":[` + strings.Repeat(`{},`, 50) + `{}]}`, "application/json"},
		{`{"a":` + strings.Repeat(`[`, 5000) + strings.Repeat(`]`, 5000) + `}`, "application/json"},
	} {
		f.Add([]byte(seed.body), seed.ct)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		req := httptest.NewRequest("POST", "/api/v1/x", nil)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for name, mk := range requestBodies {
			err := decodeJSON(req, body, mk())
			if err == nil {
				continue
			}
			ce, ok := controller.AsError(err)
			if !ok || ce.Kind != controller.KindInvalid || ce.Code == "" || ce.Message == "" {
				t.Fatalf("%s: %q (Content-Type %q) gave %T %v, want a 400 with a code", name, body, contentType, err, err)
			}
			if st, _ := errorStatus(err); st != 400 {
				t.Fatalf("%s: %q answers %d", name, body, st)
			}
		}
	})
}
