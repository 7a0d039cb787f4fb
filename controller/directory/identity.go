package directory

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// IdentityConfig tunes web sessions and the throttling of failed
// authentications. Zero fields take the defaults.
type IdentityConfig struct {
	// SessionIdle ends a session unused this long (default 8 h).
	SessionIdle time.Duration
	// SessionMax ends a session this long after sign-in, used or not
	// (default 7 days).
	SessionMax time.Duration
	// AuthFailures failed authentications from one client address within
	// AuthWindow throttle that address (429) until the oldest leaves the
	// window (defaults 20 in 5 min).
	AuthFailures int
	AuthWindow   time.Duration
}

// Default identity limits.
const (
	DefaultSessionIdle  = 8 * time.Hour
	DefaultSessionMax   = 7 * 24 * time.Hour
	DefaultAuthFailures = 20
	DefaultAuthWindow   = 5 * time.Minute
)

// touchEvery bounds how often a token's last-used time or a session's
// last-seen time is written: at most once a minute per credential.
const touchEvery = time.Minute

// SessionPrefix starts every web session secret, so that a cookie is told
// apart from an API token (which a cookie may also hold: sign-in links).
const SessionPrefix = "cvs1_"

// Configure sets the identity limits (call before serving).
func (dir *Directory) Configure(cfg IdentityConfig) {
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = DefaultSessionIdle
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = DefaultSessionMax
	}
	if cfg.AuthFailures <= 0 {
		cfg.AuthFailures = DefaultAuthFailures
	}
	if cfg.AuthWindow <= 0 {
		cfg.AuthWindow = DefaultAuthWindow
	}
	dir.idcfg = cfg
}

func (dir *Directory) identity() IdentityConfig {
	if dir.idcfg.SessionIdle == 0 {
		dir.Configure(IdentityConfig{})
	}
	return dir.idcfg
}

func errUnknownToken() *core.Error {
	return &core.Error{Kind: core.KindUnauthorized, Code: "unauthorized", Message: "the token is unknown or revoked, or has expired"}
}

func errSessionEnded() *core.Error {
	return &core.Error{Kind: core.KindUnauthorized, Code: "session_ended",
		Message: "your sign-in has ended (signed out, expired or revoked); sign in again"}
}

// NewSession signs a person in on the web: a stored session whose secret
// goes in the cookie. Unknown and deactivated people get 403.
func (dir *Directory) NewSession(ctx context.Context, userID, method string) (string, error) {
	u, err := dir.store.GetUserFull(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (u.DeactivatedAt != nil || u.RemovedAt != nil)) {
		return "", core.Forbidden("user_inactive", "this person is not active in convoice")
	}
	if err != nil {
		return "", err
	}
	cfg := dir.identity()
	secret := SessionPrefix + core.NewSecret()
	now := time.Now().UTC()
	ss := &storage.Session{ID: core.HashSecret(secret), UserID: userID, Method: method, CreatedAt: now, LastSeenAt: now,
		ExpiresAt: now.Add(cfg.SessionMax)}
	if err := dir.store.InTx(ctx, func(tx *storage.Store) error { return tx.CreateSession(ctx, ss) }); err != nil {
		return "", err
	}
	dir.audit.Add(ctx, audit.Entry{Actor: core.Actor{UserID: userID, Name: u.DisplayName}, Action: ActionSignIn, TargetID: userID, Detail: method})
	return secret, nil
}

// ActionSignIn and ActionSignOut are the audit actions of web sessions.
const (
	ActionSignIn  = "session.sign_in"
	ActionSignOut = "session.sign_out"
)

// AuthenticateSession resolves a session cookie.
func (dir *Directory) AuthenticateSession(ctx context.Context, secret string) (core.Actor, error) {
	if !strings.HasPrefix(secret, SessionPrefix) {
		return core.Actor{}, errSessionEnded()
	}
	cfg := dir.identity()
	now := time.Now().UTC()
	p, err := dir.store.PrincipalBySession(ctx, core.HashSecret(secret), now, now.Add(-cfg.SessionIdle))
	if errors.Is(err, storage.ErrNotFound) {
		return core.Actor{}, errSessionEnded()
	}
	if err != nil {
		return core.Actor{}, err
	}
	if p.LastUsed == nil || now.Sub(*p.LastUsed) > touchEvery {
		dir.touch(ctx, "session:"+p.CredentialID, now, func(ctx context.Context, tx *storage.Store) error { return tx.TouchSession(ctx, p.CredentialID, now) })
	}
	return core.Actor{UserID: p.UserID, Admin: p.Role == storage.RoleAdmin, Name: p.DisplayName}, nil
}

// touch records a credential's use in the background, behind the writes
// that answer people: a request never waits for it (on SQLite every write
// goes through the one writer; see storage.InTxAsync), and the request's
// end does not cancel it.
//
// A burst of requests with one credential reads the same old time before
// the first write lands; this process queues one write per credential and
// touchEvery (key names the credential), not one per request.
func (dir *Directory) touch(ctx context.Context, key string, now time.Time, fn func(ctx context.Context, tx *storage.Store) error) {
	if !dir.touches.claim(key, now) {
		return
	}
	bg := storage.LowPriority(context.WithoutCancel(ctx))
	dir.store.InTxAsync(bg, func(tx *storage.Store) error { return fn(bg, tx) }, nil)
}

