package asterisk

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/CyCoreSystems/ari/v5"

	"github.com/convoice/convoice/pbx"
)

const (
	// numShards worker goroutines; a channel always goes to the same one.
	// A worker makes REST calls (addChannel, TALK_DETECT) for its legs, so
	// more workers than cores keep a burst of answers moving.
	numShards = 16
	// shardQueue frames may wait per worker (a frame is a small byte slice).
	shardQueue = 4096
	// defaultQueueWait is how long the websocket reader waits for room in
	// a full queue before it counts the frame lost. Waiting is
	// back-pressure (the PBX's socket fills and it slows down); losing is
	// the last resort, and even then a resync repairs the state.
	defaultQueueWait = 2 * time.Second
)

// task is one unit of work for a shard: a websocket frame for a channel, or
// a resync fix for a leg. done, when set, is closed after it ran.
type task struct {
	chanID string
	ev     *frame
	fn     func()
	done   chan struct{}
}

type shard struct {
	q chan task
}

func (d *Driver) shardFor(chanID string) *shard {
	h := fnv.New32a()
	h.Write([]byte(chanID))
	return d.shards[h.Sum32()%uint32(len(d.shards))]
}

func newShards() []*shard {
	shards := make([]*shard, numShards)
	for i := range shards {
		shards[i] = &shard{q: make(chan task, shardQueue)}
	}
	return shards
}

// runShards starts one worker per shard; they stop when ctx is done (the
// queues stay, for a later Run).
func (d *Driver) runShards(ctx context.Context) {
	for _, s := range d.shards {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case t := <-s.q:
					d.runTask(ctx, t)
				}
			}
		}()
	}
}

func (d *Driver) runTask(ctx context.Context, t task) {
	defer func() {
		if t.done != nil {
			close(t.done)
		}
	}()
	if t.fn != nil {
		t.fn()
		return
	}
	d.handleEvent(ctx, t.chanID, t.ev)
}

// noteLost counts a lost event and asks for a resync + pbx.EventLost.
func (d *Driver) noteLost() {
	d.health.Lost()
	d.requestResync()
}

// requestResync asks the link loop for a resync (coalesced); when events
// were lost since the last one, pbx.EventLost follows it.
func (d *Driver) requestResync() {
	select {
	case d.lostCh <- struct{}{}:
	default: // one pending already covers this one
	}
}

