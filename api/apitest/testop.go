package apitest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"html/template"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// TestOP is a real OpenID Provider (zitadel/oidc's op package) on
// 127.0.0.1 with an in-memory storage: one confidential web client, the
// people it knows, and a login page with a button per person (no password:
// the test clicks who signs in). ID tokens carry email and name.
type TestOP struct {
	Issuer       string
	ClientID     string
	ClientSecret string

	st  *opStorage
	srv *http.Server
}

// TestOPUser is a person the test OP can sign in.
type TestOPUser struct {
	Subject, Email, Name string
}

// StartTestOP starts the provider; it stops with the test.
func StartTestOP(t testing.TB, clientID, clientSecret string) *TestOP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &TestOP{Issuer: "http://" + ln.Addr().String(), ClientID: clientID, ClientSecret: clientSecret}
	o.st = &opStorage{key: key, clientID: clientID, secret: clientSecret, users: map[string]TestOPUser{},
		requests: map[string]*opRequest{}, codes: map[string]string{}}
	cfg := &op.Config{CodeMethodS256: true, AuthMethodPost: true, SupportedScopes: []string{"openid", "email", "profile"}}
	if _, err := rand.Read(cfg.CryptoKey[:]); err != nil {
		t.Fatal(err)
	}
	prov, err := op.NewOpenIDProvider(o.Issuer, cfg, o.st, op.WithAllowInsecure())
	if err != nil {
		t.Fatalf("test OP: %v", err)
	}
	callback := op.AuthCallbackURL(prov)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		o.st.mu.Lock()
		var us []TestOPUser
		for _, u := range o.st.users {
			us = append(us, u)
		}
		o.st.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = loginPage.Execute(w, map[string]any{"ID": r.URL.Query().Get("authRequestID"), "Users": us})
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		id, sub := r.FormValue("id"), r.FormValue("user")
		if err := o.st.finish(id, sub); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, callback(r.Context(), id), http.StatusFound)
	})
	mux.Handle("/", prov)
	o.srv = &http.Server{Handler: mux}
	go o.srv.Serve(ln)
	t.Cleanup(func() { o.srv.Close() })
	return o
}

// AddUser lets u sign in.
func (o *TestOP) AddUser(u TestOPUser) {
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	o.st.users[u.Subject] = u
}

