package controller

import (
	"context"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/directory"
	"github.com/convoice/convoice/controller/identity"
	"github.com/convoice/convoice/storage"
)

// Identity: web sessions, token lifetimes, provisioning by SCIM and LDAP
// (issue 16).
type (
	IdentityConfig = directory.IdentityConfig
	TokenSpec      = directory.TokenSpec
	TokenView      = directory.TokenView
	Person         = identity.Person
	IdentityUser   = identity.User
	SyncResult     = identity.SyncResult
	SyncChange     = identity.Change
	UserQuery      = storage.UserQuery
)

// Sources of provisioned people.
const (
	SourceSCIM = identity.SourceSCIM
	SourceLDAP = identity.SourceLDAP
)

// SessionPrefix starts every web session secret.
const SessionPrefix = directory.SessionPrefix

func (c *Controller) wireIdentity() {
	c.revs = core.NewRevocations()
	c.identity = identity.New(c.store, c.Directory, c.Audio, c.audit, c.revs, c.log)
}

// Revoked is closed at the next revocation of a token, session or person
// in this process (event streams re-check their sign-in then).
func (c *Controller) Revoked() <-chan struct{} { return c.revs.C() }

// Provisioning is the provisioner of people (SCIM, LDAP).
func (c *Controller) Provisioning() *identity.Identity { return c.identity }

// RevokeTokenAndTell revokes a token (Directory.RevokeToken) and tells
// this process's open streams.
func (c *Controller) RevokeTokenAndTell(ctx context.Context, a Actor, userID, tokenID string) error {
	if err := c.Directory.RevokeToken(ctx, a, userID, tokenID); err != nil {
		return err
	}
	c.revs.Revoked()
	return nil
}

// EndSessionAndTell signs a web session out (Directory.EndSession) and
// tells this process's open streams.
func (c *Controller) EndSessionAndTell(ctx context.Context, a Actor, secret string) error {
	if err := c.Directory.EndSession(ctx, a, secret); err != nil {
		return err
	}
	c.revs.Revoked()
	return nil
}

// Errors of a sign-in by an identity provider.
var (
	ErrUnknownPerson  = identity.ErrUnknownPerson
	ErrInactivePerson = identity.ErrInactivePerson
)
