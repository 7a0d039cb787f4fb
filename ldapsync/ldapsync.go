// Package ldapsync reads the people of an LDAP directory (Active
// Directory, OpenLDAP, …): one bind, one paged search, the attributes
// convoice needs. It knows LDAP, not convoice: cmd hands what it read to
// the controller, which decides what changes (controller/identity.Sync).
package ldapsync

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Config is where and how to read.
type Config struct {
	URL          string // ldap://host:389 or ldaps://host:636
	BindDN       string // empty: anonymous
	BindPassword string
	BaseDN       string
	Filter       string // e.g. (&(objectClass=inetOrgPerson)(mail=*))
	// Timeout bounds the connection and the search (default 30 s).
	Timeout time.Duration
	// StartTLS upgrades an ldap:// connection before binding.
	StartTLS bool
}

// Entry is one person as the directory has them.
type Entry struct {
	DN string
	// ID is the entry's stable id: entryUUID (OpenLDAP), objectGUID
	// (Active Directory, hex), else the DN.
	ID        string
	Mail      string
	Name      string // displayName, else cn
	Telephone string // telephoneNumber → label "work"
	Mobile    string // mobile → label "mobile"
}

var attributes = []string{"entryUUID", "objectGUID", "mail", "displayName", "cn", "telephoneNumber", "mobile"}

// Fetch reads every entry under BaseDN that matches Filter.
func Fetch(ctx context.Context, cfg Config) ([]Entry, error) {
	if cfg.URL == "" || cfg.BaseDN == "" {
		return nil, errors.New("ldap: URL and base DN are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Filter == "" {
		cfg.Filter = "(&(objectClass=inetOrgPerson)(mail=*))"
	}
	conn, err := ldap.DialURL(cfg.URL, ldap.DialWithDialer(&net.Dialer{Timeout: cfg.Timeout}))
	if err != nil {
		return nil, fmt.Errorf("ldap: connect %s: %w", cfg.URL, err)
	}
	defer conn.Close()
	conn.SetTimeout(cfg.Timeout)
	if cfg.StartTLS {
		host := strings.TrimPrefix(strings.TrimPrefix(cfg.URL, "ldap://"), "ldaps://")
		host, _, _ = strings.Cut(host, ":")
		if err := conn.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return nil, fmt.Errorf("ldap: StartTLS: %w", err)
		}
	}
	if cfg.BindDN != "" {
		if err := conn.Bind(cfg.BindDN, cfg.BindPassword); err != nil {
			return nil, fmt.Errorf("ldap: bind as %s: %w", cfg.BindDN, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req := ldap.NewSearchRequest(cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0,
		int(cfg.Timeout.Seconds()), false, cfg.Filter, attributes, nil)
	res, err := conn.SearchWithPaging(req, 500)
	if err != nil {
		return nil, fmt.Errorf("ldap: search %s %s: %w", cfg.BaseDN, cfg.Filter, err)
	}
	out := make([]Entry, 0, len(res.Entries))
	for _, e := range res.Entries {
		en := Entry{DN: e.DN, ID: e.GetAttributeValue("entryUUID"), Mail: e.GetAttributeValue("mail"),
			Name: e.GetAttributeValue("displayName"), Telephone: e.GetAttributeValue("telephoneNumber"),
			Mobile: e.GetAttributeValue("mobile")}
		if en.ID == "" {
			if g := e.GetRawAttributeValue("objectGUID"); len(g) > 0 {
				en.ID = fmt.Sprintf("%x", g)
			} else {
				en.ID = e.DN
			}
		}
		if en.Name == "" {
			en.Name = e.GetAttributeValue("cn")
		}
		out = append(out, en)
	}
	return out, nil
}
