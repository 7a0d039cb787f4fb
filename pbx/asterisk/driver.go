package asterisk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/CyCoreSystems/ari/v5"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/link"
)

// Driver is a pbx.Driver for one Asterisk node over ARI.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	rest *restClient

	handler atomic.Pointer[pbx.Handler]
	shards  []*shard
	// queueWait: see defaultQueueWait (tests shorten it).
	queueWait time.Duration
	lostCh    chan struct{} // coalesced "something was lost": resync, then EventLost

	health *link.State // ready, detail, reconnects, lost events
	stats  counters

	mu    sync.Mutex
	legs  map[string]*leg  // by leg (channel) id; ended legs stay a while as tombstones
	confs map[string]*conf // by conference (bridge) id
	// startupTime is Asterisk's status.startup_time from GET /asterisk/info
	// at the last connect ("" when unknown); a change means a restart.
	startupTime string
}

// leg is what the driver remembers of one channel of ours. Its flags are
// changed by the leg's shard worker (events and resync fixes), by Dial and
// by Hangup, always under Driver.mu.
type leg struct {
	id      string
	conf    string
	dialing bool // our POST /channels/{id} has not answered yet
	placed  bool // the PBX accepted the originate (or an event proved the channel exists)
	// emitted state, so duplicates are harmless
	ringing   bool
	connected bool
	ended     bool
	cancelled bool // we asked for the hangup
	shutdown  bool // Asterisk is hanging it up because it shuts down / restarts
	// abandoned: our originate got no answer (timeout), so Dial reported
	// failure and the controller ended the leg, yet Asterisk may have
	// placed the call. If the channel shows up it is hung up, never
	// bridged: nobody may sit in a conference as a leg the store calls
	// failed.
	abandoned bool
	muted     bool
	endedAt   time.Time
	bridgedAt time.Time // last successful addChannel (or found bridged)
	// hangupPending: Hangup came while the channel did not exist for
	// Asterisk (our originate was still in flight, or nothing was known
	// of the id: DELETE said 404). The channel is hung up as soon as it
	// shows (the originate's 200, any of its events, StasisStart) and is
	// never reported ringing or connected, never bridged. cancelAt bounds
	// how long the sweep keeps it when the channel never shows.
	hangupPending bool
	cancelAt      time.Time
	killSentAt    time.Time
	// confirm: on StasisStart the leg hears the prompt and joins only
	// after the key (DialRequest.Confirm); see confirm.go.
	confirm *confirmState
}

type conf struct {
	id      string
	ended   bool // EndConference ran: a late answer is hung up, not joined
	endedAt time.Time
}

type counters struct {
	eventsReceived atomic.Int64
	pingMisses     atomic.Int64
	halfOpen       atomic.Int64
	dials          atomic.Int64
	dialsRefused   atomic.Int64
	bridgeFixes    atomic.Int64
	restarts       atomic.Int64
}

// Stats are the driver's counters, for the lead's metrics.
type Stats struct {
	Reconnects     int64 // event link re-established
	LostEvents     int64 // dropped (queue full) or undecodable frames
	EventsReceived int64 // websocket frames received
	PingMisses     int64 // ping rounds without an answer
	HalfOpen       int64 // links closed because pings went unanswered
	Dials          int64 // originates accepted (200)
	DialsRefused   int64 // originates refused by the PBX
	BridgeFixes    int64 // answered legs the driver put into their bridge during a resync
	PBXRestarts    int64 // restarts detected
}

// New checks cfg, applies defaults and returns a driver; call Run to connect.
func New(cfg Config) (*Driver, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	d := &Driver{
		cfg:       cfg,
		log:       cfg.Logger.With("pbx", "asterisk", "ari", cfg.URL, "app", cfg.App),
		rest:      newRESTClient(cfg.URL, cfg.User, cfg.Password, cfg.RequestTimeout, cfg.TLS),
		lostCh:    make(chan struct{}, 1),
		shards:    newShards(),
		queueWait: defaultQueueWait,
		health:    link.NewState(),
		legs:      map[string]*leg{},
		confs:     map[string]*conf{},
	}
	return d, nil
}

var (
	_ pbx.Driver  = (*Driver)(nil)
	_ pbx.Passive = (*Driver)(nil)
)

// Kind is "asterisk".
func (d *Driver) Kind() string { return "asterisk" }

// Status reports readiness: Ready only while the event websocket is up, the
// resync after connecting is done, and pings are answered.
func (d *Driver) Status() pbx.Status { return d.health.Status() }

