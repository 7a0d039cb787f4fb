package directory

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/storage"
)

// Directory is the people: users, their published numbers and contacts,
// and the API tokens that authenticate them.
type Directory struct {
	store   *storage.Store
	numbers policy.Numbers
	audit   *audit.Log
	idcfg   IdentityConfig // identity.go
	touches touchLog       // identity.go
	// failures are the sign-in failures counted lately, by address
	// (identity.go).
	failures failureCounts
}

// New makes the directory over store; numbers normalises published
// numbers, and user and token changes are recorded in trail.
func New(store *storage.Store, numbers policy.Numbers, trail *audit.Log) *Directory {
	return &Directory{store: store, numbers: numbers, audit: trail}
}

// Authenticate resolves a bearer token. adminHash is the SHA-256 of the
// configured admin token ("" when the admin API is closed).
func (dir *Directory) Authenticate(ctx context.Context, token, adminHash string) (core.Actor, error) {
	if token == "" {
		return core.Actor{}, &core.Error{Kind: core.KindUnauthorized, Code: "unauthorized", Message: "a bearer token is required"}
	}
	h := core.HashSecret(token)
	if adminHash != "" && subtle.ConstantTimeCompare([]byte(h), []byte(adminHash)) == 1 {
		return core.Actor{Admin: true, Name: "admin"}, nil
	}
	now := time.Now().UTC()
	p, err := dir.store.PrincipalByTokenHash(ctx, h, now)
	if errors.Is(err, storage.ErrNotFound) {
		return core.Actor{}, errUnknownToken()
	}
	if err != nil {
		return core.Actor{}, err
	}
	if p.LastUsed == nil || now.Sub(*p.LastUsed) > touchEvery {
		dir.touch(ctx, "token:"+p.CredentialID, now, func(ctx context.Context, tx *storage.Store) error { return tx.TouchToken(ctx, p.CredentialID, now) })
	}
	return core.Actor{UserID: p.UserID, Admin: p.Role == storage.RoleAdmin, Name: p.DisplayName}, nil
}

// NumberInput is a published number as given by a client.
type NumberInput struct {
	Label   string `json:"label"`
	Number  string `json:"number"`
	Default bool   `json:"default"`
}

// NewUser is what an admin gives to create a user.
type NewUser struct {
	DisplayName string        `json:"display_name"`
	Email       string        `json:"email"`
	Role        string        `json:"role"`
	Numbers     []NumberInput `json:"numbers"`
}

// NormalizeNumbers validates labels and numbers and picks the default
// (for provisioning: SCIM, LDAP).
func (dir *Directory) NormalizeNumbers(in []NumberInput) ([]storage.PublishedNumber, error) {
	return dir.normalizeNumbers(in)
}

// normalizeNumbers validates labels and numbers and picks the default: the
// one marked, else the first. Two defaults or a repeated label are errors.
func (dir *Directory) normalizeNumbers(in []NumberInput) ([]storage.PublishedNumber, error) {
	out := make([]storage.PublishedNumber, 0, len(in))
	seen := map[string]bool{}
	defaults := 0
	for i, n := range in {
		field := "numbers[" + strconv.Itoa(i) + "]"
		label, err := policy.CheckLabel(field+".label", n.Label)
		if err != nil {
			return nil, err
		}
		if seen[label] {
			return nil, core.Invalid(field+".label", "%s.label: %q is used twice", field, label)
		}
		seen[label] = true
		e164, err := dir.numbers.Normalize(field+".number", n.Number)
		if err != nil {
			return nil, err
		}
		if n.Default {
			defaults++
		}
		out = append(out, storage.PublishedNumber{Label: label, Number: e164, IsDefault: n.Default})
	}
	if defaults > 1 {
		return nil, core.Invalid("numbers", "numbers: only one number can be the default")
	}
	if defaults == 0 && len(out) > 0 {
		out[0].IsDefault = true
	}
	return out, nil
}

// CreateUser adds a person to the directory (admin).
func (dir *Directory) CreateUser(ctx context.Context, a core.Actor, in NewUser) (UserView, error) {
	if err := core.RequireAdmin(a); err != nil {
		return UserView{}, err
	}
	name, err := core.Name("display_name", in.DisplayName)
	if err != nil {
		return UserView{}, err
	}
	addr, err := mail.ParseAddress(strings.TrimSpace(in.Email))
	if err != nil || addr.Name != "" {
		return UserView{}, core.Invalid("email", "email: %q is not an e-mail address", in.Email)
	}
	role := in.Role
	if role == "" {
		role = storage.RoleUser
	}
	if role != storage.RoleUser && role != storage.RoleAdmin {
		return UserView{}, core.Invalid("role", "role: must be user or admin")
	}
	nums, err := dir.normalizeNumbers(in.Numbers)
	if err != nil {
		return UserView{}, err
	}
	u := &storage.User{ID: core.NewID(), DisplayName: name, Email: strings.ToLower(addr.Address), Role: role, CreatedAt: time.Now().UTC()}
	for i := range nums {
		nums[i].Position = i
	}
	u.Numbers = nums
	if err := dir.store.CreateUser(ctx, u); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return UserView{}, core.Conflict("email_taken", "a user with e-mail %s already exists", u.Email)
		}
		return UserView{}, err
	}
	dir.audit.Add(ctx, audit.Entry{Actor: a, Action: audit.ActionUserCreate, TargetID: u.ID, Detail: "role " + role})
	return viewOfUser(u), nil
}

// ListUsers lists the directory (admin).
func (dir *Directory) ListUsers(ctx context.Context, a core.Actor) ([]UserView, error) {
	if err := core.RequireAdmin(a); err != nil {
		return nil, err
	}
	us, err := dir.store.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]UserView, 0, len(us))
	for i := range us {
		out = append(out, viewOfUser(&us[i]))
	}
	return out, nil
}

