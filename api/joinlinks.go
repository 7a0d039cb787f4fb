package api

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/convoice/convoice/controller"
)

// Join links and guests (issue 5).
//
// The join-link token travels in the path of /join/{token} and
// /api/v1/join/{token}: it is never logged (the access log logs route
// patterns, and nothing here logs the token or the raw URL), never stored
// (the controller keeps its SHA-256), and a Referer never carries it
// (Referrer-Policy: no-referrer on every answer).
//
// Guests authenticate with their own session token, as a bearer token or
// as the HttpOnly `convoice_guest` cookie the join answer sets (the guest
// page uses the cookie, so that EventSource works and page scripts never
// keep the token). With the cookie, non-GET requests need X-CSRF-Token, as
// for users. A guest token opens /api/v1/guest/* only; a user token does
// not open those.

// guestCookie holds a guest's session token for the guest page; scoped to
// the guest API's path.
const (
	guestCookie     = "convoice_guest"
	guestCookiePath = "/api/v1/guest"
)

// guestCSP is the guest page's Content-Security-Policy: nothing inline,
// nothing from elsewhere.
const guestCSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

func (s *Server) mountJoinLinks(e *echo.Echo, public, authed *echo.Group) {
	authed.POST("/conversations/:id/join-links", s.createJoinLink)
	authed.GET("/conversations/:id/join-links", s.listJoinLinks)
	authed.DELETE("/join-links/:id", s.revokeJoinLink)
	authed.GET("/conversations/:id/guests", s.listGuests)
	authed.POST("/conversations/:id/guests/:guest_id/admit", s.admitGuest)
	authed.POST("/conversations/:id/guests/:guest_id/refuse", s.refuseGuest)

	public.GET("/join/:token", s.joinLinkInfo)
	public.POST("/join/:token", s.joinAsGuest)

	guest := public.Group("/guest", s.authenticateGuest)
	guest.GET("", s.guestSession)
	guest.DELETE("", s.guestLeave)
	guest.GET("/messages", s.guestMessages)
	guest.POST("/messages", s.guestPostMessage)
	guest.GET("/events", s.guestEvents)
	guest.POST("/leg", s.guestDial)
	guest.DELETE("/leg", s.guestHangup)

	e.GET("/join/:token", s.guestPage)
}

// ---- participants ----------------------------------------------------------

// publicURL is the base of join links: the configured public URL, else
// the address this request came to.
func (s *Server) publicURL(c echo.Context) string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	return c.Scheme() + "://" + c.Request().Host
}

func (s *Server) createJoinLink(c echo.Context) error {
	var req controller.NewJoinLink
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	l, err := s.ctl.CreateJoinLink(c.Request().Context(), actorOf(c), c.Param("id"), req, s.publicURL(c))
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return writeJSON(c, http.StatusCreated, l)
}

func (s *Server) listJoinLinks(c echo.Context) error {
	ls, err := s.ctl.ListJoinLinks(c.Request().Context(), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, map[string]any{"join_links": ls})
}

