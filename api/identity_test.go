package api_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

type tokenListAnswer struct {
	Tokens []struct {
		ID         string     `json:"id"`
		Name       string     `json:"name"`
		ExpiresAt  *time.Time `json:"expires_at"`
		LastUsedAt *time.Time `json:"last_used_at"`
		RevokedAt  *time.Time `json:"revoked_at"`
		State      string     `json:"state"`
	} `json:"tokens"`
}

func tokensOf(t *testing.T, env *apitest.Env, userID string) map[string]string {
	t.Helper()
	var l tokenListAnswer
	env.Must(200, "GET", "/api/v1/users/"+userID+"/tokens", apitest.AdminToken, nil).JSON(t, &l)
	out := map[string]string{}
	for _, tk := range l.Tokens {
		state := tk.State
		if tk.LastUsedAt != nil {
			state += "+used"
		}
		out[tk.ID] = state
	}
	return out
}

// Given a token issued with expires_in_s, when it has expired, then it gets
// 401; the admin's list shows its expiry, its last use and its state, and a
// revoked token gets 401 too.
func TestTokens_GivenExpiryAndRevocation_WhenUsed_Then401AndListed(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	u := env.AddUser("Tina Token", controller.NumberInput{Label: "work", Number: "+1 202 555 0161"})

	var short struct {
		ID        string     `json:"id"`
		Token     string     `json:"token"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	env.Must(201, "POST", "/api/v1/users/"+u.ID+"/tokens", apitest.AdminToken,
		map[string]any{"name": "ci job", "expires_in_s": 2}).JSON(t, &short)
	if short.ExpiresAt == nil || time.Until(*short.ExpiresAt) > 3*time.Second || time.Until(*short.ExpiresAt) < time.Second {
		t.Fatalf("expires_at = %v, want about 2 s from now", short.ExpiresAt)
	}
	env.Must(200, "GET", "/api/v1/me", short.Token, nil)
	// The last use is written in the background, behind the writes that
	// answer people.
	env.WaitFor("the short token's last use", 5*time.Second, func() bool { return tokensOf(t, env, u.ID)[short.ID] == "active+used" })
	time.Sleep(time.Until(*short.ExpiresAt) + 100*time.Millisecond)
	if r := env.Do("GET", "/api/v1/me", short.Token, nil); r.Status != 401 {
		t.Fatalf("expired token: status %d, want 401", r.Status)
	}
	if got := tokensOf(t, env, u.ID); got[short.ID] != "expired+used" {
		t.Fatalf("tokens after expiry = %v, want %s expired", got, short.ID)
	}
	if r := env.Do("POST", "/api/v1/users/"+u.ID+"/tokens", apitest.AdminToken, map[string]any{"expires_in_s": -5}); r.Status != 400 {
		t.Fatalf("negative expires_in_s: status %d, want 400", r.Status)
	}

	// The long-lived token of AddUser: revoked, it gets 401.
	var all tokenListAnswer
	env.Must(200, "GET", "/api/v1/users/"+u.ID+"/tokens", apitest.AdminToken, nil).JSON(t, &all)
	var first string
	for _, tk := range all.Tokens {
		if tk.ExpiresAt == nil {
			first = tk.ID
		}
	}
	env.Must(200, "GET", "/api/v1/me", u.Token, nil)
	env.WaitFor("the first token's last use", 5*time.Second, func() bool { return tokensOf(t, env, u.ID)[first] == "active+used" })
	env.Must(204, "DELETE", "/api/v1/users/"+u.ID+"/tokens/"+first, apitest.AdminToken, nil)
	if r := env.Do("GET", "/api/v1/me", u.Token, nil); r.Status != 401 {
		t.Fatalf("revoked token: status %d, want 401", r.Status)
	}
	if got := tokensOf(t, env, u.ID); got[first] != "revoked+used" {
		t.Fatalf("tokens after revocation = %v, want %s revoked", got, first)
	}
	// Someone else's list is not theirs to see.
	other := env.AddUser("Otto Other")
	if r := env.Do("GET", "/api/v1/users/"+u.ID+"/tokens", other.Token, nil); r.Status != 404 {
		t.Fatalf("another user's tokens: status %d, want 404", r.Status)
	}
}

// Given an address that failed N times in the window, when it tries again
// (even with a good token), then it gets 429 with Retry-After.
func TestAuthThrottle_GivenFailures_WhenRetrying_Then429WithRetryAfter(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true,
		IdentityLimits: controller.IdentityConfig{AuthFailures: 4, AuthWindow: 3 * time.Second}})
	u := env.AddUser("Gina Good")
	env.Must(200, "GET", "/api/v1/me", u.Token, nil)
	// A missing token is no guess: it does not count.
	for range 6 {
		env.Must(401, "GET", "/api/v1/me", "", nil)
	}
	for i := range 4 {
		if r := env.Do("GET", "/api/v1/me", "wrong-"+strconv.Itoa(i), nil); r.Status != 401 {
			t.Fatalf("failure %d: status %d, want 401", i+1, r.Status)
		}
	}
	r := env.Do("GET", "/api/v1/me", u.Token, nil)
	if r.Status != 429 || r.ErrorCode() != "too_many_failures" {
		t.Fatalf("after 4 failures, a good token: status %d %s, want 429 too_many_failures", r.Status, r.Body)
	}
	ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 3 {
		t.Fatalf("Retry-After = %q, want 1..3 s", r.Header.Get("Retry-After"))
	}
	if r := env.Do("POST", "/api/v1/session", "", map[string]any{"token": u.Token}); r.Status != 429 {
		t.Fatalf("sign-in form while throttled: status %d, want 429", r.Status)
	}
	time.Sleep(time.Duration(ra)*time.Second + 200*time.Millisecond)
	env.Must(200, "GET", "/api/v1/me", u.Token, nil)
}

// Given a web session (as OpenID Connect sign-in makes), when it is signed
// out, has been idle or reaches its absolute limit, then its cookie gets
// 401; sign-out needs the CSRF header.
func TestSessions_GivenSessionCookie_WhenSignedOutOrExpired_Then401(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true,
		IdentityLimits: controller.IdentityConfig{SessionMax: 2 * time.Second}})
	u := env.AddUser("Sam Session")
	ctx := context.Background()
	secret, err := env.Ctl.NewSession(ctx, u.ID, "oidc")
	if err != nil {
		t.Fatal(err)
	}
	cookie := "convoice_session=" + secret
	var s struct {
		CSRF string `json:"csrf_token"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	env.Must(200, "GET", "/api/v1/session", "", nil, "Cookie", cookie).JSON(t, &s)
	if s.User.ID != u.ID || s.CSRF == "" {
		t.Fatalf("session = %+v", s)
	}
	// State changes with the cookie need the CSRF header, sign-out too.
	env.Must(403, "DELETE", "/api/v1/session", "", nil, "Cookie", cookie)
	env.Must(403, "POST", "/auth/signout", "", nil, "Cookie", cookie)
	env.Must(200, "GET", "/api/v1/me", "", nil, "Cookie", cookie)
	env.Must(204, "POST", "/auth/signout", "", nil, "Cookie", cookie, "X-CSRF-Token", s.CSRF)
	r := env.Do("GET", "/api/v1/me", "", nil, "Cookie", cookie)
	if r.Status != 401 || r.ErrorCode() != "session_ended" {
		t.Fatalf("revoked session: status %d %s, want 401 session_ended", r.Status, r.Body)
	}

	// The absolute limit ends a session in use.
	secret2, err := env.Ctl.NewSession(ctx, u.ID, "oidc")
	if err != nil {
		t.Fatal(err)
	}
	env.Must(200, "GET", "/api/v1/me", "", nil, "Cookie", "convoice_session="+secret2)
	time.Sleep(2100 * time.Millisecond)
	env.Must(401, "GET", "/api/v1/me", "", nil, "Cookie", "convoice_session="+secret2)

	// A session id is a cookie, never a bearer token.
	secret3, err := env.Ctl.NewSession(ctx, u.ID, "oidc")
	if err != nil {
		t.Fatal(err)
	}
	env.Must(401, "GET", "/api/v1/me", secret3, nil)
}

// Given a session whose idle limit passes, then it gets 401.
func TestSessions_GivenIdleLimit_WhenIdle_Then401(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true,
		IdentityLimits: controller.IdentityConfig{SessionIdle: time.Second}})
	u := env.AddUser("Ida Idle")
	secret, err := env.Ctl.NewSession(context.Background(), u.ID, "oidc")
	if err != nil {
		t.Fatal(err)
	}
	env.Must(200, "GET", "/api/v1/me", "", nil, "Cookie", "convoice_session="+secret)
	time.Sleep(1200 * time.Millisecond)
	env.Must(401, "GET", "/api/v1/me", "", nil, "Cookie", "convoice_session="+secret)
}
