package api

// Issue 17's routes: a person's own event stream, call history and the
// CDR export, webhooks.

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/convoice/convoice/controller"
)

func (s *Server) mountNotify(v1, authed *echo.Group) {
	authed.GET("/me/events", s.myEvents)
	// A guest may read their own leg with their guest token: the route
	// takes either kind of token.
	v1.GET("/legs/:id", s.getLeg, s.authenticateUserOrGuest)
	authed.GET("/conversations/:id/audio/history", s.audioHistory)
	authed.GET("/cdr", s.cdrExport)
	authed.POST("/webhooks", s.createWebhook)
	authed.GET("/webhooks", s.listWebhooks)
	authed.GET("/webhooks/:id", s.getWebhook)
	authed.PATCH("/webhooks/:id", s.patchWebhook)
	authed.DELETE("/webhooks/:id", s.deleteWebhook)
}

// myEvents streams the caller's own events (invitations, conversations
// joined or left, their own calls) as SSE. Last-Event-ID (or
// ?last_event_id=) resumes after that id; without one the stream starts
// now: what is already there is in GET /invitations and /conversations.
func (s *Server) myEvents(c echo.Context) error {
	ctx := c.Request().Context()
	a := actorOf(c)
	key, err := s.ctl.MyStream(a)
	if err != nil {
		return err
	}
	// Read before subscribing: streamFrom subscribes, then replays the
	// store after last, so nothing committed in between is lost.
	newest, err := s.ctl.MyLastEventID(ctx, a)
	if err != nil {
		return err
	}
	last := newest
	if c.Request().Header.Get("Last-Event-ID") != "" || c.QueryParam("last_event_id") != "" {
		if last, err = lastEventID(c); err != nil {
			return err
		}
		// As on the conversation streams (resumeAt): an id this stream
		// never sent is refused rather than waited for.
		if last > newest {
			return badBody("Last-Event-ID", "Last-Event-ID: %d is beyond this stream's newest event (%d); reconnect without it", last, newest)
		}
	}
	return s.streamFrom(c, "user:"+a.UserID, key, func(ctx context.Context, after int64, n int) ([]controller.Event, error) {
		return s.ctl.MyEventsAfter(ctx, a, after, n)
	}, last, nil)
}

// authenticateUserOrGuest lets a guest's session token through as a guest
// and everything else to the user authentication.
func (s *Server) authenticateUserOrGuest(next echo.HandlerFunc) echo.HandlerFunc {
	user := s.authenticate(next)
	return func(c echo.Context) error {
		r := c.Request()
		token := bearer(r)
		if token == "" {
			if ck, err := r.Cookie(guestCookie); err == nil && ck.Value != "" {
				if _, uerr := r.Cookie(sessionCookie); uerr != nil {
					token = ck.Value
				}
			}
		}
		if token != "" {
			if g, err := s.ctl.AuthenticateGuest(r.Context(), token); err == nil {
				c.Set("guest", g)
				return next(c)
			}
		}
		return user(c)
	}
}

func (s *Server) getLeg(c echo.Context) error {
	rec, err := s.ctl.LegRecord(c.Request().Context(), actorOf(c), guestOf(c).GuestID, c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, rec)
}

func (s *Server) audioHistory(c echo.Context) error {
	limit := 0
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return badBody("limit", "limit: must be a whole number from 1 to 100")
		}
		limit = n
	}
	p, err := s.ctl.AudioHistory(c.Request().Context(), actorOf(c), c.Param("id"), c.QueryParam("cursor"), limit)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, p)
}

// cdrColumns are the CSV export's columns, in order.
var cdrColumns = []string{"leg_id", "conference_id", "conversation_id", "user_id", "guest_id", "display_name", "number",
	"state", "cause", "cause_text", "end_reason", "ended_by", "dialed_at", "ringing_at", "answered_at", "ended_at", "duration_s"}

func cdrRow(r controller.LegRecord) []string {
	t := func(v *time.Time) string {
		if v == nil {
			return ""
		}
		return v.UTC().Format(time.RFC3339)
	}
	p := func(v *string) string {
		if v == nil {
			return ""
		}
		return *v
	}
	return []string{r.ID, r.ConferenceID, r.ConversationID, p(r.UserID), p(r.GuestID), cellText(r.DisplayName), r.Number,
		r.State, strconv.Itoa(r.Cause), cellText(r.CauseText), cellText(r.EndReason), r.EndedBy,
		r.DialedAt.UTC().Format(time.RFC3339), t(r.RingingAt), t(r.AnsweredAt), t(r.EndedAt), strconv.FormatInt(r.DurationS, 10)}
}

