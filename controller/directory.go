package controller

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/storage"
)

// Actor is who makes a request.
type Actor struct {
	UserID string // empty for the config admin token
	Admin  bool
	Name   string
}

// Authenticate resolves a bearer token. adminHash is the SHA-256 of the
// configured admin token ("" when the admin API is closed).
func (c *Controller) Authenticate(ctx context.Context, token, adminHash string) (Actor, error) {
	if token == "" {
		return Actor{}, &Error{Kind: KindUnauthorized, Code: "unauthorized", Message: "a bearer token is required"}
	}
	h := HashSecret(token)
	if adminHash != "" && subtle.ConstantTimeCompare([]byte(h), []byte(adminHash)) == 1 {
		return Actor{Admin: true, Name: "admin"}, nil
	}
	p, err := c.store.PrincipalByTokenHash(ctx, h)
	if errors.Is(err, storage.ErrNotFound) {
		return Actor{}, &Error{Kind: KindUnauthorized, Code: "unauthorized", Message: "the token is unknown or revoked"}
	}
	if err != nil {
		return Actor{}, err
	}
	return Actor{UserID: p.UserID, Admin: p.Role == storage.RoleAdmin, Name: p.DisplayName}, nil
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

func requireAdmin(a Actor) error {
	if !a.Admin {
		return forbidden("admin_only", "this needs the admin role")
	}
	return nil
}

// normalizeNumbers validates labels and numbers and picks the default: the
// one marked, else the first. Two defaults or a repeated label are errors.
func (c *Controller) normalizeNumbers(in []NumberInput) ([]storage.PublishedNumber, error) {
	out := make([]storage.PublishedNumber, 0, len(in))
	seen := map[string]bool{}
	defaults := 0
	for i, n := range in {
		field := "numbers[" + strconv.Itoa(i) + "]"
		label, err := checkLabel(field+".label", n.Label)
		if err != nil {
			return nil, err
		}
		if seen[label] {
			return nil, invalid(field+".label", "%s.label: %q is used twice", field, label)
		}
		seen[label] = true
		e164, err := c.numbers.Normalize(field+".number", n.Number)
		if err != nil {
			return nil, err
		}
		if n.Default {
			defaults++
		}
		out = append(out, storage.PublishedNumber{Label: label, Number: e164, IsDefault: n.Default})
	}
	if defaults > 1 {
		return nil, invalid("numbers", "numbers: only one number can be the default")
	}
	if defaults == 0 && len(out) > 0 {
		out[0].IsDefault = true
	}
	return out, nil
}

// CreateUser adds a person to the directory (admin).
func (c *Controller) CreateUser(ctx context.Context, a Actor, in NewUser) (UserView, error) {
	if err := requireAdmin(a); err != nil {
		return UserView{}, err
	}
	name := strings.TrimSpace(in.DisplayName)
	if name == "" || len(name) > 200 {
		return UserView{}, invalid("display_name", "display_name: required, at most 200 characters")
	}
	addr, err := mail.ParseAddress(strings.TrimSpace(in.Email))
	if err != nil || addr.Name != "" {
		return UserView{}, invalid("email", "email: %q is not an e-mail address", in.Email)
	}
	role := in.Role
	if role == "" {
		role = storage.RoleUser
	}
	if role != storage.RoleUser && role != storage.RoleAdmin {
		return UserView{}, invalid("role", "role: must be user or admin")
	}
	nums, err := c.normalizeNumbers(in.Numbers)
	if err != nil {
		return UserView{}, err
	}
	u := &storage.User{ID: NewID(), DisplayName: name, Email: strings.ToLower(addr.Address), Role: role, CreatedAt: time.Now().UTC()}
	for i := range nums {
		nums[i].Position = i
	}
	u.Numbers = nums
	if err := c.store.CreateUser(ctx, u); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return UserView{}, conflict("email_taken", "a user with e-mail %s already exists", u.Email)
		}
		return UserView{}, err
	}
	c.Audit(ctx, AuditEntry{Actor: a, Action: ActionUserCreate, TargetID: u.ID, Detail: "role " + role})
	return userView(u), nil
}

// ListUsers lists the directory (admin).
func (c *Controller) ListUsers(ctx context.Context, a Actor) ([]UserView, error) {
	if err := requireAdmin(a); err != nil {
		return nil, err
	}
	us, err := c.store.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]UserView, 0, len(us))
	for i := range us {
		out = append(out, userView(&us[i]))
	}
	return out, nil
}

