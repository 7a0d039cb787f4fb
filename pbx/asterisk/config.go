package asterisk

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/link"
)

// Defaults applied by New to zero Config fields (the timings and the
// reconnect backoff are pbx/link's, the same for both drivers).
const (
	DefaultURL = "http://127.0.0.1:8088/ari"
	DefaultApp = "convoice"
)

// Config configures one Asterisk node.
type Config struct {
	// URL is the ARI base URL, e.g. "http://127.0.0.1:8088/ari" (https for
	// TLS; the websocket then uses wss).
	URL string
	// User and Password are the ari.conf credentials (HTTP basic auth for
	// REST, api_key for the websocket). The password is never logged.
	User, Password string
	// App is the Stasis application name (default "convoice"). One running
	// convoice per app name: a second websocket for the same app replaces the
	// first (ApplicationReplaced).
	App string
	// Routes turn a number into an ARI endpoint ("PJSIP/{e164}@trunk");
	// nil means pbx.DefaultRoutes.
	Routes pbx.Routes
	// RingTimeout is the originate timeout (whole seconds, rounded up) when
	// the DialRequest gives none. Default 30 s.
	RingTimeout time.Duration
	// RequestTimeout bounds every REST request and the websocket handshake.
	// Default 5 s.
	RequestTimeout time.Duration
	// PingInterval is the half-open detection period: not ready after
	// 2×PingInterval without answers, link down after 3×PingInterval.
	// Default 2 s.
	PingInterval time.Duration
	// TLS, when set, is the TLS configuration for an https ARI URL (and its
	// wss websocket): the CA that signed Asterisk's certificate and a client
	// certificate, when the site uses them. Nil: the system's roots.
	TLS *tls.Config
	// TalkDetect sets TALK_DETECT(set) on every answered leg before it joins
	// the conference, so ChannelTalkingStarted/Finished are reported
	// (Asterisk needs func_talkdetect.so; without it nothing is reported).
	TalkDetect bool
	// Logger receives the driver's logs; nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return c, fmt.Errorf("asterisk: bad ARI URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return c, fmt.Errorf("asterisk: ARI URL %q: scheme must be http or https", c.URL)
	}
	if u.Host == "" {
		return c, fmt.Errorf("asterisk: ARI URL %q has no host", c.URL)
	}
	if u.User != nil {
		return c, errors.New("asterisk: put the ARI credentials in User/Password, not in the URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return c, fmt.Errorf("asterisk: ARI URL %q must not have a query or fragment", c.URL)
	}
	c.URL = strings.TrimRight(u.String(), "/")
	if c.User == "" {
		return c, errors.New("asterisk: ARI user is required")
	}
	if c.App == "" {
		c.App = DefaultApp
	}
	if !validID(c.App) {
		return c, fmt.Errorf("asterisk: bad Stasis app name %q", c.App)
	}
	if len(c.Routes) == 0 {
		rs, err := pbx.ParseRoutes("")
		if err != nil {
			return c, err
		}
		c.Routes = rs
	}
	link.Defaults(&c.RingTimeout, &c.RequestTimeout, &c.PingInterval, &c.Logger)
	if c.PingInterval < 10*time.Millisecond {
		c.PingInterval = 10 * time.Millisecond
	}
	return c, nil
}

// validID accepts the ids we put into URL paths, channel ids and the
// comma-separated Stasis argument list: printable, no separators.
func validID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f {
			return false
		}
		switch r {
		case ',', '/', '?', '#', '%', '"', '\'', '\\', '&', '|', '(', ')', '<', '>':
			return false
		}
	}
	return true
}