// Stats returns the counters.
func (d *Driver) Stats() Stats {
	return Stats{
		Reconnects:     d.health.Reconnects(),
		LostEvents:     d.health.LostEvents(),
		EventsReceived: d.stats.eventsReceived.Load(),
		PingMisses:     d.stats.pingMisses.Load(),
		HalfOpen:       d.stats.halfOpen.Load(),
		Dials:          d.stats.dials.Load(),
		DialsRefused:   d.stats.dialsRefused.Load(),
		BridgeFixes:    d.stats.bridgeFixes.Load(),
		PBXRestarts:    d.stats.restarts.Load(),
	}
}

// emit hands one event to the handler (it may block: that is the handler's
// back-pressure on the calling worker).
func (d *Driver) emit(e pbx.Event) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	if h := d.handler.Load(); h != nil {
		(*h).HandleEvent(e)
	}
}

// CreateConference makes sure the mixing bridge named by conferenceID
// exists: POST /bridges/{id}?type=mixing&name=…; 409 "already exists" is
// success.
func (d *Driver) CreateConference(ctx context.Context, conferenceID string) error {
	if !validID(conferenceID) {
		return fmt.Errorf("asterisk: create conference: %w: invalid conference id %q", pbx.ErrRefused, conferenceID)
	}
	q := url.Values{"type": {"mixing"}, "name": {d.bridgeName(conferenceID)}}
	var b ari.BridgeData
	err := d.rest.do(ctx, http.MethodPost, "/bridges/"+pathEsc(conferenceID), q, nil, &b)
	if err != nil && statusOf(err) != http.StatusConflict {
		return classify("create conference "+conferenceID, err, statusMap{})
	}
	d.mu.Lock()
	d.confs[conferenceID] = &conf{id: conferenceID}
	d.mu.Unlock()
	return nil
}

// bridgeName marks our bridges, so Snapshot finds an empty conference of
// ours after a restart of convoice.
func (d *Driver) bridgeName(conferenceID string) string {
	return d.cfg.App + ":" + conferenceID
}

// Dial originates a call into the app with our leg id as the channel id and
// the conference id as the Stasis argument (so a resync knows where the leg
// belongs). It refuses at once with pbx.ErrUnavailable while the event link
// is not ready: Asterisk would accept the originate, ring the phone, and
// hang it up as soon as it answers because the app is not active (m).
func (d *Driver) Dial(ctx context.Context, req pbx.DialRequest) error {
	what := "dial " + req.LegID
	if !validID(req.LegID) {
		return fmt.Errorf("asterisk: %s: %w: invalid leg id", what, pbx.ErrRefused)
	}
	if !validID(req.ConferenceID) {
		return fmt.Errorf("asterisk: %s: %w: invalid conference id %q", what, pbx.ErrRefused, req.ConferenceID)
	}
	if ok, detail := d.health.Ready(); !ok {
		return fmt.Errorf("asterisk: %s: %w: event link not ready (%s)", what, pbx.ErrUnavailable, detail)
	}
	endpoint, err := d.cfg.Routes.DialString(req.Number)
	if err != nil {
		return fmt.Errorf("asterisk: %s: %w: %w", what, pbx.ErrRefused, err)
	}
	ring := req.RingTimeout
	if ring <= 0 {
		ring = d.cfg.RingTimeout
	}
	secs := int(math.Ceil(ring.Seconds()))
	if secs < 1 {
		secs = 1
	}
	o := ari.OriginateRequest{
		Endpoint: endpoint,
		App:      d.cfg.App,
		AppArgs:  req.ConferenceID,
		CallerID: callerID(req.CallerIDName, req.CallerIDNumber),
		Timeout:  secs,
	}

	// Register the leg before the request: its StasisStart may beat the
	// 200 (the ids are ours, so it is matched either way).
	d.mu.Lock()
	l, existed := d.legs[req.LegID]
	if !existed || l.ended {
		l = &leg{id: req.LegID}
		d.legs[req.LegID] = l
		existed = false
	}
	if l.conf == "" || !existed {
		l.conf = req.ConferenceID
	}
	if req.Confirm != nil {
		l.confirm = newConfirmState(req.Confirm)
	}
	l.dialing = true
	d.mu.Unlock()

	log := d.log.With("leg", req.LegID, "conference", req.ConferenceID)
	var ch ari.ChannelData
	// The parameters go as a JSON body (ari.OriginateRequest), which
	// Asterisk treats like the query string (recording l).
	err = d.rest.do(ctx, http.MethodPost, "/channels/"+pathEsc(req.LegID), nil, o, &ch)

	d.mu.Lock()
	l.dialing = false
	st := statusOf(err)
	switch {
	case err == nil:
		l.placed = true
	case st == http.StatusConflict:
		// Someone (an earlier attempt) already placed this id: the
		// channel exists, its events are ours.
		l.placed = true
	case st != 0 && !existed && !l.placed && !l.ringing && !l.connected && !l.ended:
		// A definite refusal: no channel exists under this id.
		if d.legs[req.LegID] == l {
			delete(d.legs, req.LegID)
		}
	case st == 0 && !l.ended:
		// No answer: the outcome is unknown (or an event already proved
		// the call exists), and the caller is told the call failed. Keep
		// the leg as abandoned so that a channel under this id is hung
		// up, never reported or bridged (see answered, markRinging).
		l.abandoned, l.endedAt = true, time.Now()
	}
	abandoned := l.abandoned && err != nil
	// Hung up while the originate was in flight: now the channel exists.
	killNow := err == nil && (l.hangupPending || l.cancelled) && !l.ended
	d.mu.Unlock()
	if killNow {
		log.Info("the originate of a leg hung up meanwhile was answered: hanging the channel up")
		go d.pendingHangup(req.LegID)
	}
	if abandoned {
		// Cancel the call in case Asterisk placed it (404 if not); in
		// the background: the caller has waited long enough.
		go func() {
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.RequestTimeout)
			defer cancel()
			if err := d.rest.do(hctx, http.MethodDelete, "/channels/"+pathEsc(req.LegID), nil, nil, nil); err == nil {
				log.Warn("hung up a call whose originate had timed out")
			}
		}()
	}

	if err != nil {
		err = classify(what, err, statusMap{conflict: pbx.ErrExists})
		switch {
		case errors.Is(err, pbx.ErrExists):
			log.Info("originate: leg id already exists")
		case errors.Is(err, pbx.ErrUnavailable):
			log.Warn("originate failed: PBX unavailable", "err", err)
		default:
			d.stats.dialsRefused.Add(1)
			log.Warn("originate refused", "endpoint", pbx.MaskNumber(endpoint), "err", err)
			log.Debug("originate refused", "endpoint", endpoint)
		}
		return err
	}
	d.stats.dials.Add(1)
	log.Info("originated", "endpoint", pbx.MaskNumber(endpoint), "timeout_s", secs)
	log.Debug("originated", "endpoint", endpoint)
	return nil
}

