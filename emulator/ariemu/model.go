package ariemu

import (
	"cmp"
	"slices"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

type chanState uint8

const (
	stateDown chanState = iota
	stateRing
	stateRinging
	stateUp
)

func (c chanState) String() string {
	switch c {
	case stateRing:
		return "Ring"
	case stateRinging:
		return "Ringing"
	case stateUp:
		return "Up"
	}
	return "Down"
}

// channel is one emulated Asterisk channel. It is kept small: the benchmark
// holds 10,000 of them live. All fields are guarded by Server.mu.
type channel struct {
	id, name   string
	protocolID string // SIP Call-ID; "" for Local channels
	endpoint   string // as requested, "PJSIP/+12025550101@trunk"
	dialstring string // what Dial events report: the part after "PJSIP/"
	context    string // the endpoint's dialplan context
	exten      string
	callerName string
	callerNum  string
	app        string
	appArgs    string
	created    time.Time
	talkSince  time.Time
	seq        uint64
	phone      emuphone.Phone
	bridge     *bridge
	peer       *channel // the other half of a Local pair
	timer      *time.Timer
	playQ      []*playback       // playing first, then queued
	vars       map[string]string // only when someone set one
	timeoutMs  int               // originate timeout; -1: none
	silenceMs  int               // TALK_DETECT silence threshold
	talkGen    uint32            // bumps to cancel pending talk timers
	state      chanState

	local      bool // Local/ channel
	half2      bool // the ";2" half of a Local pair (not originated itself)
	connected  bool // connected line = caller (originate with callerId)
	dialed     bool // the first Dial event went out
	subscribed bool // counted in its application's channel_ids
	inStasis   bool
	gone       bool
	mutedIn    bool
	mutedOut   bool
	talkDetect bool
	talking    bool // detector state: Started sent, Finished not yet
	voice      bool // the far end is sending audio
}

func (ch *channel) stopTimer() {
	if ch.timer != nil {
		ch.timer.Stop()
		ch.timer = nil
	}
}

// setTimerLocked arms the channel's single lifecycle timer (answer, ring
// timeout, far-end hangup): only one of them is ever pending. The callback
// runs under s.mu and is skipped if the timer was replaced or the channel is
// gone meanwhile.
func (s *Server) setTimerLocked(ch *channel, d time.Duration, fn func()) {
	ch.stopTimer()
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || ch.gone || ch.timer != t {
			return
		}
		ch.timer = nil
		fn()
	})
	ch.timer = t
}

func (s *Server) dialplanApp(ch *channel) (name, data string) {
	switch {
	case ch.inStasis:
		if ch.appArgs == "" {
			return "Stasis", ch.app
		}
		return "Stasis", ch.app + "," + ch.appArgs
	case ch.half2:
		return "", ""
	}
	return "AppDial2", "(Outgoing Line)"
}

type bridge struct {
	id, name string
	typ      string // "mixing" or "holding"
	tech     string
	created  time.Time
	seq      uint64
	members  []*channel
	// subs counts, per application, why the application is subscribed to
	// the bridge. addChannel subscribes the channel's application; the
	// channel leaving alive (removeChannel, a move, the bridge deleted with
	// it inside) unsubscribes it; a channel hanging up inside does not.
	// BridgeDestroyed is delivered only to applications still subscribed.
	// That one rule reproduces every recording: BridgeDestroyed after a
	// member hung up in the bridge (a, h, j, l, m), none after DELETE of a
	// bridge that never held a channel or whose members all left alive (k).
	subs map[string]int
}

// recomputeTech follows what Asterisk's smart bridge did in the recordings:
// two PJSIP channels with nothing in the media path go native_rtp; a mute
// framehook or a TALK_DETECT audiohook, a Local channel, or a lone member
// keep simple_bridge; more members need softmix. Callers encode the bridge
// in Entered/LeftBridge events before recomputing, as Asterisk switches
// technology just after the membership change.
func (br *bridge) recomputeTech() {
	if br.typ == "holding" {
		br.tech = "holding_bridge"
		return
	}
	switch n := len(br.members); {
	case n >= 3:
		br.tech = "softmix"
	case n == 2:
		native := true
		for _, m := range br.members {
			if m.local || m.mutedIn || m.mutedOut || m.talkDetect {
				native = false
			}
		}
		if native {
			br.tech = "native_rtp"
		} else {
			br.tech = "simple_bridge"
		}
	default:
		br.tech = "simple_bridge"
	}
}

