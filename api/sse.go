package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/convoice/convoice/controller"
)

// streamEvent is the JSON of one event on the stream: the envelope, with
// the payload as stored.
type streamEvent struct {
	ID             string          `json:"id"`
	Type           string          `json:"type"`
	ConversationID string          `json:"conversation_id"`
	At             time.Time       `json:"at"`
	Data           json.RawMessage `json:"data"`
}

// replayPage is how many stored events are read per query while catching up.
const replayPage = 500

// events streams a conversation's events as Server-Sent Events. The client
// resumes with Last-Event-ID (the header EventSource sends on reconnect, or
// ?last_event_id= for the first connect): it gets every event after that id
// from the stored log, then the live ones — subscribed before the replay,
// so nothing falls between the two, and deduplicated by seq.
func (s *Server) events(c echo.Context) error {
	ctx := c.Request().Context()
	a := actorOf(c)
	convID := c.Param("id")
	if err := s.ctl.CheckMember(ctx, a, convID); err != nil {
		return err
	}
	last, err := s.resumeAt(c, convID)
	if err != nil {
		return err
	}
	return s.stream(c, "user:"+a.UserID, convID, last, &memberStream{s: s, actor: a, convID: convID})
}

// memberStream keeps a member's stream to what they may still see: it
// ends with the event that says they left the conversation, and a
// heartbeat that finds them no longer a member (removed some other way)
// closes it — at most one heartbeat after the fact.
type memberStream struct {
	s      *Server
	actor  controller.Actor
	convID string
}

func (m *memberStream) Filter(_ context.Context, ev controller.Event) (controller.Event, bool, bool) {
	if ev.Type != "participant.left" || m.actor.UserID == "" {
		return ev, true, false
	}
	var who struct {
		UserID string `json:"user_id"`
	}
	_ = json.Unmarshal([]byte(ev.Data), &who)
	return ev, true, who.UserID == m.actor.UserID
}

func (m *memberStream) Check(ctx context.Context) error {
	return m.s.ctl.CheckMember(ctx, m.actor, m.convID)
}

// resumeAt is where a client resumes convID's stream (lastEventID); an id
// beyond the stream's newest event is refused with 400 rather than
// accepted into a stream that would stay silent until the log caught up
// with an id it never sent (a client mixing up streams, or a database
// restored from a backup): the client starts again without it.
func (s *Server) resumeAt(c echo.Context, convID string) (int64, error) {
	last, err := lastEventID(c)
	if err != nil || last == 0 {
		return last, err
	}
	newest, err := s.ctl.LastEventSeq(c.Request().Context(), convID)
	if err != nil {
		return 0, err
	}
	if last > newest {
		return 0, badBody("Last-Event-ID", "Last-Event-ID: %d is beyond this stream's newest event (%d); reconnect without it to start from the beginning", last, newest)
	}
	return last, nil
}

// lastEventID reads where a client resumes: the Last-Event-ID header, else
// ?last_event_id=, else 0 (the start).
func lastEventID(c echo.Context) (int64, error) {
	lastID := c.Request().Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = c.QueryParam("last_event_id")
	}
	if lastID == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(lastID), 10, 64)
	if err != nil || v < 0 {
		return 0, badBody("Last-Event-ID", "Last-Event-ID: %q is not an event id of this stream", lastID)
	}
	return v, nil
}

// streamFilter decides what of a conversation's events one stream carries
// (a guest's stream: controller.GuestStream). Filter returns the event as
// it is to be sent, keep=false to leave it out, end=true to close the
// stream after it; Check is polled at every heartbeat and closes the
// stream when it fails.
type streamFilter interface {
	Filter(ctx context.Context, ev controller.Event) (out controller.Event, keep, end bool)
	Check(ctx context.Context) error
}

// errStreamEnd stops a stream after its last event.
var errStreamEnd = errors.New("end of stream")

// stream sends the events of convID after seq last as SSE until the client
// goes (or the filter ends it), passing each through f when f is not nil.
// who (the principal) and the client's address are counted against the
// stream caps (Limits) while it is open.
func (s *Server) stream(c echo.Context, who, convID string, last int64, f streamFilter) error {
	return s.streamFrom(c, who, convID, func(ctx context.Context, after int64, n int) ([]controller.Event, error) {
		return s.ctl.EventsAfter(ctx, convID, after, n)
	}, last, f)
}

