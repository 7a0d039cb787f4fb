package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/convoice/convoice/controller"
)

// sessionCookie holds a user's API token for the web UI. HttpOnly so page
// scripts (and anything injected into them) cannot read it; SameSite=Lax
// plus the CSRF header below for state-changing requests.
const sessionCookie = "convoice_session"

// csrfHeader must carry csrfToken(session) on every state-changing request
// authenticated by the cookie. Bearer-token clients are unaffected: a
// cross-site page can make the browser send a cookie, never a header.
const csrfHeader = "X-CSRF-Token"

// csrfToken derives the CSRF token from the session token: only someone who
// knows the session (the page, through GET /session) can compute it, and
// nothing needs storing.
func csrfToken(session string) string {
	h := sha256.Sum256([]byte("convoice-csrf\x00" + session))
	return hex.EncodeToString(h[:16])
}

type actorKey struct{}

func actorOf(c echo.Context) controller.Actor {
	a, _ := c.Get("actor").(controller.Actor)
	return a
}

// authenticate resolves the bearer token or the session cookie (an API
// token from a sign-in link, or a web session id). A client address with
// too many recent failures is refused first (429, Retry-After), whatever
// it presents.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if err := s.throttleAuth(c); err != nil {
			return err
		}
		token, fromCookie := bearer(r), false
		if token == "" {
			if ck, err := r.Cookie(sessionCookie); err == nil && ck.Value != "" {
				token, fromCookie = ck.Value, true
			}
		}
		a, err := s.resolve(r.Context(), token, fromCookie)
		if err != nil {
			if ce, ok := controller.AsError(err); ok && ce.Kind == controller.KindUnauthorized {
				if ok, held := s.authLog.allow(c.RealIP(), time.Now()); ok {
					s.log.Info("authentication failed", "route", c.Path(), "remote", c.RealIP(), "reason", ce.Message, "unlogged_since_last", held)
				}
				s.auditAuthFailure(c, controller.Actor{}, ce.Message)
				if token != "" {
					s.ctl.AuthFailed(r.Context(), c.RealIP())
				}
				if fromCookie {
					s.clearCookie(c) // an ended session: the page signs in again
				}
			}
			return err
		}
		if fromCookie && r.Method != http.MethodGet && r.Method != http.MethodHead {
			got := r.Header.Get(csrfHeader)
			if subtle.ConstantTimeCompare([]byte(got), []byte(csrfToken(token))) != 1 {
				s.auditAuthFailure(c, a, "missing or wrong CSRF token")
				return &controller.Error{Kind: controller.KindForbidden, Code: "csrf",
					Message: "missing or wrong " + csrfHeader + " header (needed with cookie sign-in)"}
			}
		}
		c.Set("actor", a)
		c.Set("token", token)
		c.Set("from_cookie", fromCookie)
		return next(c)
	}
}

// resolve turns a credential into its actor: a web session id (cookie
// only), else an API token or the admin token.
func (s *Server) resolve(ctx context.Context, token string, fromCookie bool) (controller.Actor, error) {
	if fromCookie && strings.HasPrefix(token, controller.SessionPrefix) {
		return s.ctl.AuthenticateSession(ctx, token)
	}
	return s.ctl.Authenticate(ctx, token, s.cfg.AdminTokenHash)
}

// stillSignedIn re-checks the credential a request was authenticated with
// (long-lived event streams: a revoked token, an ended session or a
// deactivated person closes them). nil: the request had none to check.
func (s *Server) stillSignedIn(c echo.Context) func(ctx context.Context) error {
	token, _ := c.Get("token").(string)
	if token == "" {
		return nil
	}
	fromCookie, _ := c.Get("from_cookie").(bool)
	return func(ctx context.Context) error {
		_, err := s.resolve(ctx, token, fromCookie)
		return err
	}
}

// throttleAuth answers 429 with Retry-After to an address with too many
// recent failed authentications.
func (s *Server) throttleAuth(c echo.Context) error {
	after, err := s.ctl.AuthThrottle(c.Request().Context(), c.RealIP())
	if err != nil && after > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(after.Seconds()+0.999)))
	}
	return err
}