// callerID builds `"Name" <number>` without characters that would break it.
func callerID(name, number string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r < ' ' || r == 0x7f, r == '"', r == '\\', r == '<', r == '>':
			return -1
		}
		return r
	}, name)
	clean = strings.TrimSpace(clean)
	num := strings.Map(func(r rune) rune {
		if r == '+' || r == '*' || r == '#' || (r >= '0' && r <= '9') {
			return r
		}
		return -1
	}, number)
	switch {
	case clean != "" && num != "":
		return strconv.Quote(clean) + " <" + num + ">"
	case num != "":
		return "<" + num + ">"
	case clean != "":
		return strconv.Quote(clean)
	}
	return ""
}

// Hangup ends one leg, ringing or connected: DELETE /channels/{id}.
// pbx.ErrNotFound when the PBX does not know it.
//
// A 404 while our originate of the leg is still in flight (a loaded
// Asterisk creates the channel late) is not the end of it: the hang-up is
// remembered and the channel is hung up as soon as it shows, never
// bridged (hangupPending); Hangup then succeeds and EventEnded follows
// from the PBX's events. A 404 for an id we know nothing of is
// pbx.ErrNotFound, and the id is remembered the same way in case its
// originate (another replica's) is in flight; the sweep forgets it.
func (d *Driver) Hangup(ctx context.Context, legID string) error {
	if !validID(legID) {
		return fmt.Errorf("asterisk: hangup: %w: invalid leg id", pbx.ErrNotFound)
	}
	d.mu.Lock()
	if l := d.legs[legID]; l != nil && !l.ended {
		l.cancelled = true
	}
	d.mu.Unlock()
	err := d.rest.do(ctx, http.MethodDelete, "/channels/"+pathEsc(legID), nil, nil, nil)
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			d.mu.Lock()
			l := d.legs[legID]
			switch {
			case l == nil:
				d.legs[legID] = &leg{id: legID, cancelled: true, hangupPending: true, cancelAt: time.Now()}
			case !l.ended:
				// The originate is in flight, or its 200 has only just
				// come (then the channel exists now: try once more).
				l.hangupPending, l.cancelAt = true, time.Now()
				again := !l.dialing
				d.mu.Unlock()
				d.log.Info("hangup before the channel exists: it is hung up when it shows", "leg", legID)
				if again {
					d.pendingHangup(legID)
				}
				return nil
			}
			d.mu.Unlock()
		}
		return classify("hangup "+legID, err, statusMap{notFound: pbx.ErrNotFound})
	}
	d.log.Info("hangup requested", "leg", legID)
	return nil
}

