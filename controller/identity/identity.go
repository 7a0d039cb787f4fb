// Package identity provisions people from an identity system — SCIM 2.0
// (Entra ID, Okta, …) pushing, or an LDAP directory pulled — and carries
// out what a deactivation means: their tokens and sessions are revoked,
// their open event streams close, and their live calls are hung up through
// the audio part's hang-up path. Nothing else of theirs is removed: their
// messages and their place in conversations stay.
package identity

import (
	"context"
	"errors"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/audio"
	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/directory"
	"github.com/convoice/convoice/storage"
)

// Sources of provisioned people.
const (
	SourceSCIM = "scim"
	SourceLDAP = "ldap"
)

// Audit actions of provisioning.
const (
	ActionProvisionCreate     = "user.provision.create"
	ActionProvisionUpdate     = "user.provision.update"
	ActionProvisionDeactivate = "user.provision.deactivate"
	ActionProvisionActivate   = "user.provision.activate"
	ActionProvisionRemove     = "user.provision.remove"
)

// Person is a person as an identity system describes them.
type Person struct {
	ExternalID  string
	Email       string // SCIM userName / emails; LDAP mail
	DisplayName string
	// Numbers are the published numbers, labels work, mobile, home, other;
	// the one marked Default (else the first) is the default.
	Numbers []directory.NumberInput
	Active  bool
}

// User is a provisioned person as stored.
type User struct {
	ID          string
	ExternalID  string
	Email       string
	DisplayName string
	Numbers     []directory.NumberView
	Active      bool
	Source      string
	CreatedAt   time.Time
}

// Identity provisions people.
type Identity struct {
	store *storage.Store
	dir   *directory.Directory
	audio *audio.Audio
	audit *audit.Log
	revs  *core.Revocations
	log   *slog.Logger
}

// New makes the provisioner; revs is told of every deactivation so open
// event streams of this process re-check their sign-in at once.
func New(store *storage.Store, dir *directory.Directory, au *audio.Audio, trail *audit.Log, revs *core.Revocations, lg *slog.Logger) *Identity {
	return &Identity{store: store, dir: dir, audio: au, audit: trail, revs: revs, log: lg}
}

func actorOf(source string) core.Actor {
	return core.Actor{Admin: true, Name: source + " provisioning"}
}

func userOf(u *storage.User) User {
	out := User{ID: u.ID, ExternalID: u.ExternalID, Email: u.Email, DisplayName: u.DisplayName, Source: u.Source,
		Active: u.DeactivatedAt == nil, CreatedAt: u.CreatedAt, Numbers: []directory.NumberView{}}
	for _, n := range u.Numbers {
		out.Numbers = append(out.Numbers, directory.NumberView{Label: n.Label, Number: n.Number, Default: n.IsDefault})
	}
	return out
}

// check validates and normalises p: an e-mail address, a name (the
// address when none), numbers in E.164.
func (id *Identity) check(p Person) (Person, []storage.PublishedNumber, error) {
	addr, err := mail.ParseAddress(strings.TrimSpace(p.Email))
	if err != nil || addr.Name != "" {
		return p, nil, core.Invalid("userName", "userName: %q is not an e-mail address", p.Email)
	}
	p.Email = strings.ToLower(addr.Address)
	p.DisplayName = strings.TrimSpace(p.DisplayName)
	if p.DisplayName == "" {
		p.DisplayName = p.Email
	}
	if len(p.DisplayName) > 200 {
		return p, nil, core.Invalid("displayName", "displayName: at most 200 characters")
	}
	nums, err := id.dir.NormalizeNumbers(p.Numbers)
	if err != nil {
		return p, nil, err
	}
	return p, nums, nil
}

// Get returns a provisioned (or hand-made) person that is not removed.
func (id *Identity) Get(ctx context.Context, userID string) (User, error) {
	u, err := id.store.GetUserFull(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.RemovedAt != nil) {
		return User{}, core.NotFound("user")
	}
	if err != nil {
		return User{}, err
	}
	return userOf(u), nil
}

// Find lists the people matching q (removed ones never).
func (id *Identity) Find(ctx context.Context, q storage.UserQuery) ([]User, error) {
	q.WithRemoved = false
	us, err := id.store.FindUsers(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]User, 0, len(us))
	for i := range us {
		out = append(out, userOf(&us[i]))
	}
	return out, nil
}

// Create provisions a new person. An e-mail address in use answers
// conflict, unless its person was removed by a provisioner: then they come
// back (same id, so their history is theirs again).
func (id *Identity) Create(ctx context.Context, source string, p Person) (User, error) {
	p, nums, err := id.check(p)
	if err != nil {
		return User{}, err
	}
	ex, err := id.store.FindUsers(ctx, storage.UserQuery{Email: p.Email, WithRemoved: true})
	if err != nil {
		return User{}, err
	}
	if len(ex) > 0 {
		if ex[0].RemovedAt == nil {
			return User{}, core.Conflict("email_taken", "a user with e-mail %s already exists", p.Email)
		}
		ex[0].RemovedAt = nil
		return id.apply(ctx, source, &ex[0], p, nums)
	}
	now := time.Now().UTC()
	u := &storage.User{ID: core.NewID(), DisplayName: p.DisplayName, Email: p.Email, Role: storage.RoleUser, CreatedAt: now,
		Source: source, ExternalID: p.ExternalID, Numbers: nums}
	if !p.Active {
		u.DeactivatedAt = &now
	}
	if err := id.store.InTx(ctx, func(tx *storage.Store) error { return tx.CreateUser(ctx, u) }); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return User{}, core.Conflict("email_taken", "a user with e-mail %s already exists", p.Email)
		}
		return User{}, err
	}
	id.audit.Add(ctx, audit.Entry{Actor: actorOf(source), Action: ActionProvisionCreate, TargetID: u.ID, Detail: source})
	return userOf(u), nil
}

