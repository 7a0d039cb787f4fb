package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"

	"github.com/convoice/convoice/controller"
)

// IdentityConfig is sign-in by OpenID Connect and SCIM provisioning.
type IdentityConfig struct {
	OIDC OIDCConfig
	// SCIMTokenHash is the SHA-256 (hex) of the SCIM bearer token; "":
	// /scim/v2 answers 404.
	SCIMTokenHash string
}

// OIDCConfig is the OpenID Connect client (Authorization Code with PKCE).
// An empty Issuer switches it off.
type OIDCConfig struct {
	Issuer, ClientID, ClientSecret string
	// Scopes asked for (default openid, email, profile).
	Scopes []string
	// Claim of the ID token that names the person: an e-mail address
	// (default "email"), or an external id (SCIM externalId, LDAP
	// entryUUID) for a claim such as "oid" or "sub".
	Claim string
	// Name is what the sign-in button says: "Sign in with <Name>"
	// (default "single sign-on").
	Name string
	// RedirectURL is the callback registered at the provider (default
	// PublicURL + /auth/oidc/callback).
	RedirectURL string
}

// identityServer holds the OpenID Connect client, discovered lazily (so
// that a provider that is down does not stop convoice from starting).
type identityServer struct {
	cfg      IdentityConfig
	stateKey []byte

	mu       sync.Mutex
	provider *oidc.Provider
	oauth    *oauth2.Config
	verifier *oidc.IDTokenVerifier
}

// oidcCookie carries state, nonce and PKCE verifier from login to
// callback: signed, HttpOnly, 10 minutes, only sent to /auth/oidc.
const (
	oidcCookie     = "convoice_oidc"
	oidcCookiePath = "/auth/oidc"
	oidcCookieLife = 10 * time.Minute
)

func (s *Server) initIdentity() {
	cfg := s.cfg.Identity
	o := &cfg.OIDC
	if len(o.Scopes) == 0 {
		o.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	if o.Claim == "" {
		o.Claim = "email"
	}
	if o.Name == "" {
		o.Name = "single sign-on"
	}
	if o.RedirectURL == "" {
		o.RedirectURL = strings.TrimRight(s.cfg.PublicURL, "/") + "/auth/oidc/callback"
	}
	// The state cookie's key comes from the client secret, so every
	// replica can check a cookie another one set, and nothing more needs
	// configuring.
	k := sha256.Sum256([]byte("convoice-oidc-state\x00" + o.ClientSecret + "\x00" + o.ClientID))
	s.id = &identityServer{cfg: cfg, stateKey: k[:]}
}

func (s *Server) mountIdentity(e *echo.Echo, v1 *echo.Group) {
	v1.GET("/sign-in-methods", s.signInMethods)
	e.GET("/auth/oidc/login", s.oidcLogin)
	e.GET("/auth/oidc/callback", s.oidcCallback)
	e.POST("/auth/signout", s.deleteSession)
	s.mountSCIM(e)
}

func (id *identityServer) oidcOn() bool { return id.cfg.OIDC.Issuer != "" }

// client discovers the provider on first use (and again after a failure).
func (id *identityServer) client(ctx context.Context) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.provider != nil {
		return id.oauth, id.verifier, nil
	}
	o := id.cfg.OIDC
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, o.Issuer)
	if err != nil {
		return nil, nil, err
	}
	id.provider = p
	id.oauth = &oauth2.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: o.RedirectURL, Scopes: o.Scopes}
	id.verifier = p.Verifier(&oidc.Config{ClientID: o.ClientID})
	return id.oauth, id.verifier, nil
}

type signInMethods struct {
	Token bool        `json:"token"`
	OIDC  *oidcMethod `json:"oidc,omitempty"`
}

type oidcMethod struct {
	Name     string `json:"name"`
	LoginURL string `json:"login_url"`
}