// streamFrom is stream for any stored stream: key is its hub key, read
// its stored events after a seq (a conversation's log, or a person's own
// stream).
func (s *Server) streamFrom(c echo.Context, who, key string, read func(ctx context.Context, after int64, n int) ([]controller.Event, error),
	last int64, f streamFilter) error {
	ctx := c.Request().Context()
	release, full := s.streams.admit(who, c.RealIP())
	if full != "" {
		s.streamsRefused.Inc()
		return &controller.Error{Kind: controller.KindRateLimited, Code: "too_many_streams", Message: full}
	}
	defer release()
	// The request is read: a stream may stay open for hours, so the
	// server's read deadline (a bound on slow request bodies) is lifted.
	_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Time{})
	sub := s.ctl.Hub().Subscribe(key)
	defer sub.Close()

	w := c.Response()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 16<<10)
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		w.Flush()
		return nil
	}
	// Tell EventSource how fast to come back after a drop.
	fmt.Fprintf(bw, "retry: 1000\n\n")

	write := func(ev controller.Event) error {
		if ev.Seq <= last {
			return nil // already sent (replay and live overlap)
		}
		end := false
		if f != nil {
			out, keep, e := f.Filter(ctx, ev)
			if !keep {
				last = ev.Seq // passed over, not a gap
				return nil
			}
			ev, end = out, e
		}
		b, err := json.Marshal(streamEvent{ID: strconv.FormatInt(ev.Seq, 10), Type: ev.Type,
			ConversationID: ev.ConversationID, At: ev.CreatedAt, Data: json.RawMessage(ev.Data)})
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(bw, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, b); err != nil {
			return err
		}
		last = ev.Seq
		if end {
			return errStreamEnd
		}
		return nil
	}
	replay := func() error {
		for {
			evs, err := read(ctx, last, replayPage)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if err := write(ev); err != nil {
					return err
				}
			}
			if len(evs) < replayPage {
				return flush()
			}
		}
	}
	// done ends the handler: after the filter's last event, flush it first.
	done := func(err error) error {
		if errors.Is(err, errStreamEnd) {
			_ = flush()
		}
		return nil
	}
	if err := replay(); err != nil {
		return done(err)
	}
	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	// The stream's sign-in is checked again whenever this process revokes
	// something, and every PrincipalRecheck (revocations made by another
	// replica, expiries): a revoked token, an ended session or a
	// deactivated person closes the stream.
	signedIn := s.stillSignedIn(c)
	var revoked <-chan struct{}
	var recheck <-chan time.Time
	if signedIn != nil {
		revoked = s.ctl.Revoked()
		rt := time.NewTicker(s.cfg.PrincipalRecheck)
		defer rt.Stop()
		recheck = rt.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-revoked:
			revoked = s.ctl.Revoked()
			if signedIn(ctx) != nil {
				return nil
			}
		case <-recheck:
			if signedIn(ctx) != nil {
				return nil
			}
		case <-hb.C:
			if f != nil {
				if err := f.Check(ctx); err != nil {
					return nil
				}
			}
			if _, err := fmt.Fprintf(bw, ": keep-alive\n\n"); err != nil {
				return nil
			}
			if err := flush(); err != nil {
				return nil
			}
		case <-sub.Wake:
			evs, lagged := sub.Take()
			if lagged {
				if err := replay(); err != nil {
					return done(err)
				}
				continue
			}
			for _, ev := range evs {
				if ev.Seq > last+1 {
					// A gap: an event committed by someone we were not
					// told about yet. Read the log rather than skip it.
					if err := replay(); err != nil {
						return done(err)
					}
				}
				if err := write(ev); err != nil {
					return done(err)
				}
			}
			if err := flush(); err != nil {
				return nil
			}
			for _, ev := range evs {
				s.ctl.ObserveEventToStream(time.Since(ev.CreatedAt))
			}
		}
	}
}
