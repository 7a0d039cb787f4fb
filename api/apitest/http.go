package apitest

// The HTTP side of an Env: requests, their answers, test users and the
// logs.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/controller"
)

// Response is an HTTP answer with its body read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v (failing the test on error).
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %q: %v", r.Body, err)
	}
}

// Map decodes the body as a JSON object.
func (r Response) Map(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.JSON(t, &m)
	return m
}

// ErrorCode returns error.code of an error body.
func (r Response) ErrorCode() string {
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &eb)
	return eb.Error.Code
}

// Do sends a request; body is JSON-encoded unless it is a string or []byte.
func (e *Env) Do(method, path, token string, body any, headers ...string) Response {
	e.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("encode: %v", err)
		}
		raw = j
	}
	req, err := http.NewRequest(method, e.URL+path, bytes.NewReader(raw))
	if err != nil {
		e.t.Fatalf("request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	e.validator.Check(e.t, req, raw, resp.StatusCode, resp.Header, b)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Must is Do that fails the test unless the status is want.
func (e *Env) Must(want int, method, path, token string, body any, headers ...string) Response {
	e.t.Helper()
	r := e.Do(method, path, token, body, headers...)
	if r.Status != want {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.Status, want, r.Body)
	}
	return r
}

// User is a test user.
type User struct {
	ID, Token, Name string
}

// AddUser creates a user through the admin API and issues a token.
func (e *Env) AddUser(name string, numbers ...controller.NumberInput) User {
	e.t.Helper()
	email := strings.ToLower(strings.ReplaceAll(name, " ", ".")) + fmt.Sprintf(".%d@example.com", time.Now().UnixNano())
	r := e.Must(201, "POST", "/api/v1/users", AdminToken, map[string]any{"display_name": name, "email": email, "numbers": numbers})
	var u struct{ ID string }
	r.JSON(e.t, &u)
	tr := e.Must(201, "POST", "/api/v1/users/"+u.ID+"/tokens", AdminToken, nil)
	var tok struct{ Token string }
	tr.JSON(e.t, &tok)
	return User{ID: u.ID, Token: tok.Token, Name: name}
}

// LogBuffer collects the log lines of an Env (Options.Logs) safely from
// every goroutine, so a test can search them afterwards.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
