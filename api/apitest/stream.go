package apitest

// Event streams (SSE) as a client reads them, each event checked against
// the OpenAPI document.

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Event is one SSE event.
type Event struct {
	ID, Type string
	Data     map[string]any
	// Raw is the event's data: line as sent (the whole JSON envelope), for
	// checks on the bytes themselves, such as that a number never reaches a
	// stream in any field.
	Raw []byte
}

// Stream is an open event stream. Events is closed when the stream ends
// (the server ended it, or Close).
type Stream struct {
	Events chan Event
	cancel context.CancelFunc
	done   chan struct{}
}

// Close ends the stream and waits for its reader to stop; the events read
// before stay in Events, so Rest after Close returns them.
func (s *Stream) Close() { s.cancel(); <-s.done }

// StreamOptions tune SubscribePath.
type StreamOptions struct {
	// LastEventID resumes the stream after this event ("": from the start).
	LastEventID string
	// SkipEventCheck turns off the check of every event against
	// api/openapi.yaml (Validator.CheckEvent), which is on by default so
	// that a stream test also proves the document's Event schemas.
	SkipEventCheck bool
}

// SubscribePath opens the event stream at path (a conversation's
// /api/v1/conversations/{id}/events, the guest's /api/v1/guest/events, …)
// with a bearer token, failing the test unless it answers 200. Unless
// opts.SkipEventCheck, every event is checked against the OpenAPI
// document as it arrives; a mismatch is reported with Errorf on the Env's
// test, and the event is delivered all the same.
func (e *Env) SubscribePath(path, token string, opts StreamOptions) *Stream {
	e.t.Helper()
	var v *Validator
	if !opts.SkipEventCheck {
		v = e.validator
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if opts.LastEventID != "" {
		req.Header.Set("Last-Event-ID", opts.LastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		e.t.Fatalf("subscribe %s: %v", path, err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		cancel()
		e.t.Fatalf("subscribe %s: status %d", path, resp.StatusCode)
	}
	s := &Stream{Events: make(chan Event, 10000), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		defer close(s.Events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev Event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				// A blank line ends an event; one without an event: field
				// (a heartbeat comment) is nothing to deliver.
				if ev.Type != "" {
					if v != nil {
						v.CheckEvent(e.t, ev.ID, ev.Type, ev.Raw)
					}
					s.Events <- ev
				}
				ev = Event{}
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.Type = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.Raw = []byte(line[6:])
				var env struct {
					Data map[string]any `json:"data"`
				}
				_ = json.Unmarshal(ev.Raw, &env)
				ev.Data = env.Data
			}
		}
	}()
	return s
}

// Subscribe opens a conversation's event stream from lastID ("" = start);
// every event is checked against the OpenAPI document.
func (e *Env) Subscribe(convID, token, lastID string) *Stream {
	e.t.Helper()
	return e.SubscribePath("/api/v1/conversations/"+convID+"/events", token,
		StreamOptions{LastEventID: lastID})
}

// Next waits for the next event matching match (nil: any), failing after d
// or when the stream ends first.
func (s *Stream) Next(t testing.TB, d time.Duration, match func(Event) bool) Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				t.Fatalf("event stream closed")
			}
			if match == nil || match(ev) {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no matching event within %s", d)
		}
	}
}

// Rest returns every event left until the stream ends (the server ends it,
// or it was closed), failing when it has not ended after d.
func (s *Stream) Rest(t testing.TB, d time.Duration) []Event {
	t.Helper()
	var out []Event
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-timer.C:
			t.Fatalf("the stream did not end within %s (got %d more events)", d, len(out))
		}
	}
}
