package freeswitch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-eventsocket/eventsocket"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/link"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultAddr           = "127.0.0.1:8021"
	DefaultProfile        = "default"
	DefaultNode           = "convoice"
	DefaultRingTimeout    = 30 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultPingInterval   = 2 * time.Second
	// MaxBackoff caps the wait between reconnection attempts.
	MaxBackoff = 5 * time.Second
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
	if c.RingTimeout <= 0 {
		c.RingTimeout = DefaultRingTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Driver is a pbx.Driver for one FreeSWITCH node over the event socket.
type Driver struct {
	cfg Config
	log *slog.Logger

	running atomic.Bool
	conn    atomic.Pointer[eslConn]

	health *link.State // ready, detail, reconnects, lost events

	// The dispatcher: one goroutine applies FreeSWITCH events to the leg
	// table and calls the handler, in arrival order. The queue is fed by
	// the socket reader, which therefore never waits for the handler.
	qmu         sync.Mutex
	queue       []func()
	qwake       chan struct{}
	lostPending bool

	handler pbx.Handler // used by the dispatcher goroutine only

	mu   sync.Mutex
	legs map[string]*leg // by leg id (= origination_uuid); ended legs stay as tombstones a while
}

// leg is what the driver remembers of one call of ours.
type leg struct {
	id        string
	conf      string
	member    string // conference member id while in the room
	ringing   bool
	answered  bool
	inConf    bool
	connected bool
	muted     bool
	cancelled bool // we asked for the hangup
	// abandoned: the originate went out but got no answer in time, so
	// Dial reported failure (the controller ended the leg), yet FreeSWITCH
	// may run it. If the call shows up it is hung up and never reported:
	// nobody may sit in a room as a leg the store calls failed.
	abandoned bool
	killed    bool // an abandoned call was hung up
	ended     bool
	endedAt   time.Time
}

var _ pbx.Driver = (*Driver)(nil)

// New checks the configuration; Run connects.
func New(cfg Config) (*Driver, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Driver{cfg: cfg, log: cfg.Logger, legs: map[string]*leg{}, qwake: make(chan struct{}, 1),
		health: link.NewState()}, nil
}

// Kind is "freeswitch".
func (d *Driver) Kind() string { return "freeswitch" }

// Status reports readiness without blocking.
func (d *Driver) Status() pbx.Status { return d.health.Status() }

// Run keeps the event connection up and delivers events to h until ctx
// ends. While FreeSWITCH is down, refuses us or stops answering, Run
// retries with backoff (capped at MaxBackoff) and Status says why.
func (d *Driver) Run(ctx context.Context, h pbx.Handler) error {
	if h == nil {
		return errors.New("freeswitch: Run needs a handler")
	}
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("freeswitch: Run is already running")
	}
	defer d.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dispatchDone := make(chan struct{})
	go func() {
		defer close(dispatchDone)
		d.dispatch(ctx, h)
	}()
	go link.Sweep(ctx, d.forgetOld)

	link.Keeper{State: d.health, MaxBackoff: MaxBackoff, Log: d.log.With("addr", d.cfg.Addr),
		Failed: "event-socket connection attempt failed; retrying", Describe: describe}.Keep(ctx, d.session)
	cancel()
	<-dispatchDone
	return nil
}

// session is one life of the connection: login, subscription, resync,
// link up, supervision, link down. up says whether it got to link up.
func (d *Driver) session(ctx context.Context, connects int) (up bool, err error) {
	c, err := dial(ctx, d.cfg.Addr, d.cfg.Password, d.cfg.RequestTimeout)
	if err != nil {
		d.health.Set(false, describe(err))
		return false, err
	}
	c.start(d.onEvent, d.onLost)
	defer c.close()
	if err := d.subscribe(ctx, c); err != nil {
		c.fail(err)
		d.health.Set(false, "subscribing to events: "+describe(err))
		return false, err
	}
	// Subscribe first, then read the state: nothing that happens between
	// the two is lost (events after the snapshot are applied after it).
	snap, err := d.snapshotOn(ctx, c)
	if err != nil {
		c.fail(err)
		d.health.Set(false, "resync: "+describe(err))
		return false, err
	}
	d.conn.Store(c)
	defer d.conn.CompareAndSwap(c, nil)
	if connects > 0 {
		d.health.Reconnected()
	}
	// The reconcile runs on the dispatcher, in order with the events that
	// arrived since the subscription; link up follows it.
	reconnect := connects > 0
	d.enqueue(func() { d.reconcile(snap, reconnect) })
	d.health.Set(true, "connected to "+d.cfg.Addr)
	d.log.Info("event-socket link up", "addr", d.cfg.Addr, "reconnects", d.health.Reconnects())
	d.emitLink(pbx.Event{Type: pbx.EventLinkUp, Reason: "connected to " + d.cfg.Addr, At: time.Now()})

	ping := time.NewTicker(d.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case <-c.done:
			reason := describe(c.Err())
			d.health.Set(false, reason)
			d.log.Warn("event-socket link down", "addr", d.cfg.Addr, "reason", reason)
			d.emitLink(pbx.Event{Type: pbx.EventLinkDown, Reason: reason, At: time.Now()})
			return true, c.Err()
		case <-ping.C:
			// A command that gets no answer while nothing else arrives
			// closes the connection (see request), so a hung server is
			// noticed within PingInterval+RequestTimeout. One that keeps
			// sending events but answers no command for
			// stallFactor×RequestTimeout is wedged too.
			if w := c.oldestWait(); w > 0 {
				if w > stallFactor*d.cfg.RequestTimeout {
					c.fail(fmt.Errorf("no answer to a command for %s while events keep coming", w.Round(time.Millisecond)))
				}
				continue // a command is still waiting: no need to ask more
			}
			_, _ = c.request(ctx, "api status")
		}
	}
}

