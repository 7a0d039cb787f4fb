package freeswitch

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/link"
)

// Defaults applied by New to zero Config fields (the timings and the
// reconnect backoff are pbx/link's, the same for both drivers).
const (
	DefaultAddr    = "127.0.0.1:8021"
	DefaultProfile = "default"
	DefaultNode    = "convoice"
	// stallFactor×RequestTimeout is how long a command may wait for its
	// reply behind a stream of events before the server counts as wedged.
	stallFactor = 5
	// maxQueue bounds the events waiting for the handler; past it events
	// are dropped and counted (FreeSWITCH's own listener queue is 100000).
	maxQueue = 100000
)

// Config configures one FreeSWITCH node.
type Config struct {
	// Addr is mod_event_socket's host:port (default 127.0.0.1:8021).
	Addr string
	// Password is event_socket.conf.xml's password. Never logged.
	Password string
	// Profile is the mod_conference profile of our rooms
	// (&conference(<id>@<profile>)); default "default". A profile used by
	// convoice alone keeps other rooms' events off our socket.
	Profile string
	// Node tags our calls (channel variable convoice_node); the event
	// filter lets through only channels with this tag, our rooms' events
	// and background jobs. Convoice instances sharing one FreeSWITCH
	// should use different tags. Default "convoice".
	Node string
	// Routes turn a number into a dial string ("sofia/gateway/pbx/{e164}").
	// Required; Asterisk dial strings (PJSIP/…) are refused.
	Routes pbx.Routes
	// RingTimeout is originate_timeout (whole seconds, rounded up) when
	// the DialRequest gives none. Default 30 s.
	RingTimeout time.Duration
	// RequestTimeout bounds the connection, the login and every command.
	// A command without an answer in time closes the connection: the
	// server is considered hung. Default 5 s.
	RequestTimeout time.Duration
	// PingInterval is how often an idle connection is checked
	// ("api status"). Default 2 s.
	PingInterval time.Duration
	// Logger receives the driver's logs; nil means slog.Default().
	Logger *slog.Logger
}

// safeWord is what may go into a dial string or a conference name
// unquoted: no spaces, commas, braces, quotes, '@', '&' or parentheses.
var safeWord = regexp.MustCompile(`^[A-Za-z0-9._:+-]{1,128}$`)

func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return c, fmt.Errorf("freeswitch: event-socket address %q: %v", c.Addr, err)
	}
	if c.Password == "" {
		return c, errors.New("freeswitch: the event-socket password is required")
	}
	if c.Profile == "" {
		c.Profile = DefaultProfile
	}
	if !safeWord.MatchString(c.Profile) {
		return c, fmt.Errorf("freeswitch: conference profile %q: letters, digits and ._:+- only", c.Profile)
	}
	if c.Node == "" {
		c.Node = DefaultNode
	}
	if !safeWord.MatchString(c.Node) {
		return c, fmt.Errorf("freeswitch: node tag %q: letters, digits and ._:+- only", c.Node)
	}
	if c.Routes == nil {
		return c, errors.New("freeswitch: dial routes are required (e.g. .*=sofia/gateway/pbx/{e164})")
	}
	for _, r := range c.Routes {
		// An Asterisk channel technology can never work here (FreeSWITCH
		// answers CHAN_NOT_IMPLEMENTED to every call): say so at start-up.
		tech, _, _ := strings.Cut(r.Template, "/")
		switch strings.ToUpper(tech) {
		case "PJSIP", "SIP", "IAX2", "DAHDI", "LOCAL":
			return c, fmt.Errorf("freeswitch: dial route %s=%s is an Asterisk dial string; FreeSWITCH needs e.g. sofia/gateway/<gateway>/{e164}",
				r.Pattern, r.Template)
		}
	}
	link.Defaults(&c.RingTimeout, &c.RequestTimeout, &c.PingInterval, &c.Logger)
	return c, nil
}