func (s *Server) clearCookie(c echo.Context) {
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, MaxAge: -1,
		Secure: s.secureCookies(c), SameSite: http.SameSiteLaxMode})
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

type sessionRequest struct {
	Token string `json:"token"`
}

type sessionAnswer struct {
	User      *controller.MeView `json:"user,omitempty"`
	Admin     bool               `json:"admin"`
	CSRFToken string             `json:"csrf_token"`
	// ConfirmKey is the key confirm-to-join asks a called phone for: the
	// web UI says "press <key>" while a call is confirming.
	ConfirmKey string `json:"confirm_key"`
}

// createSession signs the web UI in: it checks the token and sets it as an
// HttpOnly cookie.
func (s *Server) createSession(c echo.Context) error {
	var req sessionRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	if err := s.throttleAuth(c); err != nil {
		return err
	}
	tok := strings.TrimSpace(req.Token)
	if tok == "" {
		return &controller.Error{Kind: controller.KindInvalid, Code: "invalid_token", Field: "token", Message: "token: paste your convoice token"}
	}
	a, err := s.ctl.Authenticate(c.Request().Context(), tok, s.cfg.AdminTokenHash)
	if err != nil {
		if ok, held := s.authLog.allow("sign-in "+c.RealIP(), time.Now()); ok {
			s.log.Info("sign-in failed", "remote", c.RealIP(), "unlogged_since_last", held)
		}
		if ce, ok := controller.AsError(err); ok && ce.Kind == controller.KindUnauthorized {
			s.auditAuthFailure(c, controller.Actor{}, "sign-in: "+ce.Message)
			s.ctl.AuthFailed(c.Request().Context(), c.RealIP())
		}
		return err
	}
	c.SetCookie(&http.Cookie{
		Name: sessionCookie, Value: tok, Path: "/", HttpOnly: true,
		Secure: s.secureCookies(c), SameSite: http.SameSiteLaxMode,
		Expires: time.Now().Add(30 * 24 * time.Hour),
	})
	return s.sessionAnswer(c, a, tok, http.StatusCreated)
}

func (s *Server) sessionAnswer(c echo.Context, a controller.Actor, tok string, status int) error {
	ans := sessionAnswer{Admin: a.Admin, CSRFToken: csrfToken(tok), ConfirmKey: s.ctl.ConfirmKey()}
	if a.UserID != "" {
		me, err := s.ctl.Me(c.Request().Context(), a)
		if err != nil {
			return err
		}
		ans.User = &me
	}
	return writeJSON(c, status, ans)
}

func (s *Server) getSession(c echo.Context) error {
	tok, _ := c.Get("token").(string)
	return s.sessionAnswer(c, actorOf(c), tok, http.StatusOK)
}

// deleteSession signs the web UI out: the cookie is cleared, and a web
// session is revoked on the server (every replica refuses it from now on).
// Revoking a live session needs the CSRF header, as every state change
// made with the cookie does; a dead or unknown one is just cleared.
func (s *Server) deleteSession(c echo.Context) error {
	r := c.Request()
	if ck, err := r.Cookie(sessionCookie); err == nil && strings.HasPrefix(ck.Value, controller.SessionPrefix) {
		if a, err := s.ctl.AuthenticateSession(r.Context(), ck.Value); err == nil {
			got := r.Header.Get(csrfHeader)
			if subtle.ConstantTimeCompare([]byte(got), []byte(csrfToken(ck.Value))) != 1 {
				s.auditAuthFailure(c, a, "sign-out without its CSRF token")
				return &controller.Error{Kind: controller.KindForbidden, Code: "csrf",
					Message: "missing or wrong " + csrfHeader + " header (needed with cookie sign-in)"}
			}
			if err := s.ctl.EndSessionAndTell(r.Context(), a, ck.Value); err != nil {
				return err
			}
		}
	}
	s.clearCookie(c)
	return c.NoContent(http.StatusNoContent)
}