// IssuedToken is a new token; the secret is shown once.
type IssuedToken struct {
	ID        string     `json:"id"`
	Token     string     `json:"token"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// IssueToken makes a new API token for a user (admin, or the user) that
// does not expire.
func (dir *Directory) IssueToken(ctx context.Context, a core.Actor, userID, name string) (IssuedToken, error) {
	return dir.IssueTokenSpec(ctx, a, userID, TokenSpec{Name: name})
}

// IssueTokenSpec makes a new API token for a user (admin, or the user),
// expiring when spec says. A deactivated person gets none.
func (dir *Directory) IssueTokenSpec(ctx context.Context, a core.Actor, userID string, spec TokenSpec) (IssuedToken, error) {
	if !a.Admin && a.UserID != userID {
		return IssuedToken{}, core.NotFound("user")
	}
	u, err := dir.store.GetUserFull(ctx, userID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return IssuedToken{}, core.NotFound("user")
		}
		return IssuedToken{}, err
	}
	if u.DeactivatedAt != nil || u.RemovedAt != nil {
		return IssuedToken{}, core.Conflict("user_inactive", "%s is deactivated; activate them before issuing a token", u.DisplayName)
	}
	if spec.ExpiresIn < 0 {
		return IssuedToken{}, core.Invalid("expires_in_s", "expires_in_s: must be positive (or left out for a token that does not expire)")
	}
	secret := core.NewSecret()
	now := time.Now().UTC()
	t := &storage.APIToken{ID: core.NewID(), UserID: userID, Hash: core.HashSecret(secret), Name: spec.Name, CreatedAt: now}
	if spec.ExpiresIn > 0 {
		exp := now.Add(spec.ExpiresIn)
		t.ExpiresAt = &exp
	}
	if err := dir.store.CreateToken(ctx, t); err != nil {
		return IssuedToken{}, err
	}
	dir.audit.Add(ctx, audit.Entry{Actor: a, Action: audit.ActionTokenIssue, TargetID: t.ID, Detail: "for user " + userID})
	return IssuedToken{ID: t.ID, Token: secret, ExpiresAt: t.ExpiresAt}, nil
}

// RevokeToken revokes a user's token (admin, or the user).
func (dir *Directory) RevokeToken(ctx context.Context, a core.Actor, userID, tokenID string) error {
	if !a.Admin && a.UserID != userID {
		return core.NotFound("token")
	}
	if err := dir.store.RevokeToken(ctx, userID, tokenID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return core.NotFound("token")
		}
		return err
	}
	dir.audit.Add(ctx, audit.Entry{Actor: a, Action: audit.ActionTokenRevoke, TargetID: tokenID, Detail: "of user " + userID})
	return nil
}

// Me returns the caller with numbers and contacts.
func (dir *Directory) Me(ctx context.Context, a core.Actor) (MeView, error) {
	if err := core.RequireUser(a); err != nil {
		return MeView{}, err
	}
	u, err := dir.store.GetUser(ctx, a.UserID)
	if err != nil {
		return MeView{}, err
	}
	v := MeView{UserView: viewOfUser(u)}
	cs, err := dir.store.Contacts(ctx, a.UserID)
	if err != nil {
		return MeView{}, err
	}
	// A contact's e-mail address is shown only once you have been in a
	// conversation together: putting any user id on your list must not
	// reveal who that is beyond their name.
	ids := make([]string, len(cs))
	for i := range cs {
		ids[i] = cs[i].ID
	}
	met, err := dir.store.MetUsers(ctx, a.UserID, ids)
	if err != nil {
		return MeView{}, err
	}
	v.Contacts = make([]ContactView, 0, len(cs))
	for _, cu := range cs {
		c := ContactView{ID: cu.ID, DisplayName: cu.DisplayName}
		if met[cu.ID] {
			c.Email = cu.Email
		}
		v.Contacts = append(v.Contacts, c)
	}
	return v, nil
}

// SetNumbers replaces the caller's published numbers.
func (dir *Directory) SetNumbers(ctx context.Context, a core.Actor, in []NumberInput) (MeView, error) {
	if err := core.RequireUser(a); err != nil {
		return MeView{}, err
	}
	nums, err := dir.normalizeNumbers(in)
	if err != nil {
		return MeView{}, err
	}
	if err := dir.store.InTx(ctx, func(tx *storage.Store) error {
		return tx.ReplaceNumbers(ctx, a.UserID, nums)
	}); err != nil {
		return MeView{}, err
	}
	return dir.Me(ctx, a)
}

// SetContacts replaces the caller's contact list.
func (dir *Directory) SetContacts(ctx context.Context, a core.Actor, ids []string) (MeView, error) {
	if err := core.RequireUser(a); err != nil {
		return MeView{}, err
	}
	uniq := core.Dedupe(ids)
	for i, id := range uniq {
		if id == a.UserID {
			return MeView{}, core.Invalid("user_ids", "user_ids[%d]: you cannot be your own contact", i)
		}
	}
	us, err := dir.store.GetUsers(ctx, uniq)
	if err != nil {
		return MeView{}, err
	}
	if len(us) != len(uniq) {
		return MeView{}, core.Invalid("user_ids", "user_ids: %s", core.MissingIDs(uniq, us))
	}
	if err := dir.store.InTx(ctx, func(tx *storage.Store) error {
		return tx.ReplaceContacts(ctx, a.UserID, uniq)
	}); err != nil {
		return MeView{}, err
	}
	return dir.Me(ctx, a)
}