// app is a Stasis application. It exists while a websocket is connected for
// it or while it holds channels or bridges (recording m).
type app struct {
	name      string
	socks     []*wsConn // registration order; the newest receives events
	nChannels int
	nBridges  int
}

// active is the websocket that receives the application's events: the most
// recent registration wins, as in Asterisk where a new websocket for an
// application replaces the handler of the previous one.
func (a *app) active() *wsConn {
	if len(a.socks) == 0 {
		return nil
	}
	return a.socks[len(a.socks)-1]
}

func (s *Server) gcAppLocked(a *app) {
	if len(a.socks) == 0 && a.nChannels == 0 && a.nBridges == 0 && s.apps[a.name] == a {
		delete(s.apps, a.name)
		s.log.Debug("stasis app destroyed", "app", a.name)
	}
}

func (s *Server) subscribeLocked(ch *channel) {
	a := s.apps[ch.app]
	if a == nil || ch.subscribed {
		return
	}
	ch.subscribed = true
	a.nChannels++
}

func (s *Server) bridgeSubLocked(br *bridge, appName string, delta int) {
	a := s.apps[appName]
	if appName == "" || a == nil {
		return
	}
	old := br.subs[appName]
	n := max(old+delta, 0)
	if n == old {
		return
	}
	if n == 0 {
		delete(br.subs, appName)
	} else {
		if br.subs == nil {
			br.subs = map[string]int{}
		}
		br.subs[appName] = n
	}
	switch {
	case old == 0:
		a.nBridges++
	case n == 0:
		a.nBridges--
		s.gcAppLocked(a)
	}
}

