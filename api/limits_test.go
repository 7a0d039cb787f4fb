package api_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/api/apitest"
)

// limitsEnv is convoice with short HTTP timeouts and small stream caps.
func limitsEnv(t *testing.T) *apitest.Env {
	return apitest.Start(t, apitest.Options{NoPBX: true, Limits: api.Limits{
		ReadTimeout: time.Second, IdleTimeout: time.Second,
		MaxStreamsPerPrincipal: 3, MaxStreamsPerAddress: 5, MaxStreams: 100}})
}

// closedWithin reports whether the server closes conn within d (reading
// whatever it sends meanwhile).
func closedWithin(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// A request whose body never comes, and an idle keep-alive connection,
// are closed by the server within their bounds, unauthenticated.
func TestLimits_SlowBodyAndIdleConnectionsAreClosed(t *testing.T) {
	env := limitsEnv(t)
	host := strings.TrimPrefix(env.URL, "http://")

	slow, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "POST /api/v1/join/abc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"display")
	if !closedWithin(slow, 4*time.Second) {
		t.Error("a request body that never comes kept its connection past the read timeout")
	}

	idle, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	line, err := bufio.NewReader(idle).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("healthz on a raw connection: %q %v", line, err)
	}
	if !closedWithin(idle, 4*time.Second) {
		t.Error("an idle keep-alive connection stayed open past the idle timeout")
	}
}

// Event streams are capped per person and per address (429
// too_many_streams); a closed stream frees its place; an open stream
// outlives the read timeout.
func TestLimits_EventStreamsAreCappedPerPersonAndAddress(t *testing.T) {
	env := limitsEnv(t)
	ann, bo := env.AddUser("Ann"), env.AddUser("Bo")
	convA := newConversation(t, env, ann, bo)
	path := "/api/v1/conversations/" + convA + "/events"

	var open []*apitest.Stream
	for range 3 {
		open = append(open, env.SubscribePath(path, ann.Token, apitest.StreamOptions{}))
	}
	r := env.Do("GET", path, ann.Token, nil)
	if r.Status != 429 || r.ErrorCode() != "too_many_streams" {
		t.Fatalf("Ann's 4th stream: %d %s", r.Status, r.Body)
	}
	// Bo, from the same address, has the address's last two places.
	open = append(open, env.SubscribePath(path, bo.Token, apitest.StreamOptions{}), env.SubscribePath(path, bo.Token, apitest.StreamOptions{}))
	if r := env.Do("GET", path, bo.Token, nil); r.Status != 429 || r.ErrorCode() != "too_many_streams" {
		t.Fatalf("the address's 6th stream: %d %s", r.Status, r.Body)
	}
	// The streams outlive the read timeout, and still carry events.
	time.Sleep(1500 * time.Millisecond)
	env.Must(201, "POST", "/api/v1/conversations/"+convA+"/messages", bo.Token, map[string]any{"text": "still there?"})
	for _, s := range open {
		s.Next(t, 5*time.Second, func(ev apitest.Event) bool { return ev.Type == "message.created" })
	}
	// Closing one frees its place.
	open[0].Close()
	env.WaitFor("a freed place", 5*time.Second, func() bool { return streamStatus(t, env, path, ann.Token) == 200 })
	for _, s := range open[1:] {
		s.Close()
	}
}

// streamStatus opens an event stream, reads its status and closes it.
func streamStatus(t *testing.T, env *apitest.Env, path, token string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A member's open event stream stops when they leave the conversation:
// the event that says so is the last one it delivers; the others' streams
// go on.
func TestStreams_EndWhenTheMemberLeaves(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	ann, bo := env.AddUser("Ann"), env.AddUser("Bo")
	conv := newConversation(t, env, ann, bo)
	path := "/api/v1/conversations/" + conv + "/events"
	boStream := env.SubscribePath(path, bo.Token, apitest.StreamOptions{})
	defer boStream.Close()
	annStream := env.SubscribePath(path, ann.Token, apitest.StreamOptions{})
	defer annStream.Close()

	env.Must(204, "DELETE", "/api/v1/conversations/"+conv+"/participants/me", bo.Token, nil)
	boStream.Next(t, 5*time.Second, func(ev apitest.Event) bool { return ev.Type == "participant.left" })
	env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", ann.Token, map[string]any{"text": "after Bo left"})
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev, open := <-boStream.Events:
			if !open {
				annStream.Next(t, 5*time.Second, func(ev apitest.Event) bool { return ev.Type == "message.created" })
				return
			}
			if ev.Type == "message.created" {
				t.Fatalf("Bo's stream delivered a message after he left: %s", ev.Raw)
			}
		case <-deadline:
			t.Fatal("Bo's stream stayed open after he left the conversation")
		}
	}
}