// frame is what the driver reads of an ARI event: the fields of the events
// it acts on (StasisStart, ChannelStateChange, Dial, ChannelHangupRequest,
// ChannelDestroyed, ChannelTalkingStarted/Finished), named as in
// Asterisk's events.json (fixtures/asterisk/api-docs). A frame is parsed
// once, here, into this one struct: decoding it into the ari package's
// typed events as well took three passes over every frame plus one more
// for each channel object, the largest CPU cost of the event path.
type frame struct {
	Type      string       `json:"type"`
	Timestamp ari.DateTime `json:"timestamp"`
	Channel   *struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"channel"`
	// Dial: the originated channel is the peer (no caller) in our Dial
	// events.
	Peer *struct {
		ID string `json:"id"`
	} `json:"peer"`
	Dialstatus string `json:"dialstatus"`
	// StasisStart: the application arguments (ours: the conference id).
	Args []string `json:"args"`
	// ChannelDestroyed: Q.850 cause; ChannelHangupRequest: Asterisk's
	// soft-hangup flag, not Q.850.
	Cause    int    `json:"cause"`
	CauseTxt string `json:"cause_txt"`
	Soft     bool   `json:"soft"`
	// ChannelDtmfReceived: the key (one event when it is released).
	Digit string `json:"digit"`
	// PlaybackStarted / PlaybackFinished: ours target "channel:<leg>".
	Playback *struct {
		ID        string `json:"id"`
		TargetURI string `json:"target_uri"`
	} `json:"playback"`
}

// handledTypes are the events dispatch routes to a leg.
var handledTypes = map[string]bool{"StasisStart": true, "StasisEnd": true, "ChannelStateChange": true,
	"ChannelDestroyed": true, "ChannelTalkingStarted": true, "ChannelTalkingFinished": true, "Dial": true,
	"ApplicationReplaced": true, "ChannelHangupRequest": true, "ChannelDtmfReceived": true, "PlaybackFinished": true}

// softHangupShutdown is Asterisk's AST_SOFTHANGUP_SHUTDOWN flag: the cause
// of the soft ChannelHangupRequest that `core restart` / `core stop` sends
// for every channel before it goes (recordings f_*). Our DELETE shows 32
// (AST_SOFTHANGUP_EXPLICIT).
const softHangupShutdown = 4

// reasonPBXRestarted is the end reason of a leg hung up because the PBX
// shut down or restarted (the controller uses the same words when a
// restart is only noticed after the fact).
const reasonPBXRestarted = "pbx restarted"

// dispatch routes one ARI frame given as its bytes (see dispatchFrame).
func (d *Driver) dispatch(raw []byte) bool {
	h := new(frame)
	err := json.Unmarshal(raw, h)
	if err != nil && h.Type == "" {
		// The error may have stopped decoding before "type": read it
		// alone, to tell an ignored type from a broken frame.
		var t struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &t) == nil {
			h.Type = t.Type
		}
	}
	return d.dispatchFrame(h, err)
}

// dispatchFrame is called by the websocket reader for every frame, decoded
// into h with err (nil: decoded). It never blocks: a full shard queue
// counts the frame lost. It returns false when the frame says this
// connection no longer gets our events (ApplicationReplaced).
func (d *Driver) dispatchFrame(h *frame, err error) bool {
	d.stats.eventsReceived.Add(1)
	if err != nil || h.Type == "" {
		// A frame of a type the driver ignores may carry a field of
		// the same name with another shape: that loses nothing.
		if err != nil && h.Type != "" && !handledTypes[h.Type] {
			d.log.Debug("ARI frame of an ignored type did not decode", "type", h.Type, "err", err)
			return true
		}
		d.log.Warn("undecodable ARI frame", "type", h.Type, "err", err)
		d.noteLost()
		return true
	}
	var chanID string
	switch h.Type {
	case "StasisStart", "StasisEnd", "ChannelStateChange", "ChannelDestroyed",
		"ChannelTalkingStarted", "ChannelTalkingFinished", "ChannelDtmfReceived":
		if h.Channel != nil {
			chanID = h.Channel.ID
		}
	case "PlaybackFinished":
		if h.Playback != nil {
			chanID, _ = strings.CutPrefix(h.Playback.TargetURI, "channel:")
			if chanID == h.Playback.TargetURI {
				chanID = "" // a bridge's playback: not ours
			}
		}
	case "Dial":
		if h.Peer != nil {
			chanID = h.Peer.ID
		}
	case "ApplicationReplaced":
		return false
	case "ChannelHangupRequest":
		// Only the shutdown flag matters: the leg is ending because
		// Asterisk is going down, which its ChannelDestroyed (cause 16)
		// does not say.
		if h.Soft && h.Cause == softHangupShutdown && h.Channel != nil {
			chanID = h.Channel.ID
		}
	default:
		// ChannelVarset, bridge enter/leave, BridgeDestroyed (not
		// guaranteed; the DELETE's 204 is the end), …
		return true
	}
	if chanID == "" {
		return true
	}
	q := d.shardFor(chanID).q
	select {
	case q <- task{chanID: chanID, ev: h}:
		return true
	default:
	}
	t := time.NewTimer(d.queueWait)
	defer t.Stop()
	select {
	case q <- task{chanID: chanID, ev: h}:
	case <-t.C:
		d.log.Warn("event queue full: event dropped, will resync", "type", h.Type, "channel", chanID)
		d.noteLost()
	}
	return true
}

// enqueueWait runs fn on the shard of chanID after what is queued there,
// waiting for room (resync fixes are not dropped) and for fn to finish.
func (d *Driver) enqueueWait(ctx context.Context, chanID string, fn func()) error {
	t := task{chanID: chanID, fn: fn, done: make(chan struct{})}
	select {
	case d.shardFor(chanID).q <- t:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func eventTime(ev *frame) time.Time {
	if t := time.Time(ev.Timestamp); !t.IsZero() {
		return t
	}
	return time.Now()
}

// legFor returns the leg for a channel id, creating an entry for a channel
// of our app we did not dial in this process (a leg of an earlier run).
// Called with d.mu held.
func (d *Driver) legFor(id string) *leg {
	l := d.legs[id]
	if l == nil {
		l = &leg{id: id, placed: true}
		d.legs[id] = l
	}
	return l
}

// handleEvent runs on the channel's shard worker.
func (d *Driver) handleEvent(ctx context.Context, chanID string, e *frame) {
	at := eventTime(e)
	switch e.Type {
	case "ChannelDestroyed", "ChannelHangupRequest", "StasisEnd", "PlaybackFinished":
	default:
		if d.pendingHangup(chanID) {
			return // hung up before it existed: never ringing, never bridged
		}
	}
	switch e.Type {
	case "ChannelStateChange":
		// "Ringing" is 180; "Ring" would be an inbound channel's own
		// state and never comes for our originated legs.
		if e.Channel != nil && e.Channel.State == "Ringing" {
			d.markRinging(chanID, at)
		}
	case "Dial":
		// RINGING is 180, PROGRESS is 183 early media: both are ringing
		// (early media is never answered).
		if e.Dialstatus == "RINGING" || e.Dialstatus == "PROGRESS" {
			d.markRinging(chanID, at)
		}
	case "StasisStart":
		confID := ""
		if len(e.Args) > 0 {
			confID = e.Args[0]
		}
		d.answered(ctx, chanID, confID, at, nil)
	case "StasisEnd":
		// Nothing to report: ChannelDestroyed follows with the cause.
	case "ChannelHangupRequest":
		if e.Soft && e.Cause == softHangupShutdown {
			d.mu.Lock()
			if l := d.legs[chanID]; l != nil && !l.ended {
				l.shutdown = true
			}
			d.mu.Unlock()
		}
	case "ChannelDestroyed":
		d.mu.Lock()
		l := d.legFor(chanID)
		if l.ended {
			d.mu.Unlock()
			return
		}
		l.ended, l.endedAt = true, time.Now()
		l.placed = true
		cancelled, shutdown, confID := l.cancelled, l.shutdown, l.conf
		d.mu.Unlock()
		reason := ""
		switch {
		case cancelled:
			reason = "hung up by convoice"
		case shutdown:
			reason = reasonPBXRestarted
		}
		d.log.Info("leg ended", "leg", chanID, "cause", e.Cause, "cause_txt", e.CauseTxt, "cancelled", cancelled)
		causeText := e.CauseTxt
		if e.Cause == pbx.CauseUnknown {
			// A BYE without an RFC 3326 Reason reaches ARI as cause 0
			// "Unknown": no cause was given, which is not an error.
			causeText = ""
		}
		d.emit(pbx.Event{Type: pbx.EventEnded, LegID: chanID, ConferenceID: confID,
			Cause: e.Cause, CauseText: causeText, Reason: reason, At: at})
	case "ChannelDtmfReceived":
		d.confirmDigit(ctx, chanID, e.Digit, at)
	case "PlaybackFinished":
		if e.Playback != nil {
			d.confirmPlaybackFinished(chanID, e.Playback.ID)
		}
	case "ChannelTalkingStarted":
		d.talking(chanID, pbx.EventTalkingStarted, at)
	case "ChannelTalkingFinished":
		d.talking(chanID, pbx.EventTalkingFinished, at)
	}
}

func (d *Driver) markRinging(chanID string, at time.Time) {
	d.mu.Lock()
	l := d.legFor(chanID)
	if l.abandoned && !l.ended && !l.ringing {
		l.ringing, l.placed = true, true // hang up once
		d.mu.Unlock()
		d.log.Warn("a call whose originate timed out is ringing: hanging it up", "leg", chanID)
		d.hangupQuietly(context.Background(), chanID)
		return
	}
	if l.ringing || l.connected || l.ended || l.abandoned {
		d.mu.Unlock()
		return
	}
	l.ringing, l.placed = true, true
	confID := l.conf
	d.mu.Unlock()
	d.emit(pbx.Event{Type: pbx.EventRinging, LegID: chanID, ConferenceID: confID, At: at})
}

func (d *Driver) talking(chanID string, typ pbx.EventType, at time.Time) {
	d.mu.Lock()
	l := d.legFor(chanID)
	if l.ended {
		d.mu.Unlock()
		return
	}
	confID := l.conf
	d.mu.Unlock()
	d.emit(pbx.Event{Type: typ, LegID: chanID, ConferenceID: confID, At: at})
}

// fix describes a resync finding for answered(): the leg is in Stasis and
// was either in no bridge (inBridge false: add it) or already bridged
// without our having reported it. readAt is when the PBX state was read, so
// a fix that an event overtook is skipped.
type fix struct {
	reason   string
	readAt   time.Time
	inBridge bool
}

// answered puts an answered leg (in Stasis) into its conference and reports
// it connected, once. It runs on the leg's shard, for a StasisStart (f nil)
// or for a resync finding (f set).
func (d *Driver) answered(ctx context.Context, chanID, argConf string, at time.Time, f *fix) {
	d.mu.Lock()
	l := d.legFor(chanID)
	l.placed = true
	if l.conf == "" {
		l.conf = argConf
	}
	confID := l.conf
	skip := l.ended || l.cancelled ||
		(f == nil && l.connected) || // a duplicate StasisStart
		(f != nil && l.bridgedAt.After(f.readAt)) // handled since the read
	var c *conf
	if confID != "" {
		c = d.confs[confID]
	}
	confEnded := c != nil && c.ended
	abandoned := l.abandoned && !l.ended
	d.mu.Unlock()
	log := d.log.With("leg", chanID, "conference", confID)
	if abandoned {
		log.Warn("a call whose originate timed out answered: hanging it up, not joining it")
		d.hangupQuietly(ctx, chanID)
		return
	}
	if skip {
		return
	}
	if confID == "" || confEnded {
		// Nowhere to put it: a channel in our app without our argument,
		// or a late answer after EndConference. Do not leave it in
		// silence.
		log.Warn("answered leg has no live conference: hanging it up")
		d.hangupQuietly(ctx, chanID)
		return
	}
	d.mu.Lock()
	confirming := l.confirm != nil && !l.confirm.joined
	if confirming && f != nil && f.inBridge {
		l.confirm.joined, confirming = true, false // it joined while we were blind
	}
	d.mu.Unlock()
	if confirming {
		// Into the mix only after the key (confirm.go); a resync finds
		// it out of the bridge while it listens to the prompt.
		d.confirmStart(ctx, chanID, confID, at)
		return
	}
	d.join(ctx, chanID, confID, at, f)
}

// join puts an answered leg into its bridge (unless a resync found it
// there) and reports it connected, once. Runs on the leg's shard.
func (d *Driver) join(ctx context.Context, chanID, confID string, at time.Time, f *fix) {
	log := d.log.With("leg", chanID, "conference", confID)
	d.mu.Lock()
	l := d.legFor(chanID)
	d.mu.Unlock()
	if f == nil || !f.inBridge {
		if d.cfg.TalkDetect {
			// Before addChannel, as recorded (h). Failure is not
			// fatal: without func_talkdetect Asterisk answers 204 and
			// stays silent; a leg that is gone answers 404.
			q := url.Values{"variable": {"TALK_DETECT(set)"}, "value": {""}}
			if err := d.rest.do(ctx, http.MethodPost, "/channels/"+pathEsc(chanID)+"/variable", q, nil, nil); err != nil {
				log.Warn("TALK_DETECT(set) failed", "err", err)
			}
		}
		if err := d.addToBridge(ctx, chanID, confID, log); err != nil {
			return
		}
		if f != nil {
			d.stats.bridgeFixes.Add(1)
		}
	}
	d.mu.Lock()
	l.bridgedAt = time.Now()
	emit := !l.connected && !l.ended
	l.connected = true
	d.mu.Unlock()
	if !emit {
		return
	}
	reason := ""
	if f != nil {
		reason = f.reason
		log.Info("leg connected (resync)", "reason", reason)
	} else {
		log.Info("leg connected")
	}
	d.emit(pbx.Event{Type: pbx.EventConnected, LegID: chanID, ConferenceID: confID, At: at, Reason: reason})
}

// addToBridge runs POST /bridges/{conf}/addChannel?channel={leg}, with a
// few retries for transient failures. A missing bridge means the
// conference was ended (here or by another replica): the leg is hung up,
// the bridge is never made again.
func (d *Driver) addToBridge(ctx context.Context, chanID, confID string, log interface {
	Warn(string, ...any)
	Error(string, ...any)
}) error {
	q := url.Values{"channel": {chanID}}
	path := "/bridges/" + pathEsc(confID) + "/addChannel"
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		err = d.rest.do(ctx, http.MethodPost, path, q, nil, nil)
		switch st := statusOf(err); {
		case err == nil:
			return nil
		case st == http.StatusNotFound: // Bridge not found
			// The conference was ended (by us, or by another replica:
			// then we never heard of it). Making the bridge again would
			// bring back a room the controller ended, with this leg
			// alone in it: hang the leg up instead.
			log.Warn("the leg answered after its conference's bridge was gone: hanging it up")
			d.mu.Lock()
			if c := d.confs[confID]; c != nil && !c.ended {
				c.ended, c.endedAt = true, time.Now()
			}
			d.mu.Unlock()
			d.hangupQuietly(ctx, chanID)
			return err
		case st == http.StatusBadRequest, st == http.StatusUnprocessableEntity:
			// "Channel not found" / "not in Stasis": it is gone or
			// leaving; ChannelDestroyed will tell.
			log.Warn("could not add leg to its conference", "err", err)
			return err
		}
	}
	log.Error("could not add answered leg to its conference; will retry on resync", "err", err)
	d.requestResync()
	return err
}

func (d *Driver) hangupQuietly(ctx context.Context, chanID string) {
	if err := d.Hangup(ctx, chanID); err != nil && !errors.Is(err, pbx.ErrNotFound) {
		d.log.Warn("hangup failed", "leg", chanID, "err", err)
	}
}