// EndSession revokes the session of secret (sign-out); an unknown or
// ended one is no error.
func (dir *Directory) EndSession(ctx context.Context, a core.Actor, secret string) error {
	var live bool
	err := dir.store.InTx(ctx, func(tx *storage.Store) (err error) {
		live, err = tx.RevokeSession(ctx, core.HashSecret(secret), time.Now())
		return err
	})
	if err == nil && live {
		dir.audit.Add(ctx, audit.Entry{Actor: a, Action: ActionSignOut, TargetID: a.UserID})
	}
	return err
}

// RevokeCredentials revokes every token and session of a person (their
// deactivation) and says how many were live.
func (dir *Directory) RevokeCredentials(ctx context.Context, tx *storage.Store, userID string) (int64, error) {
	return tx.RevokeUserCredentials(ctx, userID, time.Now())
}

// AuthThrottle says whether remote may try to authenticate now: after
// too many failures in the window it gets a rate-limit error and how long
// to wait.
func (dir *Directory) AuthThrottle(ctx context.Context, remote string) (time.Duration, error) {
	cfg := dir.identity()
	now := time.Now().UTC()
	n, oldest, ok := dir.failures.get(remote, now, cfg.AuthWindow)
	if !ok {
		var err error
		n, oldest, err = dir.store.AuthFailuresSince(ctx, remote, now.Add(-cfg.AuthWindow))
		if err != nil {
			return 0, err
		}
		dir.failures.put(remote, n, oldest, now)
	}
	if n < int64(cfg.AuthFailures) {
		return 0, nil
	}
	after := oldest.Add(cfg.AuthWindow).Sub(now)
	if after < time.Second {
		after = time.Second
	}
	return after, &core.Error{Kind: core.KindRateLimited, Code: "too_many_failures",
		Message: "too many failed sign-ins from this address; try again later"}
}

// AuthFailed counts a failed authentication from remote.
func (dir *Directory) AuthFailed(ctx context.Context, remote string) {
	cfg := dir.identity()
	now := time.Now().UTC()
	_ = dir.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.AddAuthFailure(ctx, remote, now); err != nil {
			return err
		}
		// Keep the table small: forget what left every window.
		return tx.DeleteAuthFailuresBefore(ctx, now.Add(-2*cfg.AuthWindow))
	})
	// This replica's next request from remote counts exactly again.
	dir.failures.forget(remote)
}

// failureCounts keeps each remote address's count of failed sign-ins
// (AuthFailuresSince) for failuresFresh. AuthThrottle runs before every
// authenticated request, so without it every request paid one more read
// of the database, most from a few addresses (a reverse proxy, a busy
// client). A failure recorded here drops the address's entry, so on one
// replica the throttle counts exactly; another replica's failures count
// here at most failuresFresh late (the README's "Several replicas").
type failureCounts struct {
	mu sync.Mutex
	m  map[string]failureCount
}

type failureCount struct {
	n          int64
	oldest, at time.Time
}

const failuresFresh = 250 * time.Millisecond

// get is remote's count and oldest failure in the window, when read less
// than failuresFresh ago and not outdated by the window since.
func (f *failureCounts) get(remote string, now time.Time, window time.Duration) (int64, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.m[remote]
	if !ok || now.Sub(c.at) >= failuresFresh || (c.n > 0 && !c.oldest.Add(window).After(now)) {
		return 0, time.Time{}, false
	}
	return c.n, c.oldest, true
}

func (f *failureCounts) put(remote string, n int64, oldest, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil || len(f.m) >= 4096 { // what is stale suppresses no read
		f.m = map[string]failureCount{}
	}
	f.m[remote] = failureCount{n: n, oldest: oldest, at: now}
}

func (f *failureCounts) forget(remote string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, remote)
}

// TokenSpec is what an issuer asks for.
type TokenSpec struct {
	Name string
	// ExpiresIn: the token stops working this long after issue (0: never).
	ExpiresIn time.Duration
}

// TokenView is a token as admins see it (never its secret).
type TokenView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	// State is active, expired or revoked.
	State string `json:"state"`
}

// ListTokens lists a user's tokens, oldest first (admin, or the user).
func (dir *Directory) ListTokens(ctx context.Context, a core.Actor, userID string) ([]TokenView, error) {
	if !a.Admin && a.UserID != userID {
		return nil, core.NotFound("user")
	}
	if _, err := dir.store.GetUser(ctx, userID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, core.NotFound("user")
		}
		return nil, err
	}
	ts, err := dir.store.ListTokens(ctx, userID)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]TokenView, 0, len(ts))
	for _, t := range ts {
		v := TokenView{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt.UTC(), ExpiresAt: utc(t.ExpiresAt),
			LastUsedAt: utc(t.LastUsedAt), RevokedAt: utc(t.RevokedAt), State: "active"}
		switch {
		case t.RevokedAt != nil:
			v.State = "revoked"
		case t.ExpiresAt != nil && !t.ExpiresAt.After(now):
			v.State = "expired"
		}
		out = append(out, v)
	}
	return out, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// touchLog remembers when this process last queued a credential's
// last-used write.
type touchLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// claim says whether key's write is due at now (and records it): not when
// one was queued less than touchEvery ago.
func (l *touchLog) claim(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < touchEvery {
		return false
	}
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if len(l.last) >= 4096 { // forget what no longer suppresses anything
		for k, t := range l.last {
			if now.Sub(t) >= touchEvery {
				delete(l.last, k)
			}
		}
	}
	l.last[key] = now
	return true
}
