package asterisk

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/CyCoreSystems/ari/v5"

	"github.com/convoice/convoice/pbx"
)

// chanInfo is one channel of GET /channels: only what the resync reads,
// decoded in one pass. ari.ChannelData has no field for the dialplan's
// app_name / app_data, which tell a leg in Stasis ("Stasis",
// "<app>,<conference>") from a ringing one ("AppDial2"), and its own
// UnmarshalJSON decodes every field twice (measured: most of the cost of
// reading 10,000 channels).
type chanInfo struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Dialplan struct {
		AppName string `json:"app_name"`
		AppData string `json:"app_data"`
	} `json:"dialplan"`
}

// pbxState is what the PBX holds right now.
type pbxState struct {
	readAt    time.Time
	appFound  bool
	app       ari.ApplicationData
	appChans  map[string]bool
	appBridge map[string]bool
	channels  map[string]chanInfo
	bridges   map[string]ari.BridgeData
	inBridge  map[string]string // channel id → bridge id
}

// readState reads GET /applications/{app} (404: the app holds nothing),
// GET /channels and GET /bridges.
func (d *Driver) readState(ctx context.Context) (*pbxState, error) {
	st := &pbxState{
		readAt:    time.Now(),
		appChans:  map[string]bool{},
		appBridge: map[string]bool{},
		channels:  map[string]chanInfo{},
		bridges:   map[string]ari.BridgeData{},
		inBridge:  map[string]string{},
	}
	err := d.rest.do(ctx, http.MethodGet, "/applications/"+pathEsc(d.cfg.App), nil, nil, &st.app)
	switch {
	case err == nil:
		st.appFound = true
		for _, id := range st.app.ChannelIDs {
			st.appChans[id] = true
		}
		for _, id := range st.app.BridgeIDs {
			st.appBridge[id] = true
		}
	case statusOf(err) == http.StatusNotFound:
	default:
		return nil, err
	}
	var chans []chanInfo
	if err := d.rest.do(ctx, http.MethodGet, "/channels", nil, nil, &chans); err != nil {
		return nil, err
	}
	for _, ci := range chans {
		st.channels[ci.ID] = ci
	}
	var bridges []ari.BridgeData
	if err := d.rest.do(ctx, http.MethodGet, "/bridges", nil, nil, &bridges); err != nil {
		return nil, err
	}
	for _, b := range bridges {
		st.bridges[b.ID] = b
		for _, c := range b.ChannelIDs {
			st.inBridge[c] = b.ID
		}
	}
	return st, nil
}

// stasisConf gives the conference of a channel in our Stasis app
// (app_data "<app>,<conference>[,…]"), or "" when it is not in it.
func (d *Driver) stasisConf(ci chanInfo) (string, bool) {
	if ci.Dialplan.AppName != "Stasis" {
		return "", false
	}
	app, args, _ := strings.Cut(ci.Dialplan.AppData, ",")
	if app != d.cfg.App {
		return "", false
	}
	conf, _, _ := strings.Cut(args, ",")
	return conf, true
}

