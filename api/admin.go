package api

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/convoice/convoice/controller"
)

// mountAdmin registers the audit routes (issue 6): admins only.
func (s *Server) mountAdmin(authed *echo.Group) {
	authed.GET("/audit", s.auditLog)
	authed.GET("/audit/export", s.auditExport)
}

// remoteOf is the address a request's connection came from: the audit
// log's remote for auth failures (forwarding headers are the client's word;
// auditAuthFailure keeps what they claim in the detail).
func remoteOf(c echo.Context) string {
	peer, _, err := net.SplitHostPort(c.Request().RemoteAddr)
	if err != nil {
		return c.Request().RemoteAddr
	}
	return peer
}

// auditAuthFailure records a failed authentication of this request: the
// peer address, the route, why, whose session it was when the token was
// good but the request was not (a missing CSRF token; a zero Actor
// otherwise), and the client address the forwarding headers claim when it
// differs.
func (s *Server) auditAuthFailure(c echo.Context, a controller.Actor, reason string) {
	r := c.Request()
	peer := remoteOf(c)
	if a.UserID != "" {
		reason += " (a session of user " + a.UserID + ")"
	}
	if fwd := c.RealIP(); fwd != "" && fwd != peer {
		reason += "; forwarded for " + fwd
	}
	s.ctl.AuditAuthFailure(r.Context(), peer, r.Method+" "+c.Path(), reason)
}

// auditQuery reads the audit filters common to both routes.
func auditQuery(c echo.Context) (controller.AuditQuery, error) {
	q := controller.AuditQuery{
		ConversationID: c.QueryParam("conversation_id"),
		Actor:          c.QueryParam("actor"),
		Action:         c.QueryParam("action"),
		Cursor:         c.QueryParam("cursor"),
	}
	if v := c.QueryParam("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return q, badBody("since", "since: %q is not an RFC 3339 time (like 2025-01-31T09:00:00Z)", v)
		}
		q.Since = t
	}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return q, badBody("limit", "limit: must be a whole number from 1 to 1000")
		}
		q.Limit = n
	}
	return q, nil
}

func (s *Server) auditLog(c echo.Context) error {
	q, err := auditQuery(c)
	if err != nil {
		return err
	}
	p, err := s.ctl.AuditLog(c.Request().Context(), actorOf(c), q)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, p)
}

// auditExport streams the matching entries as JSON lines, oldest first.
// Errors found before the first line are ordinary JSON errors; a failure
// halfway ends the stream early (the client sees a short file, and the
// failure is logged).
func (s *Server) auditExport(c echo.Context) error {
	q, err := auditQuery(c)
	if err != nil {
		return err
	}
	if q.Cursor != "" {
		return badBody("cursor", "cursor: the export has no pages; filter with since instead")
	}
	if !actorOf(c).Admin {
		return &controller.Error{Kind: controller.KindForbidden, Code: "admin_only", Message: "this needs the admin role"}
	}
	w := c.Response()
	started := false
	enc := json.NewEncoder(w)
	err = s.ctl.ExportAudit(c.Request().Context(), actorOf(c), q, func(r controller.AuditRecord) error {
		if !started {
			started = true
			w.Header().Set(echo.HeaderContentType, "application/x-ndjson")
			w.Header().Set("Content-Disposition", `attachment; filename="convoice-audit.jsonl"`)
			w.WriteHeader(http.StatusOK)
		}
		return enc.Encode(r)
	})
	if err != nil && started {
		s.log.Error("audit export ended early", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	if !started {
		w.Header().Set(echo.HeaderContentType, "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	return nil
}