// subscribe asks for our events only. The filters are OR-ed (recording n):
// channel events of calls tagged with our node variable, conference events
// of our profile (they carry no channel variables), and background jobs
// (they carry neither; ours are recognised by the origination_uuid in
// Job-Command-Arg).
func (d *Driver) subscribe(ctx context.Context, c *eslConn) error {
	cmds := []string{
		"event json CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB CUSTOM conference::maintenance",
		"filter variable_" + varNode + " " + d.cfg.Node,
		"filter Conference-Profile-Name " + d.cfg.Profile,
		"filter Event-Name BACKGROUND_JOB",
	}
	for _, cmd := range cmds {
		f, err := c.request(ctx, cmd)
		if err != nil {
			return err
		}
		if r := f.get("Reply-Text"); !strings.HasPrefix(r, "+OK") {
			return fmt.Errorf("%s: %s", commandName(cmd), r)
		}
	}
	return nil
}

// describe makes a connection error readable for Status and logs.
func describe(err error) string {
	switch {
	case err == nil:
		return "connection closed"
	case errors.Is(err, ErrRejected):
		return "refused by FreeSWITCH (event-socket ACL): " + err.Error()
	case errors.Is(err, ErrAuth):
		return "login rejected: check the event-socket password"
	}
	return err.Error()
}

// ---- dispatcher -------------------------------------------------------------

func (d *Driver) enqueue(f func()) {
	d.qmu.Lock()
	if len(d.queue) >= maxQueue {
		d.qmu.Unlock()
		d.onLost("event queue full (the handler is not keeping up)")
		return
	}
	d.queue = append(d.queue, f)
	d.qmu.Unlock()
	select {
	case d.qwake <- struct{}{}:
	default:
	}
}

func (d *Driver) dispatch(ctx context.Context, h pbx.Handler) {
	d.handler = h
	for {
		d.qmu.Lock()
		batch := d.queue
		d.queue = nil
		d.qmu.Unlock()
		for _, f := range batch {
			f()
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-d.qwake:
		}
	}
}

// onEvent is called by the socket reader: queue, never block.
func (d *Driver) onEvent(ev *eventsocket.Event) {
	d.enqueue(func() { d.apply(ev) })
}

// onLost counts an event we could not use and tells the controller once
// (coalesced) so it resyncs.
func (d *Driver) onLost(reason string) {
	d.health.Lost()
	d.log.Warn("event lost", "reason", reason)
	d.qmu.Lock()
	if d.lostPending {
		d.qmu.Unlock()
		return
	}
	d.lostPending = true
	d.queue = append(d.queue, func() {
		d.qmu.Lock()
		d.lostPending = false
		d.qmu.Unlock()
		d.emit(pbx.Event{Type: pbx.EventLost, Reason: reason, At: time.Now()})
	})
	d.qmu.Unlock()
	select {
	case d.qwake <- struct{}{}:
	default:
	}
}

func (d *Driver) emitLink(e pbx.Event) { d.enqueue(func() { d.emit(e) }) }

// emit calls the handler; only from the dispatcher goroutine.
func (d *Driver) emit(e pbx.Event) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	if d.handler != nil {
		d.handler.HandleEvent(e)
	}
}

// forgetOld drops the tombstones of legs that ended before cut (they are
// kept to ignore late events and to answer ErrExists to a repeated Dial).
func (d *Driver) forgetOld(cut time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	link.Forget(d.legs, cut, func(l *leg) (time.Time, bool) { return l.endedAt, l.ended || l.abandoned })
}