// resync compares what we believe with what the PBX holds and repairs it:
//   - after a reconnect, a changed startup time (or, only when Asterisk
//     gives none, none of our known channels and bridges left) means
//     Asterisk restarted: every leg is gone, pbx.EventPBXRestarted is
//     emitted and the state is forgotten;
//   - a leg in Stasis in no bridge (it answered while we were blind, its
//     StasisStart was lost, or addChannel failed) is put into its bridge and
//     reported connected;
//   - a leg the PBX no longer has is reported ended (cause 0: the real
//     cause went with the missed events);
//   - a ringing leg we had not reported ringing is reported ringing.
//
// Fixes run on the legs' shards, behind any event already queued, so a
// finding that an event overtook is a no-op.
func (d *Driver) resync(ctx context.Context, reconnect bool, startup string) error {
	d.mu.Lock()
	known := map[string]bool{}
	var unplaced []string
	for id, l := range d.legs {
		switch {
		case l.ended || l.dialing:
		case !l.placed:
			unplaced = append(unplaced, id)
		default:
			known[id] = true
		}
	}
	knownConfs := map[string]bool{}
	for id, c := range d.confs {
		if !c.ended {
			knownConfs[id] = true
		}
	}
	prevStartup := d.startupTime
	d.mu.Unlock()

	st, err := d.readState(ctx)
	if err != nil {
		return err
	}

	if reconnect {
		why := ""
		switch {
		case prevStartup != "" && startup != "" && prevStartup != startup:
			why = fmt.Sprintf("Asterisk restarted (startup time %s, was %s)", startup, prevStartup)
		case (prevStartup == "" || startup == "") &&
			len(known)+len(knownConfs) > 0 && !anyIn(known, st.channels) && !anyIn(knownConfs, st.bridges):
			// Only a guess, for an Asterisk that gives no startup time:
			// with one, the same startup time is the same process, and
			// calls that ended meanwhile (a partition) are not a restart.
			why = fmt.Sprintf("Asterisk lost all our calls: none of our %d channel(s) and %d bridge(s) exist", len(known), len(knownConfs))
		}
		d.mu.Lock()
		if startup != "" {
			d.startupTime = startup
		}
		if why != "" {
			now := time.Now()
			for _, l := range d.legs {
				if !l.ended {
					l.ended, l.endedAt = true, now
				}
			}
			for id, c := range d.confs {
				if !c.ended {
					delete(d.confs, id)
				}
			}
		}
		d.mu.Unlock()
		if why != "" {
			d.stats.restarts.Add(1)
			d.log.Warn("PBX restart detected: every leg is gone", "why", why)
			d.emit(pbx.Event{Type: pbx.EventPBXRestarted, Reason: why})
			return nil
		}
		d.resubscribe(ctx, known, st)
	}

	// A leg whose originate timed out and that the PBX does not have was
	// never placed: forget it.
	d.mu.Lock()
	for _, id := range unplaced {
		if l := d.legs[id]; l != nil && !l.placed && !l.dialing && !l.ended && !l.abandoned {
			if _, ok := st.channels[id]; !ok {
				delete(d.legs, id)
			}
		}
	}
	d.mu.Unlock()

	var waits []chan struct{}
	queue := func(id string, fn func()) error {
		t := task{chanID: id, fn: fn, done: make(chan struct{})}
		select {
		case d.shardFor(id).q <- t:
			waits = append(waits, t.done)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	blind := "answered while the event link was down"
	if !reconnect {
		blind = "answered but not in its conference (events were lost)"
	}
	for id := range known {
		ci, ok := st.channels[id]
		if !ok {
			if err := queue(id, func() { d.vanished(id) }); err != nil {
				return err
			}
			continue
		}
		if err := d.queueFix(queue, id, ci, st, blind); err != nil {
			return err
		}
	}
	// Channels of our app this run does not know (placed by an earlier
	// run of convoice, or their originate timed out): adopt them.
	for id, ci := range st.channels {
		if known[id] {
			continue
		}
		_, inStasis := d.stasisConf(ci)
		if !st.appChans[id] && !inStasis {
			continue
		}
		d.mu.Lock()
		l := d.legs[id]
		skip := l != nil && (l.ended || l.dialing)
		d.mu.Unlock()
		if skip {
			continue
		}
		if err := d.queueFix(queue, id, ci, st, blind); err != nil {
			return err
		}
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (d *Driver) queueFix(queue func(string, func()) error, id string, ci chanInfo, st *pbxState, blind string) error {
	ctx := context.Background() // the fix's REST calls carry their own timeout
	if conf, inStasis := d.stasisConf(ci); inStasis {
		bridge := st.inBridge[id]
		f := &fix{reason: blind, readAt: st.readAt, inBridge: bridge != ""}
		if bridge != "" {
			conf = bridge
			f.reason = "found in its conference during resync"
		}
		at := time.Now()
		return queue(id, func() {
			d.mu.Lock()
			l := d.legs[id]
			done := l != nil && l.connected && bridge != ""
			d.mu.Unlock()
			if done {
				return
			}
			d.answered(ctx, id, conf, at, f)
		})
	}
	if ci.State == "Ringing" {
		at := time.Now()
		return queue(id, func() { d.markRinging(id, at) })
	}
	return nil
}

// vanished reports a leg that the PBX no longer has, once.
func (d *Driver) vanished(id string) {
	d.mu.Lock()
	l := d.legs[id]
	if l == nil || l.ended {
		d.mu.Unlock()
		return
	}
	l.ended, l.endedAt = true, time.Now()
	confID := l.conf
	d.mu.Unlock()
	d.log.Warn("leg gone from the PBX while events were missed", "leg", id, "conference", confID)
	d.emit(pbx.Event{Type: pbx.EventEnded, LegID: id, ConferenceID: confID,
		Cause: pbx.CauseUnknown, Reason: "gone from the PBX while events were missed"})
}

// resubscribe makes sure the app gets the events of our live channels:
// POST /applications/{app}/subscription?eventSource=channel:…. Registration
// itself is the websocket's ?app=. Asterisk subscribes the app to every
// channel originated into it, and the app lives while it holds any, so this
// only matters for a channel of ours that is missing from the app's
// channel_ids (an app destroyed and created again while we were away).
// Bridges need no subscription: the driver uses none of their events.
// Failure only logs.
func (d *Driver) resubscribe(ctx context.Context, legs map[string]bool, st *pbxState) {
	var srcs []string
	for id := range legs {
		if _, ok := st.channels[id]; ok && !st.appChans[id] {
			srcs = append(srcs, "channel:"+id)
		}
	}
	if len(srcs) == 0 {
		return
	}
	slices.Sort(srcs)
	q := url.Values{"eventSource": {strings.Join(srcs, ",")}}
	if err := d.rest.do(ctx, http.MethodPost, "/applications/"+pathEsc(d.cfg.App)+"/subscription", q, nil, nil); err != nil {
		d.log.Warn("re-subscribing the app to our channels failed", "err", err, "channels", len(srcs))
	} else {
		d.log.Info("re-subscribed the app to our channels", "channels", len(srcs))
	}
}

func anyIn[V any](ids map[string]bool, m map[string]V) bool {
	for id := range ids {
		if _, ok := m[id]; ok {
			return true
		}
	}
	return false
}

// Snapshot reads what the PBX holds of ours: the channels of our app (a leg
// in Stasis has app_data "<app>,<conference>"; a ringing one is only known
// by its id) and our bridges (in the app, named "<app>:<conference>", or
// created by this driver).
func (d *Driver) Snapshot(ctx context.Context) (pbx.Snapshot, error) {
	st, err := d.readState(ctx)
	if err != nil {
		return pbx.Snapshot{}, classify("snapshot", err, statusMap{})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	snap := pbx.Snapshot{At: st.readAt}
	for id, ci := range st.channels {
		conf, inStasis := d.stasisConf(ci)
		l := d.legs[id]
		if !st.appChans[id] && !inStasis && (l == nil || l.ended) {
			continue
		}
		ls := pbx.LegSnapshot{LegID: id, ConferenceID: conf, Answered: ci.State == "Up"}
		if b := st.inBridge[id]; b != "" {
			ls.InConference, ls.ConferenceID = true, b
		}
		if l != nil {
			if ls.ConferenceID == "" {
				ls.ConferenceID = l.conf
			}
			ls.Muted = l.muted
		}
		snap.Legs = append(snap.Legs, ls)
	}
	prefix := d.cfg.App + ":"
	for id, b := range st.bridges {
		c := d.confs[id]
		if st.appBridge[id] || strings.HasPrefix(b.Name, prefix) || (c != nil && !c.ended) {
			snap.Conferences = append(snap.Conferences, id)
		}
	}
	slices.SortFunc(snap.Legs, func(a, b pbx.LegSnapshot) int { return strings.Compare(a.LegID, b.LegID) })
	slices.Sort(snap.Conferences)
	return snap, nil
}