// cellText keeps free text a spreadsheet would take for a formula (a name
// starting with "=", "+", "-", "@") as text, with a leading apostrophe.
// Numbers are E.164 and stay as they are.
func cellText(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// cdrExport streams the call detail records of legs dialed in [from, to):
// ?format=json (default: {"records":[…]}), jsonl (one record a line) or
// csv (a header row, RFC 4180, UTC times). from defaults to 30 days before
// to, to to now. Errors found before the first record are ordinary JSON
// errors; a failure halfway ends the stream early and is logged.
func (s *Server) cdrExport(c echo.Context) error {
	now := time.Now().UTC()
	parse := func(name string, def time.Time) (time.Time, error) {
		v := c.QueryParam(name)
		if v == "" {
			return def, nil
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return t, badBody(name, "%s: %q is not an RFC 3339 time (like 2025-01-31T09:00:00Z)", name, v)
		}
		return t.UTC(), nil
	}
	to, err := parse("to", now)
	if err != nil {
		return err
	}
	from, err := parse("from", to.Add(-30*24*time.Hour))
	if err != nil {
		return err
	}
	format := c.QueryParam("format")
	if format == "" {
		format = "json"
	}
	var ctype, ext string
	switch format {
	case "json":
		ctype, ext = echo.MIMEApplicationJSON, "json"
	case "jsonl":
		ctype, ext = "application/x-ndjson", "jsonl"
	case "csv":
		ctype, ext = "text/csv; charset=utf-8", "csv"
	default:
		return badBody("format", "format: one of json, jsonl, csv")
	}
	w := c.Response()
	bw := bufio.NewWriterSize(w, 32<<10)
	cw := csv.NewWriter(bw)
	cw.UseCRLF = true // RFC 4180
	started, n := false, 0
	start := func() {
		started = true
		w.Header().Set(echo.HeaderContentType, ctype)
		w.Header().Set("Content-Disposition", `attachment; filename="convoice-cdr.`+ext+`"`)
		w.WriteHeader(http.StatusOK)
		switch format {
		case "json":
			bw.WriteString(`{"records":[`)
		case "csv":
			_ = cw.Write(cdrColumns)
		}
	}
	err = s.ctl.ExportCDR(c.Request().Context(), actorOf(c), from, to, func(r controller.LegRecord) error {
		if !started {
			start()
		}
		n++
		switch format {
		case "csv":
			if err := cw.Write(cdrRow(r)); err != nil {
				return err
			}
			if n%200 == 0 {
				cw.Flush()
			}
			return cw.Error()
		default:
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if format == "json" && n > 1 {
				bw.WriteByte(',')
			}
			bw.Write(b)
			if format == "jsonl" {
				bw.WriteByte('\n')
			}
			return nil
		}
	})
	if err != nil && !started {
		return err
	}
	if err != nil {
		s.log.Error("CDR export ended early", "err", err)
		_ = bw.Flush()
		return nil
	}
	if !started {
		start()
	}
	if format == "json" {
		bw.WriteString("]}")
	}
	cw.Flush()
	return bw.Flush()
}

func (s *Server) createWebhook(c echo.Context) error {
	var req controller.WebhookInput
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	e, err := s.ctl.CreateWebhook(c.Request().Context(), actorOf(c), req)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, e)
}

func (s *Server) listWebhooks(c echo.Context) error {
	es, err := s.ctl.ListWebhooks(c.Request().Context(), actorOf(c))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, map[string]any{"webhooks": es})
}

func (s *Server) getWebhook(c echo.Context) error {
	e, err := s.ctl.GetWebhook(c.Request().Context(), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, e)
}

// patchWebhook is PATCH /api/v1/webhooks/{id} {"enabled": true|false}:
// an admin re-enables an endpoint convoice disabled (its undelivered
// deliveries are retried at once) or pauses one by hand.
func (s *Server) patchWebhook(c echo.Context) error {
	var req controller.WebhookChange
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	e, err := s.ctl.SetWebhookEnabled(c.Request().Context(), actorOf(c), c.Param("id"), req)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, e)
}

func (s *Server) deleteWebhook(c echo.Context) error {
	if err := s.ctl.DeleteWebhook(c.Request().Context(), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