// hangupPendingNow hangs up the channel of a leg whose hang-up came before
// the channel existed (hangupPending).
func (d *Driver) hangupPendingNow(legID string) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.RequestTimeout)
	defer cancel()
	err := d.rest.do(ctx, http.MethodDelete, "/channels/"+pathEsc(legID), nil, nil, nil)
	switch {
	case err == nil:
		d.log.Info("hung up a leg cancelled before its channel existed", "leg", legID)
	case statusOf(err) != http.StatusNotFound:
		d.log.Warn("hanging up a leg cancelled before its channel existed failed; its next event retries", "leg", legID, "err", err)
	}
}

// pendingHangup reports whether chanID was hung up before its channel
// existed (or its originate answered after a hang-up); if so it hangs the
// channel up, at most once per RequestTimeout.
func (d *Driver) pendingHangup(chanID string) bool {
	d.mu.Lock()
	l := d.legs[chanID]
	pending := l != nil && (l.hangupPending || (l.cancelled && !l.placed)) && !l.ended
	send := false
	if pending {
		l.hangupPending, l.placed = true, true
		if time.Since(l.killSentAt) > d.cfg.RequestTimeout {
			l.killSentAt, send = time.Now(), true
		}
	}
	d.mu.Unlock()
	if send {
		d.hangupPendingNow(chanID)
	}
	return pending
}

// SetMute mutes or unmutes what the leg says into the conference:
// POST / DELETE /channels/{id}/mute?direction=in. A leg not in Stasis yet
// (still ringing) gives pbx.ErrNotReady (409 for mute, as recorded in k).
func (d *Driver) SetMute(ctx context.Context, conferenceID, legID string, muted bool) error {
	if !validID(legID) {
		return fmt.Errorf("asterisk: mute: %w: invalid leg id", pbx.ErrNotFound)
	}
	method := http.MethodPost
	what := "mute " + legID
	if !muted {
		method, what = http.MethodDelete, "unmute "+legID
	}
	err := d.rest.do(ctx, method, "/channels/"+pathEsc(legID)+"/mute", url.Values{"direction": {"in"}}, nil, nil)
	if err != nil {
		return classify(what, err, statusMap{notFound: pbx.ErrNotFound, conflict: pbx.ErrNotReady, unprocessable: pbx.ErrNotReady})
	}
	d.mu.Lock()
	if l := d.legs[legID]; l != nil {
		l.muted = muted
	}
	d.mu.Unlock()
	d.log.Info(what, "conference", conferenceID)
	return nil
}

// EndConference hangs up every channel in the bridge and every leg dialed
// for it that has not ended (ringing ones are not in the bridge yet), then
// deletes the bridge. The 204 of the DELETE is the end: BridgeDestroyed does
// not always come (k). An unknown conference is not an error.
func (d *Driver) EndConference(ctx context.Context, conferenceID string) error {
	if !validID(conferenceID) {
		return nil
	}
	what := "end conference " + conferenceID
	d.mu.Lock()
	c := d.confs[conferenceID]
	if c == nil {
		c = &conf{id: conferenceID}
		d.confs[conferenceID] = c
	}
	c.ended, c.endedAt = true, time.Now()
	ids := map[string]bool{}
	for _, l := range d.legs {
		if l.conf == conferenceID && !l.ended {
			ids[l.id] = true
		}
	}
	d.mu.Unlock()

	var b ari.BridgeData
	err := d.rest.do(ctx, http.MethodGet, "/bridges/"+pathEsc(conferenceID), nil, nil, &b)
	bridgeGone := false
	switch {
	case err == nil:
		for _, id := range b.ChannelIDs {
			ids[id] = true
		}
	case statusOf(err) == http.StatusNotFound:
		bridgeGone = true
	default:
		return classify(what, err, statusMap{})
	}
	var errs []error
	for id := range ids {
		if err := d.Hangup(ctx, id); err != nil && !errors.Is(err, pbx.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	if !bridgeGone {
		err := d.rest.do(ctx, http.MethodDelete, "/bridges/"+pathEsc(conferenceID), nil, nil, nil)
		if err != nil && statusOf(err) != http.StatusNotFound {
			errs = append(errs, classify(what, err, statusMap{}))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	d.log.Info("conference ended", "conference", conferenceID, "legs_hung_up", len(ids))
	return nil
}

// forgetOld drops the tombstones of legs and conferences that ended
// before cut.
func (d *Driver) forgetOld(cut time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	link.Forget(d.legs, cut, func(l *leg) (time.Time, bool) {
		if l.hangupPending && !l.ended && !l.abandoned && !l.dialing {
			return l.cancelAt, true // the channel never showed
		}
		return l.endedAt, l.ended || l.abandoned
	})
	link.Forget(d.confs, cut, func(c *conf) (time.Time, bool) { return c.endedAt, c.ended })
}
