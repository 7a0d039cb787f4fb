package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/convoice/convoice/controller"
)

type userIDsRequest struct {
	UserIDs []string `json:"user_ids"`
}

type numbersRequest struct {
	Numbers []controller.NumberInput `json:"numbers"`
}

type textRequest struct {
	Text string `json:"text"`
}

type acceptRequest struct {
	Published *string `json:"published,omitempty"`
}

// joinRequest is POST …/audio's body. Its fields are pointers so that a
// field given empty ({"number": ""}) is told apart from a field left out:
// left out picks the default published number, given empty is a mistake
// (an emptied form field) and is refused naming the field, never dialed
// as the default.
type joinRequest struct {
	Published *string `json:"published,omitempty"`
	Number    *string `json:"number,omitempty"`
}

// given returns a field's value, refusing one given but blank.
func given(field string, v *string) (string, error) {
	if v == nil {
		return "", nil
	}
	if strings.TrimSpace(*v) == "" {
		if field == "number" {
			return "", badBody(field, "number: empty; type a phone number, or leave the field out to be called on your default number")
		}
		return "", badBody(field, "%s: empty; pick one of your numbers, or leave the field out to be called on your default number", field)
	}
	return *v, nil
}

type redirectRequest struct {
	Number string `json:"number"`
}

type tokenRequest struct {
	Name string `json:"name,omitempty"`
	// ExpiresInS: the token stops working this many seconds after issue
	// (left out: never).
	ExpiresInS int64 `json:"expires_in_s,omitempty"`
}

func (s *Server) createUser(c echo.Context) error {
	var req controller.NewUser
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	u, err := s.ctl.CreateUser(c.Request().Context(), actorOf(c), req)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, u)
}

func (s *Server) listUsers(c echo.Context) error {
	us, err := s.ctl.ListUsers(c.Request().Context(), actorOf(c))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, map[string]any{"users": us})
}

func (s *Server) issueToken(c echo.Context) error {
	var req tokenRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	t, err := s.ctl.IssueTokenSpec(c.Request().Context(), actorOf(c), c.Param("id"),
		controller.TokenSpec{Name: req.Name, ExpiresIn: time.Duration(req.ExpiresInS) * time.Second})
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, t)
}

func (s *Server) revokeToken(c echo.Context) error {
	if err := s.ctl.RevokeTokenAndTell(c.Request().Context(), actorOf(c), c.Param("id"), c.Param("token_id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) me(c echo.Context) error {
	u, err := s.ctl.Me(c.Request().Context(), actorOf(c))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, u)
}

func (s *Server) setNumbers(c echo.Context) error {
	var req numbersRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	u, err := s.ctl.SetNumbers(c.Request().Context(), actorOf(c), req.Numbers)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, u)
}

func (s *Server) setContacts(c echo.Context) error {
	var req userIDsRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	u, err := s.ctl.SetContacts(c.Request().Context(), actorOf(c), req.UserIDs)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, u)
}

func (s *Server) listConversations(c echo.Context) error {
	cs, err := s.ctl.ListConversations(c.Request().Context(), actorOf(c))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, map[string]any{"conversations": cs})
}

func (s *Server) createConversation(c echo.Context) error {
	var req controller.NewConversation
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	v, err := s.ctl.CreateConversation(c.Request().Context(), actorOf(c), req)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, v)
}

func (s *Server) getConversation(c echo.Context) error {
	v, err := s.ctl.GetConversation(c.Request().Context(), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, v)
}

func (s *Server) addParticipants(c echo.Context) error {
	var req userIDsRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	v, err := s.ctl.AddParticipants(c.Request().Context(), actorOf(c), c.Param("id"), req.UserIDs)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, v)
}

func (s *Server) leaveConversation(c echo.Context) error {
	if err := s.ctl.Leave(c.Request().Context(), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) startPresenting(c echo.Context) error {
	v, err := s.ctl.SetPresenting(c.Request().Context(), actorOf(c), c.Param("id"), true)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, v)
}

func (s *Server) stopPresenting(c echo.Context) error {
	v, err := s.ctl.SetPresenting(c.Request().Context(), actorOf(c), c.Param("id"), false)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, v)
}

// messageQuery reads a message page's cursor, limit and order.
func messageQuery(c echo.Context) (controller.MessageQuery, error) {
	q := controller.MessageQuery{Cursor: c.QueryParam("cursor")}
	if l := c.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return q, badBody("limit", "limit: must be a whole number from 1 to 500")
		}
		q.Limit = n
	}
	switch o := c.QueryParam("order"); o {
	case "", "oldest":
	case "newest":
		q.Newest = true
	default:
		return q, badBody("order", "order: %q is not oldest or newest", o)
	}
	return q, nil
}

