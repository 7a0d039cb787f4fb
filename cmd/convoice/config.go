package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/api"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// config is everything convoice is told at start. Values come from the
// CONVOICE_* environment (API-CONTRACT.md), and flags mirror the
// non-secret ones. Secrets (admin token, ARI/ESL passwords) come only from
// the environment or a file named by *_FILE, never from flags, which any
// user of the machine can read in `ps`.
type config struct {
	Listen        string
	DB            string
	AdminToken    string
	PublicURL     string
	Region        string
	PBX           string // emulator | asterisk | freeswitch
	ARIURL        string
	ARIUser       string
	ARIPassword   string
	ARIApp        string
	DialRoutes    string
	ESLAddr       string
	ESLPassword   string
	PBXNodes      string
	Extensions    string
	CallerName    string
	CallerNum     string
	RingTimeout   time.Duration
	NodeLostAfter time.Duration
	// LeaseRegain: how long a PBX node's lease holder rides out a lost
	// database session before it gives the node up (PostgreSQL only).
	LeaseRegain    time.Duration
	TrustedProxies []*net.IPNet
	LogFormat      string
	LogLevel       string
	NoSeed         bool
	// IdempotencyRetention: how long Idempotency-Keys are kept.
	IdempotencyRetention time.Duration
	// Limits bound HTTP connections and event streams.
	Limits api.Limits
	// ARITLS is the TLS configuration for https ARI URLs (nil: system
	// roots): CONVOICE_ARI_CA_FILE, CONVOICE_ARI_CERT_FILE and
	// CONVOICE_ARI_KEY_FILE.
	ARITLS *tls.Config
	// MetricsToken protects /metrics; MetricsListen serves it on its own
	// address instead of the API's.
	MetricsToken  string
	MetricsListen string
	// Policy is the dial policy (CONVOICE_ALLOWED_COUNTRIES, …; env only).
	Policy controller.PolicyConfig
	// Identity is OIDC sign-in, SCIM, LDAP sync, session and auth-failure
	// limits (identity.go; env only).
	Identity identityConfig
	// Confirm is confirm-to-join (CONVOICE_CONFIRM_*; env only).
	Confirm controller.ConfirmConfig
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// secret reads NAME, or the file named by NAME_FILE (trailing newline
// trimmed).
func secret(name string) (string, error) {
	if v := os.Getenv(name); v != "" {
		return v, nil
	}
	if f := os.Getenv(name + "_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("%s_FILE: %w", name, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", nil
}

// loadConfig reads the environment, then flags in fs over it.
func loadConfig(fs *flag.FlagSet, args []string) (config, error) {
	var c config
	fs.StringVar(&c.Listen, "listen", env("CONVOICE_LISTEN", "127.0.0.1:8080"), "HTTP listen address (CONVOICE_LISTEN)")
	fs.StringVar(&c.DB, "db", env("CONVOICE_DB", "convoice.db"), "SQLite file or postgres:// DSN (CONVOICE_DB)")
	fs.StringVar(&c.PublicURL, "public-url", env("CONVOICE_PUBLIC_URL", ""), "base URL for join links (CONVOICE_PUBLIC_URL; default http://<listen>)")
	fs.StringVar(&c.Region, "region", env("CONVOICE_REGION", "US"), "default region for numbers without + (CONVOICE_REGION)")
	fs.StringVar(&c.PBX, "pbx", env("CONVOICE_PBX", "emulator"), "emulator, asterisk or freeswitch (CONVOICE_PBX)")
	fs.StringVar(&c.ARIURL, "ari-url", env("CONVOICE_ARI_URL", "http://127.0.0.1:8088/ari"), "Asterisk ARI base URL (CONVOICE_ARI_URL)")
	fs.StringVar(&c.ARIUser, "ari-user", env("CONVOICE_ARI_USER", ""), "ARI user (CONVOICE_ARI_USER)")
	fs.StringVar(&c.ARIApp, "ari-app", env("CONVOICE_ARI_APP", "convoice"), "Stasis application (CONVOICE_ARI_APP)")
	fs.StringVar(&c.DialRoutes, "dial-routes", env("CONVOICE_DIAL_ROUTES", pbx.DefaultRoutes), "pattern=template;… (CONVOICE_DIAL_ROUTES)")
	fs.StringVar(&c.ESLAddr, "esl-addr", env("CONVOICE_ESL_ADDR", "127.0.0.1:8021"), "FreeSWITCH event socket (CONVOICE_ESL_ADDR)")
	fs.StringVar(&c.PBXNodes, "pbx-nodes", env("CONVOICE_PBX_NODES", ""), "several PBX nodes (CONVOICE_PBX_NODES); passwords in it are better given by env")
	fs.StringVar(&c.Extensions, "extensions", env("CONVOICE_EXTENSIONS", ""), "regexp of internal extensions, e.g. ^[0-9]{4}$ (CONVOICE_EXTENSIONS)")
	fs.StringVar(&c.CallerName, "caller-id-name", env("CONVOICE_CALLER_ID_NAME", "convoice"), "caller id name shown to called phones (CONVOICE_CALLER_ID_NAME)")
	fs.StringVar(&c.CallerNum, "caller-id-number", env("CONVOICE_CALLER_ID_NUMBER", ""), "caller id number (CONVOICE_CALLER_ID_NUMBER)")
	ring := env("CONVOICE_RING_TIMEOUT", "30s")
	fs.StringVar(&ring, "ring-timeout", ring, "how long a phone rings before giving up (CONVOICE_RING_TIMEOUT)")
	// The long bound: until then an unreachable node's calls keep their
	// last known state (a partition of the control link ends no call);
	// a PBX restart is seen at once and does not wait for it.
	lost := env("CONVOICE_NODE_LOST_AFTER", "10m")
	fs.StringVar(&lost, "node-lost-after", lost, "a PBX node unreachable this long is given up and its calls ended; until then they keep their last known state (CONVOICE_NODE_LOST_AFTER)")
	regain := env("CONVOICE_LEASE_REGAIN", storage.DefaultLeaseRegain.String())
	fs.StringVar(&regain, "lease-regain", regain, "PostgreSQL: how long the replica holding a PBX node keeps it while its database session is lost, taking it again; set above your database's failover time (CONVOICE_LEASE_REGAIN)")
	fs.StringVar(&c.LogFormat, "log-format", env("CONVOICE_LOG_FORMAT", "text"), "json or text (CONVOICE_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", env("CONVOICE_LOG_LEVEL", "info"), "debug, info, warn, error (CONVOICE_LOG_LEVEL)")
	noSeed, _ := strconv.ParseBool(env("CONVOICE_NO_SEED", "false"))
	fs.BoolVar(&c.NoSeed, "no-seed", noSeed, "do not seed the demo directory on an empty database with the emulator (CONVOICE_NO_SEED)")
	keep := env("CONVOICE_IDEMPOTENCY_RETENTION", "24h")
	fs.StringVar(&keep, "idempotency-retention", keep, "how long an Idempotency-Key and its answer are kept (CONVOICE_IDEMPOTENCY_RETENTION)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", env("CONVOICE_METRICS_LISTEN", ""), "serve /metrics on this address only, not on the API's (CONVOICE_METRICS_LISTEN)")
	readTimeout := env("CONVOICE_HTTP_READ_TIMEOUT", "30s")
	idleTimeout := env("CONVOICE_HTTP_IDLE_TIMEOUT", "60s")
	counts := map[string]*int{"CONVOICE_MAX_CONNECTIONS": &c.Limits.MaxConnections,
		"CONVOICE_MAX_STREAMS_PER_PERSON":  &c.Limits.MaxStreamsPerPrincipal,
		"CONVOICE_MAX_STREAMS_PER_ADDRESS": &c.Limits.MaxStreamsPerAddress, "CONVOICE_MAX_STREAMS": &c.Limits.MaxStreams}
	proxies := env("CONVOICE_TRUSTED_PROXIES", "")
	fs.StringVar(&proxies, "trusted-proxies", proxies, "CIDRs of reverse proxies whose X-Forwarded-For is believed (CONVOICE_TRUSTED_PROXIES)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for _, p := range strings.Split(proxies, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		_, n, err := net.ParseCIDR(p)
		if err != nil {
			return c, fmt.Errorf("CONVOICE_TRUSTED_PROXIES: %q is not a CIDR like 10.0.0.0/8", p)
		}
		c.TrustedProxies = append(c.TrustedProxies, n)
	}
	var err error
	if c.RingTimeout, err = time.ParseDuration(ring); err != nil || c.RingTimeout < time.Second {
		return c, fmt.Errorf("ring timeout %q: want a duration of at least 1s", ring)
	}
	if c.NodeLostAfter, err = time.ParseDuration(lost); err != nil || c.NodeLostAfter < time.Second {
		return c, fmt.Errorf("CONVOICE_NODE_LOST_AFTER %q: want a duration of at least 1s", lost)
	}
	if c.LeaseRegain, err = time.ParseDuration(regain); err != nil || c.LeaseRegain < time.Second || c.LeaseRegain > 10*time.Minute {
		return c, fmt.Errorf("CONVOICE_LEASE_REGAIN %q: want a duration from 1s to 10m", regain)
	}
	if c.Limits.ReadTimeout, err = time.ParseDuration(readTimeout); err != nil || c.Limits.ReadTimeout < time.Second {
		return c, fmt.Errorf("CONVOICE_HTTP_READ_TIMEOUT %q: want a duration of at least 1s", readTimeout)
	}
	if c.Limits.IdleTimeout, err = time.ParseDuration(idleTimeout); err != nil || c.Limits.IdleTimeout < time.Second {
		return c, fmt.Errorf("CONVOICE_HTTP_IDLE_TIMEOUT %q: want a duration of at least 1s", idleTimeout)
	}
	for name, v := range counts {
		if s := env(name, ""); s != "" {
			if *v, err = strconv.Atoi(s); err != nil || *v < 1 {
				return c, fmt.Errorf("%s %q: want a whole number of at least 1", name, s)
			}
		}
	}
	if c.IdempotencyRetention, err = time.ParseDuration(keep); err != nil || c.IdempotencyRetention < time.Minute {
		return c, fmt.Errorf("CONVOICE_IDEMPOTENCY_RETENTION %q: want a duration of at least 1m", keep)
	}
	if c.ARITLS, err = ariTLS(env("CONVOICE_ARI_CA_FILE", ""), env("CONVOICE_ARI_CERT_FILE", ""), env("CONVOICE_ARI_KEY_FILE", "")); err != nil {
		return c, err
	}
	if c.MetricsToken, err = secret("CONVOICE_METRICS_TOKEN"); err != nil {
		return c, err
	}
	if c.AdminToken, err = secret("CONVOICE_ADMIN_TOKEN"); err != nil {
		return c, err
	}
	if c.ARIPassword, err = secret("CONVOICE_ARI_PASSWORD"); err != nil {
		return c, err
	}
	if c.ESLPassword, err = secret("CONVOICE_ESL_PASSWORD"); err != nil {
		return c, err
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://" + c.Listen
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	switch c.PBX {
	case "emulator", "asterisk", "freeswitch":
	default:
		return c, fmt.Errorf("CONVOICE_PBX %q: want emulator, asterisk or freeswitch", c.PBX)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return c, errors.New("--log-format: want json or text")
	}
	if os.Getenv("CONVOICE_DIAL_ROUTES") == "" && !flagSet(fs, "dial-routes") && c.PBX == "freeswitch" {
		// The contract's default routes are Asterisk dial strings; a
		// FreeSWITCH sends everything through its gateway to the PBX.
		c.DialRoutes = freeswitchDefaultRoutes
	}
	if _, err := pbx.ParseRoutes(c.DialRoutes); err != nil {
		return c, fmt.Errorf("CONVOICE_DIAL_ROUTES: %w", err)
	}
	if c.Extensions != "" {
		if _, err := regexp.Compile(c.Extensions); err != nil {
			return c, fmt.Errorf("CONVOICE_EXTENSIONS: %w", err)
		}
	}
	if c.Policy, err = policyFromEnv(); err != nil {
		return c, err
	}
	if c.Identity, err = identityFromEnv(); err != nil {
		return c, err
	}
	if c.Confirm, err = confirmFromEnv(); err != nil {
		return c, err
	}
	return c, nil
}

// policyFromEnv reads the dial policy. Unset variables keep the
// controller's defaults (README, "Dial policy").
func policyFromEnv() (controller.PolicyConfig, error) {
	var p controller.PolicyConfig
	var err error
	lists := []struct {
		name  string
		parse func(string) error
	}{
		{"CONVOICE_ALLOWED_COUNTRIES", func(v string) (err error) { p.AllowedCountries, err = controller.ParseCountries(v); return }},
		{"CONVOICE_GUEST_ALLOWED_COUNTRIES", func(v string) (err error) { p.GuestAllowedCountries, err = controller.ParseCountries(v); return }},
		{"CONVOICE_BLOCKED_NUMBER_TYPES", func(v string) (err error) { p.BlockedTypes, err = controller.ParseNumberTypes(v); return }},
		{"CONVOICE_GUEST_ALLOWED_NUMBER_TYPES", func(v string) (err error) { p.GuestAllowedTypes, err = controller.ParseNumberTypes(v); return }},
		{"CONVOICE_DIAL_ALLOW", func(v string) (err error) { p.AllowPrefixes, err = controller.ParsePrefixes(v); return }},
		{"CONVOICE_DIAL_DENY", func(v string) (err error) { p.DenyPrefixes, err = controller.ParsePrefixes(v); return }},
	}
	for _, l := range lists {
		if v := env(l.name, ""); v != "" {
			if err := l.parse(v); err != nil {
				return p, fmt.Errorf("%s: %w", l.name, err)
			}
		}
	}
	if v := env("CONVOICE_GUEST_EXTENSIONS", ""); v != "" {
		if p.GuestExtensions, err = strconv.ParseBool(v); err != nil {
			return p, fmt.Errorf("CONVOICE_GUEST_EXTENSIONS %q: want true or false", v)
		}
	}
	limits := []struct {
		name string
		dst  *int
	}{
		{"CONVOICE_MAX_CALLS_PER_USER", &p.MaxLiveLegsPerUser},
		{"CONVOICE_MAX_CALLS_PER_GUEST", &p.MaxLiveLegsPerGuest},
		{"CONVOICE_MAX_CALLS_PER_CONVERSATION", &p.MaxLiveLegsPerConversation},
		{"CONVOICE_MAX_CALLS", &p.MaxLiveLegs},
		{"CONVOICE_DIALS_PER_USER", &p.DialsPerUser},
		{"CONVOICE_DIALS_PER_GUEST", &p.DialsPerGuest},
		{"CONVOICE_DIALS_PER_CONVERSATION", &p.DialsPerConversation},
		{"CONVOICE_GUEST_DIALS_PER_CONVERSATION", &p.GuestDialsPerConversation},
		{"CONVOICE_DIALS_TOTAL", &p.DialsTotal},
		{"CONVOICE_GUEST_DIALS_PER_LINK_MAKER", &p.GuestDialsPerLinkMaker},
		{"CONVOICE_MAX_JOIN_LINKS_PER_USER", &p.MaxJoinLinksPerUser},
		{"CONVOICE_MAX_GUESTS_PER_LINK", &p.MaxGuestsPerLink},
		{"CONVOICE_DIALS_ACCOUNT_SHARE", &p.AccountSharePercent},
	}
	for _, l := range limits {
		v := env(l.name, "")
		switch {
		case v == "":
		case strings.EqualFold(v, "off"):
			*l.dst = controller.Unlimited
		default:
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return p, fmt.Errorf("%s %q: want a positive whole number, or off", l.name, v)
			}
			*l.dst = n
		}
	}
	if v := env("CONVOICE_DIAL_RATE_WINDOW", ""); v != "" {
		if p.Window, err = time.ParseDuration(v); err != nil || p.Window < time.Second {
			return p, fmt.Errorf("CONVOICE_DIAL_RATE_WINDOW %q: want a duration of at least 1s", v)
		}
	}
	return p, p.Check()
}

// nodeSpec is one entry of CONVOICE_PBX_NODES.
type nodeSpec struct {
	Name, Kind, Address, User, Password string
	Weight                              int
}

// parseNodes reads "name,kind,address,user,password,weight;…". An empty
// password field is looked up in CONVOICE_PBX_NODE_<NAME>_PASSWORD(_FILE).
func parseNodes(spec string) ([]nodeSpec, error) {
	var out []nodeSpec
	seen := map[string]bool{}
	for i, entry := range strings.Split(spec, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		f := strings.Split(entry, ",")
		if len(f) != 6 {
			return nil, fmt.Errorf("CONVOICE_PBX_NODES entry %d: want name,kind,address,user,password,weight", i+1)
		}
		n := nodeSpec{Name: strings.TrimSpace(f[0]), Kind: strings.TrimSpace(f[1]), Address: strings.TrimSpace(f[2]),
			User: strings.TrimSpace(f[3]), Password: f[4], Weight: 1}
		if n.Name == "" || seen[n.Name] {
			return nil, fmt.Errorf("CONVOICE_PBX_NODES entry %d: empty or repeated name", i+1)
		}
		seen[n.Name] = true
		if n.Kind != "asterisk" && n.Kind != "freeswitch" && n.Kind != "emulator" {
			return nil, fmt.Errorf("CONVOICE_PBX_NODES %s: kind %q: want asterisk or freeswitch", n.Name, n.Kind)
		}
		if w := strings.TrimSpace(f[5]); w != "" {
			v, err := strconv.Atoi(w)
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("CONVOICE_PBX_NODES %s: weight %q: want a positive whole number", n.Name, w)
			}
			n.Weight = v
		}
		if n.Password == "" {
			p, err := secret("CONVOICE_PBX_NODE_" + strings.ToUpper(n.Name) + "_PASSWORD")
			if err != nil {
				return nil, err
			}
			n.Password = p
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("CONVOICE_PBX_NODES: no nodes")
	}
	return out, nil
}

// freeswitchDefaultRoutes is the default CONVOICE_DIAL_ROUTES with
// CONVOICE_PBX=freeswitch: everything through the "pbx" gateway of
// freeswitch-conf/.
const freeswitchDefaultRoutes = `.*=sofia/gateway/pbx/{e164}`

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// ariTLS builds the TLS configuration towards Asterisk from a CA file (PEM:
// the CA that signed Asterisk's certificate, instead of the system roots)
// and a client certificate and key (PEM), each optional; nil when none is
// given.
func ariTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CONVOICE_ARI_CA_FILE: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CONVOICE_ARI_CA_FILE %s: no PEM certificate in it", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("CONVOICE_ARI_CERT_FILE and CONVOICE_ARI_KEY_FILE go together: set both or neither")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("CONVOICE_ARI_CERT_FILE/CONVOICE_ARI_KEY_FILE: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