// IssuedToken is a new token; the secret is shown once.
type IssuedToken struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// IssueToken makes a new API token for a user (admin, or the user).
func (c *Controller) IssueToken(ctx context.Context, a Actor, userID, name string) (IssuedToken, error) {
	if !a.Admin && a.UserID != userID {
		return IssuedToken{}, notFoundErr("user")
	}
	if _, err := c.store.GetUser(ctx, userID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return IssuedToken{}, notFoundErr("user")
		}
		return IssuedToken{}, err
	}
	secret := NewSecret()
	t := &storage.APIToken{ID: NewID(), UserID: userID, Hash: HashSecret(secret), Name: name, CreatedAt: time.Now().UTC()}
	if err := c.store.CreateToken(ctx, t); err != nil {
		return IssuedToken{}, err
	}
	c.Audit(ctx, AuditEntry{Actor: a, Action: ActionTokenIssue, TargetID: t.ID, Detail: "for user " + userID})
	return IssuedToken{ID: t.ID, Token: secret}, nil
}

// RevokeToken revokes a user's token (admin, or the user).
func (c *Controller) RevokeToken(ctx context.Context, a Actor, userID, tokenID string) error {
	if !a.Admin && a.UserID != userID {
		return notFoundErr("token")
	}
	if err := c.store.RevokeToken(ctx, userID, tokenID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return notFoundErr("token")
		}
		return err
	}
	c.Audit(ctx, AuditEntry{Actor: a, Action: ActionTokenRevoke, TargetID: tokenID, Detail: "of user " + userID})
	return nil
}

func requireUser(a Actor) error {
	if a.UserID == "" {
		return forbidden("user_only", "this needs a user's token, not the admin token")
	}
	return nil
}

// Me returns the caller with numbers and contacts.
func (c *Controller) Me(ctx context.Context, a Actor) (MeView, error) {
	if err := requireUser(a); err != nil {
		return MeView{}, err
	}
	u, err := c.store.GetUser(ctx, a.UserID)
	if err != nil {
		return MeView{}, err
	}
	v := MeView{UserView: userView(u)}
	cs, err := c.store.Contacts(ctx, a.UserID)
	if err != nil {
		return MeView{}, err
	}
	v.Contacts = make([]ContactView, 0, len(cs))
	for _, cu := range cs {
		v.Contacts = append(v.Contacts, ContactView{ID: cu.ID, DisplayName: cu.DisplayName, Email: cu.Email})
	}
	return v, nil
}

// SetNumbers replaces the caller's published numbers.
func (c *Controller) SetNumbers(ctx context.Context, a Actor, in []NumberInput) (MeView, error) {
	if err := requireUser(a); err != nil {
		return MeView{}, err
	}
	nums, err := c.normalizeNumbers(in)
	if err != nil {
		return MeView{}, err
	}
	if err := c.store.InTx(ctx, func(tx *storage.Store) error {
		return tx.ReplaceNumbers(ctx, a.UserID, nums)
	}); err != nil {
		return MeView{}, err
	}
	return c.Me(ctx, a)
}

// SetContacts replaces the caller's contact list.
func (c *Controller) SetContacts(ctx context.Context, a Actor, ids []string) (MeView, error) {
	if err := requireUser(a); err != nil {
		return MeView{}, err
	}
	uniq := dedupe(ids)
	for i, id := range uniq {
		if id == a.UserID {
			return MeView{}, invalid("user_ids", "user_ids[%d]: you cannot be your own contact", i)
		}
	}
	us, err := c.store.GetUsers(ctx, uniq)
	if err != nil {
		return MeView{}, err
	}
	if len(us) != len(uniq) {
		return MeView{}, invalid("user_ids", "user_ids: %s", missingIDs(uniq, us))
	}
	if err := c.store.InTx(ctx, func(tx *storage.Store) error {
		return tx.ReplaceContacts(ctx, a.UserID, uniq)
	}); err != nil {
		return MeView{}, err
	}
	return c.Me(ctx, a)
}

func dedupe(ids []string) []string {
	seen := map[string]bool{}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		id = strings.TrimSpace(id)
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

func missingIDs(want []string, got []storage.User) string {
	have := map[string]bool{}
	for _, u := range got {
		have[u.ID] = true
	}
	var miss []string
	for _, id := range want {
		if !have[id] {
			miss = append(miss, id)
		}
	}
	return "unknown user id(s): " + strings.Join(miss, ", ")
}