func (s *Server) sortedChannels() []*channel {
	out := make([]*channel, 0, len(s.channels))
	for _, ch := range s.channels {
		out = append(out, ch)
	}
	slices.SortFunc(out, func(a, b *channel) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

func (s *Server) sortedBridges() []*bridge {
	out := make([]*bridge, 0, len(s.bridges))
	for _, br := range s.bridges {
		out = append(out, br)
	}
	slices.SortFunc(out, func(a, b *bridge) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// ---- call progress ----

// startDialLocked sends the originated channel to its far end. It runs right
// after the originate's 200 is written, so the first Dial event follows the
// answer as in the recordings.
func (s *Server) startDialLocked(ch *channel) {
	if ch.gone || ch.dialed {
		return
	}
	ch.dialed = true
	if ch.local {
		s.startLocalLocked(ch)
		return
	}
	s.evDial(ch, "")
	p := ch.phone
	switch p.Outcome {
	case emuphone.Busy, emuphone.Reject, emuphone.Unallocated, emuphone.Congestion:
		// The far end answers the INVITE with 486/603/404/503 at once:
		// HangupRequest with the Q.850 cause and the SIP status, the final
		// Dial, ChannelDestroyed (recording b). Never StasisStart.
		s.farEndRefuseLocked(ch, p.Cause, p.SIPStatus)
		return
	}
	if p.EarlyMedia > 0 {
		// 183 Session Progress with SDP (recording o): Dial PROGRESS, no
		// ChannelStateChange (the leg stays Down), no StasisStart until
		// the 200 OK; the early media never reaches a bridge.
		s.evDial(ch, "PROGRESS")
		s.armRingLocked(ch)
		return
	}
	ch.state = stateRinging
	s.evStateChange(ch)
	s.evDial(ch, "RINGING")
	s.armRingLocked(ch)
}

// armRingLocked schedules what ends the ringing: the answer, or the
// originate timeout, which counts until the answer (recording n).
func (s *Server) armRingLocked(ch *channel) {
	p := ch.phone
	wait := p.Ring // until the far end's final answer
	if p.EarlyMedia > 0 {
		wait = p.EarlyMedia
	}
	timeout := time.Duration(ch.timeoutMs) * time.Millisecond
	switch {
	case p.Answers() && (ch.timeoutMs < 0 || wait < timeout):
		if wait <= 0 {
			s.answerLocked(ch)
			return
		}
		s.setTimerLocked(ch, wait, func() { s.answerLocked(ch) })
	case p.Outcome == emuphone.Unavailable && (ch.timeoutMs < 0 || wait < timeout):
		// 480 after the early media (recording o): HangupRequest cause 19
		// with tech_cause 480 and no soft, Dial NOANSWER, ChannelDestroyed
		// 19 with tech_cause 480; never StasisStart.
		s.setTimerLocked(ch, wait, func() { s.farEndRefuseLocked(ch, 19, p.SIPStatus) })
	case ch.timeoutMs >= 0:
		s.setTimerLocked(ch, timeout, func() {
			// Timeout: only ChannelDestroyed 19, no HangupRequest and no
			// final Dial (recordings c and n).
			s.destroyLocked(ch, 19, s.techCause(ch, 19))
		})
	}
}

func (s *Server) answerLocked(ch *channel) {
	ch.state = stateUp
	s.evStateChange(ch)
	s.evDial(ch, "ANSWER")
	o := ch.phone.Outcome
	ch.voice = !s.cfg.QuietPhones && (o == emuphone.Answer || o == emuphone.AnswerThenHangup)
	if a := s.apps[ch.app]; ch.app != "" && a != nil && a.active() != nil {
		s.subscribeLocked(ch)
		ch.inStasis = true
		s.evVarset(ch, "STASISSTATUS", "")
		s.evStasisStart(ch)
		if o == emuphone.AnswerThenHangup {
			s.setTimerLocked(ch, ch.phone.Hold, func() { s.farEndByeLocked(ch) })
		}
		if ch.phone.Digits != "" {
			time.AfterFunc(ch.phone.DigitAfter, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				if !s.closed && !ch.gone {
					s.pressLocked(ch, ch.phone.Digits)
				}
			})
		}
		return
	}
	// Stasis() fails when the application has no websocket (Asterisk logs
	// "Stasis app '<app>' not active" or "doesn't exist"); the dial thread
	// then hangs the answered channel up about 20 ms later, with no
	// StasisStart ever (recording m). A dialplan originate (extension
	// instead of app) ends the same way: the emulator has no dialplan.
	s.log.Warn("stasis app not active: hanging up answered channel", "app", ch.app, "channel", ch.id)
	s.setTimerLocked(ch, 20*time.Millisecond, func() { s.destroyLocked(ch, 16, 0) })
}

func (s *Server) farEndRefuseLocked(ch *channel, cause, sipStatus int) {
	s.evHangupRequest(ch, cause, sipStatus, false)
	s.evDial(ch, dialStatus(cause))
	s.destroyLocked(ch, cause, sipStatus)
}

// farEndByeLocked: the far end hangs up an answered call. The
// HangupRequest carries neither cause nor soft (recording j).
func (s *Server) farEndByeLocked(ch *channel) {
	if ch.gone {
		return
	}
	ch.stopTimer()
	s.evHangupRequest(ch, 0, 0, false)
	s.destroyLocked(ch, 16, 0)
}

// hangupByUsLocked is DELETE /channels/{id}: HangupRequest cause 32 soft
// whatever the reason; before the answer a final Dial whose status follows
// the cause, and the cause's SIP status as tech_cause (recording i).
func (s *Server) hangupByUsLocked(ch *channel, cause int) {
	ch.stopTimer()
	s.evHangupRequest(ch, softhangupExplicit, 0, true)
	if ch.state != stateUp && !ch.half2 {
		if !ch.dialed {
			// DELETE raced the dial (recording i, "now" case): the first
			// Dial still goes out, after the HangupRequest.
			ch.dialed = true
			s.evDial(ch, "")
		}
		s.evDial(ch, dialStatus(cause))
		s.destroyLocked(ch, cause, s.techCause(ch, cause))
		return
	}
	s.destroyLocked(ch, cause, 0)
}

// shutdownHangupLocked is a channel's end in `core restart now`
// (recordings f_*).
func (s *Server) shutdownHangupLocked(ch *channel) {
	if ch.gone {
		return
	}
	ch.stopTimer()
	s.evHangupRequest(ch, softhangupShutdown, 0, true)
	if ch.state != stateUp && !ch.half2 {
		if !ch.dialed {
			ch.dialed = true
			s.evDial(ch, "")
		}
		s.evDial(ch, "NOANSWER")
	}
	s.destroyLocked(ch, 16, 0)
}

func (s *Server) techCause(ch *channel, cause int) int {
	if ch.local {
		return 0
	}
	return causeToSIP(cause)
}

// destroyLocked is the common end of every channel: out of its bridge (a
// hangup inside keeps the application subscribed to the bridge), StasisEnd
// if it was in Stasis, ChannelDestroyed with the Q.850 cause.
func (s *Server) destroyLocked(ch *channel, cause, techCause int) {
	if ch.gone {
		return
	}
	ch.stopTimer()
	ch.talkGen++
	ch.talking = false
	s.endPlaybacksLocked(ch)
	if ch.bridge != nil {
		s.leaveBridgeLocked(ch, false)
	}
	if ch.inStasis {
		s.evStasisEnd(ch)
		ch.inStasis = false
		s.evVarset(ch, "STASISSTATUS", "SUCCESS")
	}
	s.evDestroyed(ch, cause, techCause)
	ch.gone = true
	if s.channels[ch.id] == ch {
		delete(s.channels, ch.id)
	}
	if ch.subscribed {
		if a := s.apps[ch.app]; a != nil {
			a.nChannels--
			s.gcAppLocked(a)
		}
	}
	if p := ch.peer; p != nil && !p.gone {
		// The other half of a Local pair follows (extra/g, extra/h2).
		ch.peer, p.peer = nil, nil
		s.evHangupRequest(p, 16, 0, false)
		s.destroyLocked(p, 16, 0)
	}
}

// ---- bridges ----

func (s *Server) enterBridgeLocked(ch *channel, br *bridge) {
	br.members = append(br.members, ch)
	ch.bridge = br
	if ch.subscribed {
		s.bridgeSubLocked(br, ch.app, +1)
	}
	s.evBridgeChannel("ChannelEnteredBridge", br, ch)
	br.recomputeTech()
}

// leaveBridgeLocked takes ch out of its bridge. alive: the channel goes on
// (removeChannel, move, bridge deleted) and its application unsubscribes
// from the bridge; a hangup inside keeps the subscription.
func (s *Server) leaveBridgeLocked(ch *channel, alive bool) {
	br := ch.bridge
	if i := slices.Index(br.members, ch); i >= 0 {
		br.members = slices.Delete(br.members, i, i+1)
	}
	ch.bridge = nil
	s.evBridgeChannel("ChannelLeftBridge", br, ch)
	if alive && ch.subscribed {
		s.bridgeSubLocked(br, ch.app, -1)
	}
	br.recomputeTech()
}

func (s *Server) destroyBridgeLocked(br *bridge) {
	for len(br.members) > 0 {
		s.leaveBridgeLocked(br.members[0], true)
	}
	s.evBridgeDestroyed(br)
	for name := range br.subs {
		if a := s.apps[name]; a != nil {
			a.nBridges--
			s.gcAppLocked(a)
		}
	}
	br.subs = nil
	delete(s.bridges, br.id)
}

// ---- talk detection ----

// talkStartDelay is how long after TALK_DETECT(set) the first talking event
// came for a phone already sending audio (recording h: about 20 ms).
const talkStartDelay = 20 * time.Millisecond

func (s *Server) setTalkDetectLocked(ch *channel, on bool, silenceMs int) {
	if s.noTalkMod {
		// Asterisk: "Function TALK_DETECT not registered"; the request
		// still answered 204 (recording k).
		s.log.Warn("function TALK_DETECT not registered (func_talkdetect unloaded)", "channel", ch.id)
		return
	}
	if !on {
		ch.talkDetect, ch.talking = false, false
		ch.talkGen++
		if ch.bridge != nil {
			ch.bridge.recomputeTech()
		}
		return
	}
	ch.silenceMs = silenceMs
	if ch.talkDetect {
		return
	}
	ch.talkDetect = true
	if ch.bridge != nil {
		ch.bridge.recomputeTech()
	}
	if ch.voice && ch.state == stateUp {
		gen := ch.talkGen
		time.AfterFunc(talkStartDelay, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.closed || ch.gone || ch.talkGen != gen || !ch.talkDetect || !ch.voice || ch.talking {
				return
			}
			ch.talking = true
			ch.talkSince = time.Now()
			s.evTalkingStarted(ch)
		})
	}
}

// setVoice is the far end starting or stopping to speak.
func (s *Server) setVoice(ch *channel, on bool) {
	ch.voice = on
	if !ch.talkDetect || ch.state != stateUp || ch.gone {
		return
	}
	ch.talkGen++ // cancels a pending start or finish
	if on {
		if !ch.talking {
			ch.talking = true
			ch.talkSince = time.Now()
			s.evTalkingStarted(ch)
		}
		return
	}
	if !ch.talking {
		return
	}
	silentAt := time.Now()
	gen := ch.talkGen
	time.AfterFunc(time.Duration(ch.silenceMs)*time.Millisecond, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || ch.gone || ch.talkGen != gen || !ch.talking {
			return
		}
		ch.talking = false
		// duration: talking time, the silence threshold not counted
		// (extra/h2).
		s.evTalkingFinished(ch, int(silentAt.Sub(ch.talkSince).Milliseconds()))
	})
}
