package freeswitch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/link"
)

// Driver is a pbx.Driver for one FreeSWITCH node over the event socket.
type Driver struct {
	cfg Config
	log *slog.Logger

	conn atomic.Pointer[eslConn]

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
	// coreUUID is the Core-UUID of the FreeSWITCH process we last talked
	// to ("" before the first connection). Every event carries it and a
	// new process has a new one: a reconnect that sees another Core-UUID
	// is a restart, whatever calls it finds.
	coreUUID string
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
	// seen: FreeSWITCH sent an event of this channel (it exists, or did).
	seen bool
	// killOnSight: we were asked to hang the leg up while its channel did
	// not exist yet (the originate was still held: uuid_kill said "No
	// such channel"). The channel is hung up as soon as anything shows it
	// (its first event, the originate's +OK) and never reported ringing,
	// answered or connected; its hangup is reported as ours. killSent: the
	// uuid_kill for it went out.
	killOnSight bool
	killSent    bool
	cancelAt    time.Time
	// confirm: the leg joins only after the callee presses the key
	// (DialRequest.Confirm); answered is reported as EventAnswered then.
	confirm         bool
	answeredEmitted bool
	// abandoned: the originate went out but got no answer in time, so
	// Dial reported failure (the controller ended the leg), yet FreeSWITCH
	// may run it. If the call shows up it is hung up and never reported:
	// nobody may sit in a room as a leg the store calls failed.
	abandoned bool
	killed    bool // an abandoned call was hung up
	ended     bool
	endedAt   time.Time
}

var (
	_ pbx.Driver  = (*Driver)(nil)
	_ pbx.Passive = (*Driver)(nil)
)

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
	return d.health.HoldRun("freeswitch", h, func() {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		dispatchDone := make(chan struct{})
		go func() {
			defer close(dispatchDone)
			d.dispatch(ctx, h)
		}()
		go link.Sweep(ctx, d.forgetOld)
		link.Keeper{State: d.health, Log: d.log.With("addr", d.cfg.Addr),
			Failed: "event-socket connection attempt failed; retrying", Describe: describe}.Keep(ctx, d.session)
		cancel()
		<-dispatchDone
	})
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
	core, err := d.coreUUIDOn(ctx, c)
	if err != nil {
		c.fail(err)
		d.health.Set(false, "asking FreeSWITCH's Core-UUID: "+describe(err))
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
	// A restart is a new Core-UUID, nothing else: a partition or a dropped
	// socket leaves the process and its calls alone, even when some of our
	// calls ended meanwhile (the reconcile reports those one by one).
	d.mu.Lock()
	prev := d.coreUUID
	d.coreUUID = core
	d.mu.Unlock()
	restart := ""
	if prev != "" && prev != core {
		restart = fmt.Sprintf("FreeSWITCH restarted (Core-UUID %s, was %s)", core, prev)
	}
	reconnect := connects > 0 || prev != ""
	d.enqueue(func() { d.reconcile(snap, reconnect, restart) })
	d.health.Set(true, "connected to "+d.cfg.Addr)
	d.log.Info("event-socket link up", "addr", d.cfg.Addr, "reconnects", d.health.Reconnects())
	d.emitLink(pbx.Event{Type: pbx.EventLinkUp, Reason: "connected to " + d.cfg.Addr, At: time.Now()})

	if err := d.keepAlive(ctx, c, nil); err == nil {
		return true, nil
	}
	reason := describe(c.Err())
	d.health.Set(false, reason)
	d.log.Warn("event-socket link down", "addr", d.cfg.Addr, "reason", reason)
	d.emitLink(pbx.Event{Type: pbx.EventLinkDown, Reason: reason, At: time.Now()})
	return true, c.Err()
}

// keepAlive watches a live connection until ctx is done (nil) or the
// connection ends (its error). Every PingInterval it calls tick (when not
// nil) and asks "api status" unless a command is still waiting. A command
// that gets no answer while nothing else arrives closes the connection
// (see request), so a hung server is noticed within
// PingInterval+RequestTimeout. One that keeps sending events but answers
// no command for stallFactor×RequestTimeout is wedged too.
func (d *Driver) keepAlive(ctx context.Context, c *eslConn, tick func()) error {
	ping := time.NewTicker(d.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.done:
			return c.Err()
		case <-ping.C:
		}
		if tick != nil {
			tick()
		}
		if w := c.oldestWait(); w > 0 {
			if w > stallFactor*d.cfg.RequestTimeout {
				c.fail(fmt.Errorf("no answer to a command for %s while events keep coming", w.Round(time.Millisecond)))
			}
			continue // a command is still waiting: no need to ask more
		}
		_, _ = c.request(ctx, "api status")
	}
}

// subscribe asks for our events only. The filters are OR-ed (recording n):
// channel events of calls tagged with our node variable, conference events
// of our profile (they carry no channel variables), and background jobs
// (they carry neither; ours are recognised by the origination_uuid in
// Job-Command-Arg).
func (d *Driver) subscribe(ctx context.Context, c *eslConn) error {
	cmds := []string{
		"event json CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB CUSTOM conference::maintenance",
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

// forgetOld drops the tombstones of legs that ended before cut (they are
// kept to ignore late events and to answer ErrExists to a repeated Dial).
func (d *Driver) forgetOld(cut time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	link.Forget(d.legs, cut, func(l *leg) (time.Time, bool) {
		if l.killOnSight && !l.ended && !l.abandoned {
			return l.cancelAt, true // the channel never showed: forget the pending hang-up too
		}
		return l.endedAt, l.ended || l.abandoned
	})
}

// coreUUIDOn learns the Core-UUID of the FreeSWITCH behind c. Every event
// carries it (recordings); "bgapi status" makes sure one comes at once: its
// BACKGROUND_JOB passes our filter (recording n: "bgapi status" under
// "filter Event-Name BACKGROUND_JOB"). Any event read on c counts.
func (d *Driver) coreUUIDOn(ctx context.Context, c *eslConn) (string, error) {
	f, err := c.request(ctx, "bgapi status")
	if err != nil {
		return "", err
	}
	if r := f.get("Reply-Text"); !strings.HasPrefix(r, "+OK") {
		return "", fmt.Errorf("bgapi status: %s", r)
	}
	t := time.NewTimer(d.cfg.RequestTimeout)
	defer t.Stop()
	select {
	case <-c.coreKnown:
		return c.core, nil
	case <-c.done:
		return "", c.Err()
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.C:
		err := fmt.Errorf("no event with a Core-UUID within %s of \"bgapi status\"", d.cfg.RequestTimeout)
		c.fail(err)
		return "", err
	}
}