func (s *Server) revokeJoinLink(c echo.Context) error {
	if err := s.ctl.RevokeJoinLink(c.Request().Context(), actorOf(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) listGuests(c echo.Context) error {
	gs, err := s.ctl.ListGuests(c.Request().Context(), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, map[string]any{"guests": gs})
}

func (s *Server) admitGuest(c echo.Context) error {
	return s.idempotent(c, http.StatusOK, func(body []byte) (any, error) {
		var req struct{}
		if err := decodeJSON(c.Request(), body, &req); err != nil {
			return nil, err
		}
		return s.ctl.AdmitGuest(c.Request().Context(), actorOf(c), c.Param("id"), c.Param("guest_id"))
	})
}

func (s *Server) refuseGuest(c echo.Context) error {
	var req struct{}
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	r, err := s.ctl.RefuseGuest(c.Request().Context(), actorOf(c), c.Param("id"), c.Param("guest_id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, r)
}

// ---- the public join -------------------------------------------------------

// clientAddr is the address join attempts are counted by: the peer of the
// connection (X-Forwarded-For and the like are believed only when the
// server is configured with an IP extractor for its trusted proxies), an
// IPv6 address by its /64, which one subscriber usually holds whole.
func clientAddr(c echo.Context) string {
	var host string
	if c.Echo().IPExtractor != nil {
		host = c.RealIP()
	} else {
		h, _, err := net.SplitHostPort(c.Request().RemoteAddr)
		if err != nil {
			h = c.Request().RemoteAddr
		}
		host = h
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// countJoinAttempt applies the per-address limit on join attempts,
// answering 429 with Retry-After past it.
func (s *Server) countJoinAttempt(c echo.Context) error {
	err := s.ctl.CountJoinAttempt(c.Request().Context(), clientAddr(c))
	var ra *controller.RetryAfterError
	if errors.As(err, &ra) {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int((ra.After.Seconds())+0.999)))
	}
	return err
}

func (s *Server) joinLinkInfo(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	if err := s.countJoinAttempt(c); err != nil {
		return err
	}
	info, err := s.ctl.GetJoinLinkInfo(c.Request().Context(), c.Param("token"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, info)
}

// guestJoinAnswer is the join answer: the controller's plus the CSRF token
// for cookie use and the key confirm-to-join asks for (the guest page's
// words while the call is confirming). Neither is kept with the replayed
// answer.
type guestJoinAnswer struct {
	controller.GuestJoinResult
	CSRFToken  string `json:"csrf_token,omitempty"`
	ConfirmKey string `json:"confirm_key"`
}

// joinAsGuest is POST /api/v1/join/{token}. It honours Idempotency-Key,
// scoped to the client address and the token: a repeat returns the first
// answer — the same guest and session — and dials nothing again. The
// stored answer holds the guest token only sealed with a key derived from
// the join-link token and the idempotency key, neither of which the
// database holds, so the database never holds a usable guest token.
func (s *Server) joinAsGuest(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	if err := s.countJoinAttempt(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	token := c.Param("token")
	body, err := readBody(c)
	if err != nil {
		return err
	}
	key := c.Request().Header.Get("Idempotency-Key")
	scope := controller.HashSecret("join\x00" + clientAddr(c) + "\x00" + controller.HashSecret(token))
	seal := replayKey(token, key, scope)
	ans, err := s.ctl.Idempotent(ctx, scope, key, append([]byte("join\n"), body...), func() controller.Answer {
		var in controller.GuestJoin
		err := decodeJSON(c.Request(), body, &in)
		var res controller.GuestJoinResult
		if err == nil {
			res, err = s.ctl.JoinAsGuest(ctx, token, in)
		}
		if err != nil {
			return s.errorAnswer(c, err)
		}
		res.GuestToken, err = sealToken(seal, res.GuestToken)
		if err != nil {
			return s.errorAnswer(c, err)
		}
		b, _ := json.Marshal(res)
		return controller.Answer{Status: http.StatusCreated, Body: b}
	})
	if err != nil {
		return err
	}
	if ans.Status != http.StatusCreated {
		return c.JSONBlob(ans.Status, ans.Body)
	}
	var out guestJoinAnswer
	if err := json.Unmarshal(ans.Body, &out.GuestJoinResult); err != nil {
		return err
	}
	if out.GuestToken, err = openToken(seal, out.GuestToken); err != nil {
		return err
	}
	out.CSRFToken = csrfToken(out.GuestToken)
	out.ConfirmKey = s.ctl.ConfirmKey()
	c.SetCookie(&http.Cookie{Name: guestCookie, Value: out.GuestToken, Path: guestCookiePath, HttpOnly: true,
		Secure: s.secureCookies(c), SameSite: http.SameSiteStrictMode})
	return writeJSON(c, http.StatusCreated, out)
}

// errorAnswer turns an error into a stored answer (5xx are logged, and not
// kept by Idempotent).
func (s *Server) errorAnswer(c echo.Context, err error) controller.Answer {
	st, eb := errorStatus(err)
	if st >= 500 {
		s.log.Warn("request failed", "route", c.Path(), "status", st, "err", err)
	}
	b, _ := json.Marshal(eb)
	return controller.Answer{Status: st, Body: b}
}

// replayKey derives the key that seals a guest token in a stored join
// answer.
func replayKey(token, idemKey, scope string) []byte {
	h := sha256.Sum256([]byte("convoice-guest-replay\x00" + token + "\x00" + idemKey + "\x00" + scope))
	return h[:]
}

func sealToken(key []byte, tok string) (string, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(gcm.Seal(nonce, nonce, []byte(tok), nil)), nil
}

func openToken(key []byte, sealed string) (string, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return "", err
	}
	b, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(b) < gcm.NonceSize() {
		return "", errors.New("stored join answer: bad sealed token")
	}
	plain, err := gcm.Open(nil, b[:gcm.NonceSize()], b[gcm.NonceSize():], nil)
	if err != nil {
		return "", errors.New("stored join answer: cannot open the sealed token")
	}
	return string(plain), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// ---- the guest API ---------------------------------------------------------

func guestOf(c echo.Context) controller.GuestActor {
	g, _ := c.Get("guest").(controller.GuestActor)
	return g
}

// authenticateGuest resolves a guest session: the bearer token, else the
// guest cookie (then non-GET requests need the CSRF header).
func (s *Server) authenticateGuest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		token, fromCookie := bearer(r), false
		if token == "" {
			if ck, err := r.Cookie(guestCookie); err == nil && ck.Value != "" {
				token, fromCookie = ck.Value, true
			}
		}
		g, err := s.ctl.AuthenticateGuest(r.Context(), token)
		if err != nil {
			// The guest page asks for its session on every load: no token
			// is not worth a line; a wrong or ended one is.
			if ce, ok := controller.AsError(err); ok && ce.Kind == controller.KindUnauthorized && token != "" {
				s.log.Info("guest authentication failed", "route", c.Path(), "remote", c.RealIP(), "reason", ce.Message)
				s.auditAuthFailure(c, controller.Actor{}, "guest: "+ce.Message)
			}
			return err
		}
		if fromCookie && r.Method != http.MethodGet && r.Method != http.MethodHead {
			got := r.Header.Get(csrfHeader)
			if subtle.ConstantTimeCompare([]byte(got), []byte(csrfToken(token))) != 1 {
				s.auditAuthFailure(c, controller.Actor{Name: g.Name + " (guest)"}, "guest: missing or wrong CSRF token")
				return &controller.Error{Kind: controller.KindForbidden, Code: "csrf",
					Message: "missing or wrong " + csrfHeader + " header (needed with cookie sign-in)"}
			}
		}
		c.Set("guest", g)
		c.Set("guest_token", token)
		return next(c)
	}
}

type guestSessionAnswer struct {
	controller.GuestSessionView
	CSRFToken  string `json:"csrf_token"`
	ConfirmKey string `json:"confirm_key"`
}

func (s *Server) guestSession(c echo.Context) error {
	v, err := s.ctl.GuestSession(c.Request().Context(), guestOf(c))
	if err != nil {
		return err
	}
	tok, _ := c.Get("guest_token").(string)
	c.Response().Header().Set("Cache-Control", "no-store")
	return writeJSON(c, http.StatusOK, guestSessionAnswer{GuestSessionView: v, CSRFToken: csrfToken(tok),
		ConfirmKey: s.ctl.ConfirmKey()})
}

func (s *Server) guestLeave(c echo.Context) error {
	if err := s.ctl.GuestLeave(c.Request().Context(), guestOf(c)); err != nil {
		return err
	}
	c.SetCookie(&http.Cookie{Name: guestCookie, Value: "", Path: guestCookiePath, HttpOnly: true, MaxAge: -1,
		Secure: s.secureCookies(c), SameSite: http.SameSiteStrictMode})
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) guestMessages(c echo.Context) error {
	q, err := messageQuery(c)
	if err != nil {
		return err
	}
	p, err := s.ctl.GuestMessages(c.Request().Context(), guestOf(c), q)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, p)
}

func (s *Server) guestPostMessage(c echo.Context) error {
	var req textRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	m, err := s.ctl.GuestPostMessage(c.Request().Context(), guestOf(c), req.Text)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, m)
}

type guestDialRequest struct {
	Number string `json:"number,omitempty"`
}

// guestDial is POST /api/v1/guest/leg: call me (again). It honours
// Idempotency-Key, scoped to the guest.
func (s *Server) guestDial(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	g := guestOf(c)
	ctx := c.Request().Context()
	ans, err := s.ctl.Idempotent(ctx, "guest:"+g.GuestID, c.Request().Header.Get("Idempotency-Key"),
		append([]byte("guest-dial\n"), body...), func() controller.Answer {
			var req guestDialRequest
			err := decodeJSON(c.Request(), body, &req)
			var res controller.JoinResult
			if err == nil {
				res, err = s.ctl.GuestDial(ctx, g, req.Number)
			}
			if err != nil {
				return s.errorAnswer(c, err)
			}
			b, _ := json.Marshal(res)
			return controller.Answer{Status: http.StatusCreated, Body: b}
		})
	if err != nil {
		return err
	}
	return c.JSONBlob(ans.Status, ans.Body)
}

func (s *Server) guestHangup(c echo.Context) error {
	if err := s.ctl.GuestHangup(c.Request().Context(), guestOf(c)); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// guestEvents streams the guest's view of their conversation: what
// controller.GuestStream lets through, from their arrival (or
// Last-Event-ID) on; the stream ends with the event that ends the session.
func (s *Server) guestEvents(c echo.Context) error {
	ctx := c.Request().Context()
	g := guestOf(c)
	gs, err := s.ctl.GuestStream(ctx, g)
	if err != nil {
		return err
	}
	last, err := s.resumeAt(c, g.ConversationID)
	if err != nil {
		return err
	}
	return s.stream(c, "guest:"+g.GuestID, g.ConversationID, max(last, gs.StartSeq()), gs)
}

// ---- the guest page --------------------------------------------------------

// guestPage serves /join/{token}: a static page (the token is read by the
// page's script from its own address, and sent only to the join API).
func (s *Server) guestPage(c echo.Context) error {
	b, err := fs.ReadFile(webFiles, "web/join.html")
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", guestCSP)
	h.Set("X-Robots-Tag", "noindex, nofollow")
	return c.HTMLBlob(http.StatusOK, b)
}