// Replace sets everything of a person to p (SCIM PUT, PATCH, LDAP sync).
func (id *Identity) Replace(ctx context.Context, source, userID string, p Person) (User, error) {
	u, err := id.store.GetUserFull(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.RemovedAt != nil) {
		return User{}, core.NotFound("user")
	}
	if err != nil {
		return User{}, err
	}
	p, nums, err := id.check(p)
	if err != nil {
		return User{}, err
	}
	return id.apply(ctx, source, u, p, nums)
}

// Remove takes a person out of the provisioned directory (SCIM DELETE):
// deactivated, and no longer listed; their messages stay.
func (id *Identity) Remove(ctx context.Context, source, userID string) error {
	u, err := id.store.GetUserFull(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.RemovedAt != nil) {
		return core.NotFound("user")
	}
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	wasActive := u.DeactivatedAt == nil
	if wasActive {
		u.DeactivatedAt = &now
	}
	u.RemovedAt = &now
	if err := id.save(ctx, u, nil, wasActive); err != nil {
		return err
	}
	id.audit.Add(ctx, audit.Entry{Actor: actorOf(source), Action: ActionProvisionRemove, TargetID: u.ID, Detail: source})
	if wasActive {
		id.afterDeactivation(ctx, source, u)
	}
	return nil
}

// apply writes p over u and carries out a change of activity.
func (id *Identity) apply(ctx context.Context, source string, u *storage.User, p Person, nums []storage.PublishedNumber) (User, error) {
	wasActive := u.DeactivatedAt == nil && u.RemovedAt == nil
	u.DisplayName, u.Email = p.DisplayName, p.Email
	if p.ExternalID != "" {
		u.ExternalID = p.ExternalID
	}
	u.Source = source
	now := time.Now().UTC()
	switch {
	case p.Active && u.DeactivatedAt != nil:
		u.DeactivatedAt = nil
	case !p.Active && u.DeactivatedAt == nil:
		u.DeactivatedAt = &now
	}
	deactivated := wasActive && u.DeactivatedAt != nil
	if err := id.save(ctx, u, nums, deactivated); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return User{}, core.Conflict("email_taken", "a user with e-mail %s already exists", p.Email)
		}
		return User{}, err
	}
	u.Numbers = nums
	action := ActionProvisionUpdate
	switch {
	case deactivated:
		action = ActionProvisionDeactivate
	case !wasActive && u.DeactivatedAt == nil:
		action = ActionProvisionActivate
	}
	id.audit.Add(ctx, audit.Entry{Actor: actorOf(source), Action: action, TargetID: u.ID, Detail: source})
	if deactivated {
		id.afterDeactivation(ctx, source, u)
	}
	return userOf(u), nil
}

// save stores u (and its numbers when nums is not nil) in one
// transaction; revoke also revokes every token and session of u in it.
func (id *Identity) save(ctx context.Context, u *storage.User, nums []storage.PublishedNumber, revoke bool) error {
	return id.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.UpdateUserIdentity(ctx, u); err != nil {
			return err
		}
		if nums != nil {
			if err := tx.ReplaceNumbers(ctx, u.ID, nums); err != nil {
				return err
			}
		}
		if revoke {
			if _, err := id.dir.RevokeCredentials(ctx, tx, u.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

// afterDeactivation closes the person's event streams (this replica at
// once; others at their next check of the store) and hangs up their live
// calls through the audio part, as an admin would.
func (id *Identity) afterDeactivation(ctx context.Context, source string, u *storage.User) {
	id.revs.Revoked()
	legs, err := id.store.LiveLegsOfUser(ctx, u.ID)
	if err != nil {
		id.log.Warn("deactivated person: their calls could not be listed", "user", u.ID, "err", err)
		return
	}
	a := actorOf(source)
	a.Name = source + " provisioning (" + u.DisplayName + " deactivated)"
	for _, l := range legs {
		if err := id.audio.HangupLeg(ctx, a, l.ID); err != nil {
			if ce, ok := core.AsError(err); ok && ce.Code == "leg_not_live" {
				continue
			}
			id.log.Warn("deactivated person: a call could not be hung up", "user", u.ID, "leg", l.ID, "err", err)
		}
	}
}

// Errors of a sign-in by an identity provider.
var (
	ErrUnknownPerson  = errors.New("no person in convoice has this identity")
	ErrInactivePerson = errors.New("this person is deactivated in convoice")
)

// SignInSubject finds the active person a provider's claim names: an
// e-mail address (the default claim), else an external id. Unknown and
// deactivated people are refused.
func (id *Identity) SignInSubject(ctx context.Context, value string) (string, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return "", ErrUnknownPerson
	}
	var us []storage.User
	var err error
	if strings.Contains(value, "@") {
		us, err = id.store.FindUsers(ctx, storage.UserQuery{Email: value})
	}
	if err == nil && len(us) == 0 {
		us, err = id.store.FindUsers(ctx, storage.UserQuery{ExternalID: value})
	}
	if err != nil {
		return "", err
	}
	if len(us) == 0 {
		return "", ErrUnknownPerson
	}
	if us[0].DeactivatedAt != nil {
		return "", ErrInactivePerson
	}
	return us[0].ID, nil
}
