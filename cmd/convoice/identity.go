package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/controller"
)

// identityConfig is sign-in and provisioning (README, "Enterprise sign-in
// and directory"): environment only, since most of it is secret or
// belongs with the secrets.
type identityConfig struct {
	API    api.IdentityConfig
	Limits controller.IdentityConfig
	LDAP   ldapConfig
}

// ldapConfig is the LDAP directory sync (CONVOICE_LDAP_*).
type ldapConfig struct {
	URL, BindDN, BindPassword, BaseDN, Filter string
	Interval                                  time.Duration
}

func durationEnv(name, def string, min time.Duration) (time.Duration, error) {
	v := env(name, def)
	d, err := time.ParseDuration(v)
	if err != nil || d < min {
		return 0, fmt.Errorf("%s %q: want a duration of at least %s", name, v, min)
	}
	return d, nil
}

func identityFromEnv() (identityConfig, error) {
	var c identityConfig
	var err error
	o := &c.API.OIDC
	o.Issuer = env("CONVOICE_OIDC_ISSUER", "")
	o.ClientID = env("CONVOICE_OIDC_CLIENT_ID", "")
	if o.ClientSecret, err = secret("CONVOICE_OIDC_CLIENT_SECRET"); err != nil {
		return c, err
	}
	o.Scopes = strings.Fields(strings.ReplaceAll(env("CONVOICE_OIDC_SCOPES", "openid email profile"), ",", " "))
	o.Claim = env("CONVOICE_OIDC_CLAIM", "email")
	o.Name = env("CONVOICE_OIDC_NAME", "single sign-on")
	o.RedirectURL = env("CONVOICE_OIDC_REDIRECT_URL", "")
	if o.Issuer != "" && o.ClientID == "" {
		return c, fmt.Errorf("CONVOICE_OIDC_ISSUER is set but CONVOICE_OIDC_CLIENT_ID is not")
	}
	if o.Issuer != "" && !strings.HasPrefix(o.Issuer, "https://") && !strings.HasPrefix(o.Issuer, "http://127.0.0.1") && !strings.HasPrefix(o.Issuer, "http://localhost") {
		return c, fmt.Errorf("CONVOICE_OIDC_ISSUER %q: want an https:// URL", o.Issuer)
	}
	scim, err := secret("CONVOICE_SCIM_TOKEN")
	if err != nil {
		return c, err
	}
	if scim != "" {
		if len(scim) < 16 {
			return c, fmt.Errorf("CONVOICE_SCIM_TOKEN: want at least 16 characters")
		}
		c.API.SCIMTokenHash = controller.HashSecret(scim)
	}
	if c.Limits.SessionIdle, err = durationEnv("CONVOICE_SESSION_IDLE", "8h", time.Minute); err != nil {
		return c, err
	}
	if c.Limits.SessionMax, err = durationEnv("CONVOICE_SESSION_MAX", "168h", time.Minute); err != nil {
		return c, err
	}
	if c.Limits.AuthWindow, err = durationEnv("CONVOICE_AUTH_FAILURE_WINDOW", "5m", time.Second); err != nil {
		return c, err
	}
	if v := env("CONVOICE_AUTH_FAILURE_LIMIT", "20"); v != "" {
		if c.Limits.AuthFailures, err = strconv.Atoi(v); err != nil || c.Limits.AuthFailures < 1 {
			return c, fmt.Errorf("CONVOICE_AUTH_FAILURE_LIMIT %q: want a positive whole number", v)
		}
	}
	l := &c.LDAP
	l.URL = env("CONVOICE_LDAP_URL", "")
	l.BindDN = env("CONVOICE_LDAP_BIND_DN", "")
	if l.BindPassword, err = secret("CONVOICE_LDAP_BIND_PASSWORD"); err != nil {
		return c, err
	}
	l.BaseDN = env("CONVOICE_LDAP_BASE_DN", "")
	l.Filter = env("CONVOICE_LDAP_FILTER", "(&(objectClass=inetOrgPerson)(mail=*))")
	if l.Interval, err = durationEnv("CONVOICE_LDAP_INTERVAL", "15m", time.Second); err != nil {
		return c, err
	}
	if l.URL != "" && l.BaseDN == "" {
		return c, fmt.Errorf("CONVOICE_LDAP_URL is set but CONVOICE_LDAP_BASE_DN is not")
	}
	return c, nil
}
