package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/convoice/convoice/storage"
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
	last := int64(0)
	lastID := c.Request().Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = c.QueryParam("last_event_id")
	}
	if lastID != "" {
		v, err := strconv.ParseInt(strings.TrimSpace(lastID), 10, 64)
		if err != nil || v < 0 {
			return badBody("Last-Event-ID", "Last-Event-ID: %q is not an event id of this stream", lastID)
		}
		last = v
	}
	sub := s.ctl.Hub().Subscribe(convID)
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

	write := func(ev storage.Event) error {
		if ev.Seq <= last {
			return nil // already sent (replay and live overlap)
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
		return nil
	}
	replay := func() error {
		for {
			evs, err := s.ctl.EventsAfter(ctx, convID, last, replayPage)
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
	if err := replay(); err != nil {
		return nil
	}
	hb := time.NewTicker(s.cfg.Heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hb.C:
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
					return nil
				}
				continue
			}
			for _, ev := range evs {
				if ev.Seq > last+1 {
					// A gap: an event committed by someone we were not
					// told about yet. Read the log rather than skip it.
					if err := replay(); err != nil {
						return nil
					}
				}
				if err := write(ev); err != nil {
					return nil
				}
			}
			if err := flush(); err != nil {
				return nil
			}
		}
	}
}