// AllowRedirect registers the client's redirect URI.
func (o *TestOP) AllowRedirect(uri string) {
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	o.st.redirects = append(o.st.redirects, uri)
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html><html><head><meta charset="utf-8"><title>Test IdP</title></head>
<body><h1>Test IdP</h1><form method="post" action="/login"><input type="hidden" name="id" value="{{.ID}}">
{{range .Users}}<button type="submit" name="user" value="{{.Subject}}" data-testid="op-user-{{.Subject}}">Sign in as {{.Name}}</button>{{end}}
</form></body></html>`))

type opRequest struct {
	id, clientID, redirect, state, nonce, subject string
	scopes                                        []string
	challenge                                     *oidc.CodeChallenge
	responseType                                  oidc.ResponseType
	responseMode                                  oidc.ResponseMode
	done                                          bool
	authTime                                      time.Time
}

func (r *opRequest) GetID() string                         { return r.id }
func (r *opRequest) GetACR() string                        { return "" }
func (r *opRequest) GetAMR() []string                      { return []string{"pwd"} }
func (r *opRequest) GetAudience() []string                 { return []string{r.clientID} }
func (r *opRequest) GetAuthTime() time.Time                { return r.authTime }
func (r *opRequest) GetClientID() string                   { return r.clientID }
func (r *opRequest) GetCodeChallenge() *oidc.CodeChallenge { return r.challenge }
func (r *opRequest) GetNonce() string                      { return r.nonce }
func (r *opRequest) GetRedirectURI() string                { return r.redirect }
func (r *opRequest) GetResponseType() oidc.ResponseType    { return r.responseType }
func (r *opRequest) GetResponseMode() oidc.ResponseMode    { return r.responseMode }
func (r *opRequest) GetScopes() []string                   { return r.scopes }
func (r *opRequest) GetState() string                      { return r.state }
func (r *opRequest) GetSubject() string                    { return r.subject }
func (r *opRequest) Done() bool                            { return r.done }

type opClient struct {
	id        string
	redirects []string
}

func (c *opClient) GetID() string                       { return c.id }
func (c *opClient) RedirectURIs() []string              { return c.redirects }
func (c *opClient) PostLogoutRedirectURIs() []string    { return nil }
func (c *opClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c *opClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodBasic }
func (c *opClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *opClient) GrantTypes() []oidc.GrantType         { return []oidc.GrantType{oidc.GrantTypeCode} }
func (c *opClient) LoginURL(id string) string            { return "/login?authRequestID=" + id }
func (c *opClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *opClient) IDTokenLifetime() time.Duration       { return 5 * time.Minute }
func (c *opClient) DevMode() bool                        { return true }
func (c *opClient) IsScopeAllowed(string) bool           { return false }
func (c *opClient) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *opClient) ClockSkew() time.Duration             { return 0 }
func (c *opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

type opKey struct{ k *rsa.PrivateKey }

func (k opKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k opKey) Key() any                                    { return k.k }
func (k opKey) ID() string                                  { return "test-key" }

type opPublicKey struct{ k *rsa.PrivateKey }

func (k opPublicKey) ID() string                         { return "test-key" }
func (k opPublicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k opPublicKey) Use() string                        { return "sig" }
func (k opPublicKey) Key() any                           { return &k.k.PublicKey }

// opStorage is the provider's in-memory storage: only what the
// authorization-code flow needs.
type opStorage struct {
	key              *rsa.PrivateKey
	clientID, secret string

	mu        sync.Mutex
	redirects []string
	users     map[string]TestOPUser
	requests  map[string]*opRequest
	codes     map[string]string
	n         int
}

var errOPNotFound = errors.New("not found")

func (s *opStorage) finish(id, sub string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if _, known := s.users[sub]; !ok || !known {
		return errOPNotFound
	}
	r.subject, r.done, r.authTime = sub, true, time.Now()
	return nil
}

func (s *opStorage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	r := &opRequest{id: "req" + time.Now().Format("150405.000000") + string(rune('a'+s.n%26)), clientID: req.ClientID,
		redirect: req.RedirectURI, state: req.State, nonce: req.Nonce, scopes: req.Scopes,
		responseType: req.ResponseType, responseMode: req.ResponseMode}
	if req.CodeChallenge != "" {
		r.challenge = &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod}
	}
	s.requests[r.id] = r
	return r, nil
}

func (s *opStorage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.requests[id]; ok {
		return r, nil
	}
	return nil, errOPNotFound
}

func (s *opStorage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.requests[s.codes[code]]; ok {
		return r, nil
	}
	return nil, errOPNotFound
}

func (s *opStorage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

func (s *opStorage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for c, rid := range s.codes {
		if rid == id {
			delete(s.codes, c)
		}
	}
	return nil
}

func (s *opStorage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	return "at-" + time.Now().Format("150405.000000"), time.Now().Add(5 * time.Minute), nil
}

func (s *opStorage) CreateAccessAndRefreshTokens(ctx context.Context, r op.TokenRequest, _ string) (string, string, time.Time, error) {
	id, exp, err := s.CreateAccessToken(ctx, r)
	return id, "", exp, err
}

func (s *opStorage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}
func (s *opStorage) TerminateSession(context.Context, string, string) error { return nil }
func (s *opStorage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return nil
}
func (s *opStorage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}
func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) { return opKey{s.key}, nil }
func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}
func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{opPublicKey{s.key}}, nil
}

func (s *opStorage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	if id != s.clientID {
		return nil, errOPNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &opClient{id: id, redirects: append([]string(nil), s.redirects...)}, nil
}

func (s *opStorage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	if id != s.clientID || secret != s.secret {
		return errors.New("wrong client credentials")
	}
	return nil
}

func (s *opStorage) userinfo(info *oidc.UserInfo, sub string, scopes []string) error {
	s.mu.Lock()
	u, ok := s.users[sub]
	s.mu.Unlock()
	if !ok {
		return errOPNotFound
	}
	info.Subject = sub
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeEmail:
			info.Email, info.EmailVerified = u.Email, true
		case oidc.ScopeProfile:
			info.Name = u.Name
		}
	}
	return nil
}

func (s *opStorage) SetUserinfoFromScopes(_ context.Context, info *oidc.UserInfo, sub, _ string, scopes []string) error {
	return s.userinfo(info, sub, scopes)
}
func (s *opStorage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, _, sub, _ string) error {
	return s.userinfo(info, sub, []string{oidc.ScopeEmail, oidc.ScopeProfile})
}
func (s *opStorage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return nil
}
func (s *opStorage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}
func (s *opStorage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errOPNotFound
}
func (s *opStorage) ValidateJWTProfileScopes(_ context.Context, _ string, scopes []string) ([]string, error) {
	return scopes, nil
}
func (s *opStorage) Health(context.Context) error { return nil }