func (s *Server) listMessages(c echo.Context) error {
	q, err := messageQuery(c)
	if err != nil {
		return err
	}
	p, err := s.ctl.ListMessages(c.Request().Context(), actorOf(c), c.Param("id"), q)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, p)
}

func (s *Server) postMessage(c echo.Context) error {
	var req textRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	m, err := s.ctl.PostMessage(c.Request().Context(), actorOf(c), c.Param("id"), req.Text)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, m)
}

// idempotent runs a dial handler at most once per Idempotency-Key: the
// answer (success or client error) is stored and replayed for a repeat.
func (s *Server) idempotent(c echo.Context, status int, do func(body []byte) (any, error)) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	a := actorOf(c)
	scope := a.UserID
	if scope == "" {
		scope = "admin"
	}
	req := append([]byte(c.Request().Method+" "+c.Request().URL.Path+"\n"), body...)
	ans, err := s.ctl.Idempotent(c.Request().Context(), scope, c.Request().Header.Get("Idempotency-Key"), req, func() controller.Answer {
		v, err := do(body)
		if err != nil {
			st, eb := errorStatus(err)
			if st >= 500 {
				s.log.Warn("dial request failed", "route", c.Path(), "status", st, "err", err)
			}
			b, _ := json.Marshal(eb)
			return controller.Answer{Status: st, Body: b}
		}
		b, _ := json.Marshal(v)
		return controller.Answer{Status: status, Body: b}
	})
	if err != nil {
		return err
	}
	return c.JSONBlob(ans.Status, ans.Body)
}

func (s *Server) joinAudio(c echo.Context) error {
	return s.idempotent(c, http.StatusCreated, func(body []byte) (any, error) {
		var req joinRequest
		if err := decodeJSON(c.Request(), body, &req); err != nil {
			return nil, err
		}
		published, err := given("published", req.Published)
		if err != nil {
			return nil, err
		}
		number, err := given("number", req.Number)
		if err != nil {
			return nil, err
		}
		return s.ctl.JoinAudio(c.Request().Context(), actorOf(c), c.Param("id"), controller.JoinRequest{Published: published, Number: number})
	})
}

func (s *Server) getAudio(c echo.Context) error {
	v, err := s.ctl.GetAudio(c.Request().Context(), actorOf(c), c.Param("id"), c.QueryParam("last") == "true")
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, v)
}

func (s *Server) endAudio(c echo.Context) error {
	if err := s.ctl.EndAudio(c.Request().Context(), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) inviteSomeone(c echo.Context) error {
	var req userIDsRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	invs, err := s.ctl.InviteSomeone(c.Request().Context(), actorOf(c), c.Param("id"), req.UserIDs)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, map[string]any{"invitations": invs})
}

func (s *Server) myInvitations(c echo.Context) error {
	invs, err := s.ctl.MyInvitations(c.Request().Context(), actorOf(c))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, map[string]any{"invitations": invs})
}

func (s *Server) acceptInvitation(c echo.Context) error {
	return s.idempotent(c, http.StatusOK, func(body []byte) (any, error) {
		var req acceptRequest
		if err := decodeJSON(c.Request(), body, &req); err != nil {
			return nil, err
		}
		published, err := given("published", req.Published)
		if err != nil {
			return nil, err
		}
		return s.ctl.AcceptInvitation(c.Request().Context(), actorOf(c), c.Param("id"), published)
	})
}

func (s *Server) declineInvitation(c echo.Context) error {
	var req struct{}
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	r, err := s.ctl.DeclineInvitation(c.Request().Context(), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, r)
}

func (s *Server) redirectInvitation(c echo.Context) error {
	return s.idempotent(c, http.StatusOK, func(body []byte) (any, error) {
		var req redirectRequest
		if err := decodeJSON(c.Request(), body, &req); err != nil {
			return nil, err
		}
		return s.ctl.RedirectInvitation(c.Request().Context(), actorOf(c), c.Param("id"), req.Number)
	})
}

func (s *Server) muteLeg(c echo.Context) error   { return s.setMute(c, true) }
func (s *Server) unmuteLeg(c echo.Context) error { return s.setMute(c, false) }

func (s *Server) setMute(c echo.Context, muted bool) error {
	l, err := s.ctl.SetLegMute(c.Request().Context(), actorOf(c), c.Param("id"), muted)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, l)
}

func (s *Server) hangupLeg(c echo.Context) error {
	if err := s.ctl.HangupLeg(c.Request().Context(), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