// signInMethods tells the sign-in page what to offer.
func (s *Server) signInMethods(c echo.Context) error {
	m := signInMethods{Token: true}
	if s.id.oidcOn() {
		m.OIDC = &oidcMethod{Name: s.id.cfg.OIDC.Name, LoginURL: "/auth/oidc/login"}
	}
	return writeJSON(c, http.StatusOK, m)
}

type oidcState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Expires  int64  `json:"e"`
}

func (id *identityServer) sign(b []byte) string {
	m := hmac.New(sha256.New, id.stateKey)
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (id *identityServer) open(v string) (oidcState, bool) {
	var st oidcState
	body, mac, ok := strings.Cut(v, ".")
	if !ok {
		return st, false
	}
	b, err1 := base64.RawURLEncoding.DecodeString(body)
	got, err2 := base64.RawURLEncoding.DecodeString(mac)
	if err1 != nil || err2 != nil {
		return st, false
	}
	m := hmac.New(sha256.New, id.stateKey)
	m.Write(b)
	if !hmac.Equal(got, m.Sum(nil)) || json.Unmarshal(b, &st) != nil || time.Now().Unix() > st.Expires {
		return st, false
	}
	return st, true
}

// oidcLogin sends the browser to the provider: Authorization Code with
// PKCE (S256), a nonce in the ID token, and the state in a signed cookie.
func (s *Server) oidcLogin(c echo.Context) error {
	if !s.id.oidcOn() {
		return s.signInError(c, http.StatusNotFound, "Single sign-on is not configured on this convoice.")
	}
	oc, _, err := s.id.client(c.Request().Context())
	if err != nil {
		s.log.Warn("openid provider unreachable", "issuer", s.id.cfg.OIDC.Issuer, "err", err)
		return s.signInError(c, http.StatusBadGateway, "The sign-in service cannot be reached right now. Try again in a minute.")
	}
	st := oidcState{State: controller.NewSecret(), Nonce: controller.NewSecret(), Verifier: oauth2.GenerateVerifier(),
		Expires: time.Now().Add(oidcCookieLife).Unix()}
	b, _ := json.Marshal(st)
	c.SetCookie(&http.Cookie{Name: oidcCookie, Value: s.id.sign(b), Path: oidcCookiePath, HttpOnly: true,
		Secure: s.secureCookies(c), SameSite: http.SameSiteLaxMode, MaxAge: int(oidcCookieLife.Seconds())})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Redirect(http.StatusFound, oc.AuthCodeURL(st.State, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier)))
}

