package asterisk

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/convoice/convoice/pbx"
)

// Confirm-to-join (pbx.DialRequest.Confirm), as recorded (q): on
// StasisStart the leg is reported answered and hears the prompt, played
// with our own playback id (POST /channels/{id}/play/{playbackId}); the key
// comes as ChannelDtmfReceived when it is released. On the key the prompt
// is stopped if it still plays (DELETE /playbacks/{id}: addChannel during a
// prompt would wait for its end) and the leg is added to the bridge
// (EventConnected). Asterisk sends nothing for silence, so the driver runs
// its own timer: Timeout after each prompt's PlaybackFinished, Tries
// prompts in all, then DELETE /channels/{id} (EventEnded follows from the
// PBX's events). Other keys are ignored; a key during the prompt counts; a
// second press finds the leg joined and does nothing.

// Defaults for the zero fields of pbx.Confirm.
const (
	defaultConfirmKey     = "1"
	defaultConfirmTimeout = 5 * time.Second
	defaultConfirmTries   = 2
)

// defaultConfirmPrompt is "press <key>" from Asterisk's stock English core
// sounds: vm-press ("press", the prompt of recording q) then the key as a
// digit ("digits:" plays digits/<n>; both are in asterisk-core-sounds-en).
func defaultConfirmPrompt(key string) string { return "sound:vm-press,digits:" + key }

// confirmState is the prompt-and-key state of one leg. It is changed on
// the leg's shard only (events, timers re-queued there), under Driver.mu.
type confirmState struct {
	key     string
	timeout time.Duration
	tries   int
	media   string

	started  bool   // the prompt flow began (StasisStart seen)
	try      int    // prompts played so far
	playback string // id of the prompt playing now, "" when none plays
	waitGen  int    // bumps to cancel a pending timeout
	joined   bool   // the key came and the leg went into the bridge
	failed   bool   // every try timed out: hung up
}

func newConfirmState(c *pbx.Confirm) *confirmState {
	s := &confirmState{key: c.Key, timeout: c.Timeout, tries: c.Tries, media: c.Prompt}
	if s.key == "" {
		s.key = defaultConfirmKey
	}
	if s.timeout <= 0 {
		s.timeout = defaultConfirmTimeout
	}
	if s.tries <= 0 {
		s.tries = defaultConfirmTries
	}
	if s.media == "" {
		s.media = defaultConfirmPrompt(s.key)
	}
	return s
}

// confirmStart begins the prompt flow of an answered confirm leg, once:
// EventAnswered, then the first prompt. Runs on the leg's shard.
func (d *Driver) confirmStart(ctx context.Context, chanID, confID string, at time.Time) {
	d.mu.Lock()
	l := d.legs[chanID]
	if l == nil || l.confirm == nil || l.confirm.started || l.ended {
		d.mu.Unlock()
		return
	}
	l.confirm.started = true
	d.mu.Unlock()
	d.log.Info("leg answered: playing the confirm prompt", "leg", chanID, "conference", confID)
	d.emit(pbx.Event{Type: pbx.EventAnswered, LegID: chanID, ConferenceID: confID, At: at})
	d.confirmPlay(ctx, chanID)
}

// confirmPlay plays the next prompt, or hangs up when every try is spent.
func (d *Driver) confirmPlay(ctx context.Context, chanID string) {
	d.mu.Lock()
	l := d.legs[chanID]
	if l == nil || l.confirm == nil || l.ended || l.confirm.joined || l.confirm.failed {
		d.mu.Unlock()
		return
	}
	c := l.confirm
	if c.try >= c.tries {
		c.failed = true
		d.mu.Unlock()
		d.log.Info("confirm key never pressed: hanging up", "leg", chanID, "tries", c.tries)
		d.hangupQuietly(ctx, chanID)
		return
	}
	c.try++
	id := fmt.Sprintf("%s-confirm-%d", chanID, c.try)
	c.playback = id
	media := c.media
	d.mu.Unlock()
	err := d.rest.do(ctx, http.MethodPost, "/channels/"+pathEsc(chanID)+"/play/"+pathEsc(id),
		url.Values{"media": {media}}, nil, nil)
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			return // the channel is gone: ChannelDestroyed tells
		}
		// No prompt: wait for the key all the same.
		d.log.Warn("confirm prompt could not be played; waiting for the key without it", "leg", chanID, "err", err)
		d.mu.Lock()
		if c.playback == id {
			c.playback = ""
		}
		d.mu.Unlock()
		d.confirmWait(chanID)
	}
}

// confirmPlaybackFinished: the prompt ended (or was stopped); the try's
// wait for the key starts.
func (d *Driver) confirmPlaybackFinished(chanID, playbackID string) {
	d.mu.Lock()
	l := d.legs[chanID]
	ok := l != nil && l.confirm != nil && l.confirm.playback == playbackID && playbackID != ""
	if ok {
		l.confirm.playback = ""
	}
	waiting := ok && !l.confirm.joined && !l.confirm.failed && !l.ended
	d.mu.Unlock()
	if waiting {
		d.confirmWait(chanID)
	}
}

// confirmWait arms the try's timeout; when it fires (on the leg's shard)
// without the key, the next prompt plays.
func (d *Driver) confirmWait(chanID string) {
	d.mu.Lock()
	l := d.legs[chanID]
	if l == nil || l.confirm == nil {
		d.mu.Unlock()
		return
	}
	l.confirm.waitGen++
	gen, timeout := l.confirm.waitGen, l.confirm.timeout
	d.mu.Unlock()
	time.AfterFunc(timeout, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*d.cfg.RequestTimeout)
		defer cancel()
		_ = d.enqueueWait(ctx, chanID, func() {
			d.mu.Lock()
			l := d.legs[chanID]
			due := l != nil && l.confirm != nil && l.confirm.waitGen == gen
			d.mu.Unlock()
			if due {
				d.confirmPlay(ctx, chanID)
			}
		})
	})
}

// confirmDigit handles a key: the confirm key joins the leg (once), any
// other key is ignored.
func (d *Driver) confirmDigit(ctx context.Context, chanID, digit string, at time.Time) {
	d.mu.Lock()
	l := d.legs[chanID]
	if l == nil || l.confirm == nil || !l.confirm.started || l.confirm.joined || l.confirm.failed || l.ended || l.cancelled {
		d.mu.Unlock()
		return
	}
	c := l.confirm
	if digit != c.key {
		d.mu.Unlock()
		d.log.Info("confirm: another key ignored", "leg", chanID, "digit", digit)
		return
	}
	c.joined = true
	c.waitGen++ // no more timeouts
	playing := c.playback
	c.playback = ""
	confID := l.conf
	d.mu.Unlock()
	if playing != "" {
		// addChannel during a prompt is answered only when it ends (q):
		// stop it to join at once. 404: it had just finished.
		if err := d.rest.do(ctx, http.MethodDelete, "/playbacks/"+pathEsc(playing), nil, nil, nil); err != nil &&
			statusOf(err) != http.StatusNotFound {
			d.log.Warn("stopping the confirm prompt failed", "leg", chanID, "err", err)
		}
	}
	d.log.Info("confirm key pressed: joining the conference", "leg", chanID, "conference", confID)
	d.join(ctx, chanID, confID, at, nil)
}