// oidcCallback finishes the sign-in: checks state, trades the code (with
// the PKCE verifier) for tokens, verifies the ID token and its nonce, finds
// the person its claim names, and starts a stored session.
func (s *Server) oidcCallback(c echo.Context) error {
	if !s.id.oidcOn() {
		return s.signInError(c, http.StatusNotFound, "Single sign-on is not configured on this convoice.")
	}
	r := c.Request()
	ctx := r.Context()
	c.Response().Header().Set("Cache-Control", "no-store")
	ck, err := r.Cookie(oidcCookie)
	c.SetCookie(&http.Cookie{Name: oidcCookie, Value: "", Path: oidcCookiePath, HttpOnly: true, MaxAge: -1,
		Secure: s.secureCookies(c), SameSite: http.SameSiteLaxMode})
	if err != nil {
		return s.signInError(c, http.StatusBadRequest, "This sign-in was not started here, or took longer than 10 minutes. Start again.")
	}
	st, ok := s.id.open(ck.Value)
	if !ok || c.QueryParam("state") == "" || !hmac.Equal([]byte(c.QueryParam("state")), []byte(st.State)) {
		s.auditAuthFailure(c, controller.Actor{}, "oidc: state mismatch")
		return s.signInError(c, http.StatusBadRequest, "This sign-in was not started here, or took longer than 10 minutes. Start again.")
	}
	if e := c.QueryParam("error"); e != "" {
		s.log.Info("openid provider refused the sign-in", "error", e, "description", c.QueryParam("error_description"))
		return s.signInError(c, http.StatusForbidden, "The sign-in service refused the sign-in ("+e+").")
	}
	oc, verifier, err := s.id.client(ctx)
	if err != nil {
		return s.signInError(c, http.StatusBadGateway, "The sign-in service cannot be reached right now. Try again in a minute.")
	}
	xctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tok, err := oc.Exchange(xctx, c.QueryParam("code"), oauth2.VerifierOption(st.Verifier))
	if err != nil {
		s.log.Warn("oidc code exchange failed", "err", err)
		s.auditAuthFailure(c, controller.Actor{}, "oidc: code exchange failed")
		return s.signInError(c, http.StatusBadGateway, "The sign-in could not be completed with the sign-in service. Start again.")
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := verifier.Verify(xctx, raw)
	if err != nil || !hmac.Equal([]byte(idt.Nonce), []byte(st.Nonce)) {
		s.log.Warn("oidc id token refused", "err", err)
		s.auditAuthFailure(c, controller.Actor{}, "oidc: id token refused")
		return s.signInError(c, http.StatusBadGateway, "The sign-in service's answer could not be verified. Start again.")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return s.signInError(c, http.StatusBadGateway, "The sign-in service's answer could not be read.")
	}
	claim := s.id.cfg.OIDC.Claim
	value, _ := claims[claim].(string)
	if v, ok := claims["email_verified"].(bool); claim == "email" && ok && !v {
		return s.signInError(c, http.StatusForbidden, "Your e-mail address is not verified at the sign-in service.")
	}
	if value == "" {
		return s.signInError(c, http.StatusForbidden, fmt.Sprintf("The sign-in service did not say who you are (no %q claim). Ask your administrator.", claim))
	}
	userID, err := s.ctl.Provisioning().SignInSubject(ctx, value)
	switch {
	case errors.Is(err, controller.ErrUnknownPerson):
		s.auditAuthFailure(c, controller.Actor{}, "oidc: unknown person")
		return s.signInError(c, http.StatusForbidden, fmt.Sprintf("%s has no convoice account. Ask your administrator to add you.", value))
	case errors.Is(err, controller.ErrInactivePerson):
		s.auditAuthFailure(c, controller.Actor{}, "oidc: deactivated person "+value)
		return s.signInError(c, http.StatusForbidden, fmt.Sprintf("The convoice account of %s is deactivated. Ask your administrator.", value))
	case err != nil:
		return err
	}
	secret, err := s.ctl.NewSession(ctx, userID, "oidc")
	if err != nil {
		if ce, ok := controller.AsError(err); ok && ce.Kind == controller.KindForbidden {
			return s.signInError(c, http.StatusForbidden, fmt.Sprintf("The convoice account of %s is deactivated. Ask your administrator.", value))
		}
		return err
	}
	c.SetCookie(&http.Cookie{Name: sessionCookie, Value: secret, Path: "/", HttpOnly: true,
		Secure: s.secureCookies(c), SameSite: http.SameSiteLaxMode})
	return c.Redirect(http.StatusSeeOther, "/")
}

var signInErrorPage = template.Must(template.New("e").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign-in failed — convoice</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main class="signin card" data-testid="signin-failed"><h1>You could not be signed in</h1>
<p class="error" role="alert" data-testid="signin-failed-reason">{{.}}</p>
<p><a class="btn" href="/">Back to convoice</a></p></main></body></html>
`))

// signInError is the page a person sees when a sign-in by the provider
// fails: what happened, in words, and the way back.
func (s *Server) signInError(c echo.Context, status int, msg string) error {
	var b strings.Builder
	_ = signInErrorPage.Execute(&b, msg)
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.HTMLBlob(status, []byte(b.String()))
}

type tokenList struct {
	Tokens []controller.TokenView `json:"tokens"`
}

// listTokens lists a user's tokens (admin, or the user): never a secret.
func (s *Server) listTokens(c echo.Context) error {
	ts, err := s.ctl.ListTokens(c.Request().Context(), actorOf(c), c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, tokenList{Tokens: ts})
}
