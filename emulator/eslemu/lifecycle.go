package eslemu

import (
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

// A channel's life as the scripted phone plays it: originate up to
// CS_CONSUME_MEDIA, ringing or refusal, answer, the originate's result and
// every way a call ends. The channel itself and its event headers are in
// channel.go.

// after runs f under the server lock after d, unless the channel is gone
// or the server restarted meanwhile.
func (s *Server) afterLocked(ch *channel, d time.Duration, f func()) {
	gen := s.gen
	t := time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if ch.gone || s.gen != gen || s.closed {
			return
		}
		f()
	})
	ch.timers = append(ch.timers, t)
}

// startLocked runs the first part of an originate, up to CS_CONSUME_MEDIA,
// as recorded: CHANNEL_OUTGOING and CHANNEL_STATE CS_INIT come before
// CHANNEL_CREATE.
func (s *Server) startLocked(ch *channel, vars []hdr) {
	now := time.Now()
	ch.created = now
	ch.gen = s.gen
	ch.state, ch.stateNum, ch.callState, ch.answer = "CS_NONE", 1, "DOWN", "ringing"
	s.chans[ch.uuid] = ch
	s.chanOrder = append(s.chanOrder, ch.uuid)
	s.sessions++
	ch.sessionID = s.sessions
	s.fireChanLocked(ch, "CHANNEL_OUTGOING")
	s.setStateLocked(ch, "CS_INIT", 1)

	v := ch.vars
	v.set("direction", "outbound")
	v.set("is_outbound", "true")
	v.set("uuid", ch.uuid)
	v.set("call_uuid", ch.uuid)
	v.set("session_id", strconv.Itoa(ch.sessionID))
	if ch.gateway != "" {
		v.set("sip_gateway_name", ch.gateway)
		v.set("sip_profile_name", "gateway")
	} else {
		v.set("sip_profile_name", s.profileOf(ch.dial))
	}
	v.set("channel_name", ch.name)
	for _, h := range vars {
		v.set(h.k, h.v)
	}
	// originate_early_media: whether the originate counts early media as
	// success; ignore_early_media=true turns it off (recording p).
	ch.ignoreEarly = astTrue(varOfList(vars, "ignore_early_media"))
	v.set("originate_early_media", strconv.FormatBool(!ch.ignoreEarly))
	v.set("originate_endpoint", "sofia")
	v.set("sofia_profile_name", s.profileOf(ch.dial))
	v.set("recovery_profile_name", s.profileOf(ch.dial))

	ch.stateNum = 2
	s.fireChanLocked(ch, "CHANNEL_CREATE")
	s.fireChanLocked(ch, "CHANNEL_ORIGINATE")
	s.setStateLocked(ch, "CS_ROUTING", 2)
	s.setStateLocked(ch, "CS_CONSUME_MEDIA", 7)
	if s.cfg.OnOriginate != nil {
		f, u := s.cfg.OnOriginate, ch.uuid
		go f(u, now)
	}

	// The far end answers the INVITE after SignalDelay; an unanswered
	// call gives up at originate_timeout, counted from the start.
	s.afterLocked(ch, s.cfg.SignalDelay, func() { s.farEndLocked(ch) })
	s.afterLocked(ch, ch.timeout, func() {
		// An originate that already succeeded on early media is over: the
		// timeout no longer applies.
		if ch.answered.IsZero() && ch.cause == "" && !ch.appStarted {
			s.hangupLocked(ch, "NO_ANSWER", hangTimeout)
		}
	})
}

// farEndLocked is the first answer of the far end: a refusal, or ringing.
func (s *Server) farEndLocked(ch *channel) {
	if ch.cause != "" {
		return
	}
	ch.netAddr = true
	switch ch.phone.Outcome {
	case emuphone.Busy, emuphone.Reject, emuphone.Unallocated, emuphone.Congestion, emuphone.Unreachable:
		s.refuseLocked(ch)
		return
	}
	ch.progress = time.Now()
	if ch.phone.EarlyMedia > 0 || s.cfg.EarlyMedia {
		s.earlyMediaLocked(ch)
		return
	}
	s.fireChanLocked(ch, "CHANNEL_PROGRESS")
	s.setCallStateLocked(ch, "RINGING", 2)
	if ch.phone.Answers() {
		wait := ch.phone.Ring - time.Since(ch.created)
		if wait < 0 {
			wait = 0
		}
		if time.Since(ch.created)+wait >= ch.timeout {
			return // rings out: the originate_timeout timer ends it
		}
		s.afterLocked(ch, wait, func() { s.answerLocked(ch) })
	}
}

// earlyMediaDelay is how long after the 183 FreeSWITCH's originate took the
// early media as success (recording p: CALL_UPDATE and BACKGROUND_JOB about
// 20 ms after CHANNEL_PROGRESS_MEDIA).
const earlyMediaDelay = 20 * time.Millisecond

// earlyMediaLocked is a 183 Session Progress with SDP (recording p):
// CHANNEL_PROGRESS_MEDIA (no CHANNEL_PROGRESS), call state EARLY, the
// codecs. Without ignore_early_media the originate succeeds on it and the
// application starts while the leg is still unanswered; with it nothing
// more happens until the 200 OK. After the early media the phone answers,
// or refuses with 480 ("0187"); a phone that only rings (Config.EarlyMedia
// with "0480") stays in early media.
func (s *Server) earlyMediaLocked(ch *channel) {
	ch.progressMedia = ch.progress
	ch.answer = "early"
	s.fireChanLocked(ch, "CHANNEL_PROGRESS_MEDIA")
	s.setCallStateLocked(ch, "EARLY", 3)
	ch.media, ch.readCodec = true, "PCMU"
	s.codecLocked(ch, false)
	s.codecLocked(ch, true)
	if !ch.ignoreEarly {
		s.afterLocked(ch, earlyMediaDelay, func() { s.startAppLocked(ch) })
	}
	length := ch.phone.EarlyMedia
	if length <= 0 { // Config.EarlyMedia on an ordinary phone: its ring
		length = ch.phone.Ring - time.Since(ch.created)
	}
	switch {
	case ch.phone.Answers():
		s.afterLocked(ch, max(length, 0), func() { s.answerLocked(ch) })
	case ch.phone.Outcome == emuphone.Unavailable:
		s.afterLocked(ch, length, func() { s.refuseLocked(ch) })
	}
}

// refuseLocked is the far end's final refusal of the INVITE (486, 603,
// 404, 503, or 480 after early media).
func (s *Server) refuseLocked(ch *channel) {
	r := refusalFor(ch.phone)
	v := ch.vars
	v.set("sip_hangup_disposition", "recv_refuse")
	v.set("sip_invite_failure_status", strconv.Itoa(r.status))
	v.set("sip_invite_failure_phrase", r.phrase)
	v.set("sip_term_status", strconv.Itoa(r.status))
	v.set("proto_specific_hangup_cause", "sip:"+strconv.Itoa(r.status))
	v.set("sip_term_cause", strconv.Itoa(causeQ850[r.cause]))
	s.hangupLocked(ch, r.cause, hangRefused)
}

// answerLocked is the 200 OK and, unless the application already runs on
// early media, what follows it up to the application.
func (s *Server) answerLocked(ch *channel) {
	if ch.cause != "" || !ch.answered.IsZero() {
		return
	}
	if !ch.media { // after early media the codecs are set already
		ch.media, ch.readCodec = true, "PCMU"
		s.codecLocked(ch, false)
		s.codecLocked(ch, true)
	}
	ch.answered = time.Now()
	ch.answer = "answered"
	s.fireChanLocked(ch, "CHANNEL_ANSWER")
	s.setCallStateLocked(ch, "ACTIVE", 4)
	if ch.appStarted {
		// Running since the early media: only the disposition changes,
		// after the answer's events (recording p).
		ch.vars.set("endpoint_disposition", "ANSWER")
	} else {
		s.startAppLocked(ch)
	}
	if ch.cause == "" {
		s.afterAnswerLocked(ch)
	}
}

// afterAnswerLocked arms what the phone does once answered.
func (s *Server) afterAnswerLocked(ch *channel) {
	if ch.phone.Outcome == emuphone.AnswerThenHangup {
		s.afterLocked(ch, ch.phone.Hold, func() { s.hangupLocked(ch, "NORMAL_CLEARING", hangBye) })
	}
	if ch.phone.Digits != "" {
		s.afterLocked(ch, ch.phone.DigitAfter, func() { s.pressLocked(ch, ch.phone.Digits, 0) })
	}
}

// startAppLocked is the end of a successful originate: caller ids flip
// (CALL_UPDATE), the result goes out, the application runs. It comes with
// the 200 OK, or with the 183 when early media counts as success.
func (s *Server) startAppLocked(ch *channel) {
	if ch.cause != "" || ch.appStarted {
		return
	}
	ch.appStarted = true
	if ch.inline != nil {
		s.startInlineLocked(ch)
		return
	}
	ch.flipped, ch.hitDial = true, true
	if ch.answered.IsZero() {
		ch.vars.set("endpoint_disposition", "EARLY MEDIA")
	} else {
		ch.vars.set("endpoint_disposition", "ANSWER")
	}
	ch.vars.set("channel_cid_flipped", "yes")
	s.fireChanLocked(ch, "CALL_UPDATE")
	s.finishOriginateLocked(ch, "+OK "+ch.uuid+"\n")
	ch.vars.set("call_uuid", ch.uuid)
	s.setStateLocked(ch, "CS_EXECUTE", 4)
	switch ch.app {
	case "conference", "park":
		ch.executing = true
		ch.vars.set("current_application", ch.app)
		ch.vars.set("current_application_data", ch.appData)
		s.fireLocked(s.chanEventLocked(ch, "CHANNEL_EXECUTE", func(e *event) {
			e.add("Application", ch.app).add("Application-Data", ch.appData).add("Application-UUID", ch.appUUID)
		}))
		if ch.app == "conference" {
			ch.readCodec = "L16"
			s.codecLocked(ch, false)
			room, profile, _ := strings.Cut(ch.appData, "@")
			if profile == "" {
				profile = "default"
			}
			s.joinLocked(ch, room, profile)
		}
	default:
		// An application FreeSWITCH does not know: the call is answered,
		// then torn down (recording e, "&nosuchapp()").
		s.hangupLocked(ch, "DESTINATION_OUT_OF_ORDER", hangKill)
	}
}

// finishOriginateLocked reports the originate result once: BACKGROUND_JOB
// for bgapi, the api/response for a blocking api originate.
func (s *Server) finishOriginateLocked(ch *channel, result string) {
	o := ch.orig
	if o == nil || o.done {
		return
	}
	o.done = true
	if o.job != "" {
		s.fireLocked(s.backgroundJobLocked(o.job, "originate", o.arg, result))
		return
	}
	if o.result != nil {
		o.result <- result
	}
}

func (s *Server) backgroundJobLocked(job, cmd, arg, result string) *event {
	e := s.newEventLocked("BACKGROUND_JOB", "", callingOf["BACKGROUND_JOB"])
	e.add("Job-UUID", job).add("Job-Command", cmd)
	if arg != "" {
		e.add("Job-Command-Arg", arg)
	}
	e.setBody(result)
	return e
}

// How a channel ends; it decides the event order (README of the recordings).
type hangHow int

const (
	hangKill    hangHow = iota // uuid_kill or an API: HANGUP first
	hangBye                    // far end BYE: like kill, recv_bye
	hangRefused                // final SIP refusal before answer
	hangTimeout                // originate_timeout: BACKGROUND_JOB right after HANGUP
	hangHup                    // conference hup/kick: member events first
	hangShutdown
)

// hangupLocked tears a channel down with the recorded event order.
func (s *Server) hangupLocked(ch *channel, cause string, how hangHow) {
	if ch.cause != "" || ch.gone || ch.hanging {
		return
	}
	ch.hanging = true
	for _, t := range ch.timers {
		t.Stop()
	}
	ch.timers = nil
	if how == hangShutdown {
		// During shutdown every channel event carries the variables
		// (recordings g_shutdown_*).
		ch.verbose = true
	}
	v := ch.vars
	answered := !ch.answered.IsZero()
	if how == hangBye {
		v.set("sip_term_status", "200")
		v.set("proto_specific_hangup_cause", "sip:200")
		v.set("sip_term_cause", "16")
	}
	m := ch.member
	if how == hangHup && m != nil {
		// conference hup/kick: the member leaves and the application ends
		// before the channel hangs up.
		s.leaveLocked(m)
		s.closeAppLocked(ch)
		s.hangupEventLocked(ch, cause)
	} else {
		s.hangupEventLocked(ch, cause)
		if how == hangBye {
			v.set("sip_hangup_disposition", "recv_bye")
		}
		if how == hangTimeout {
			s.finishOriginateLocked(ch, "-ERR "+cause+"\n")
		}
		if m != nil {
			s.leaveLocked(m)
		}
		s.closeAppLocked(ch)
	}
	s.setStateLocked(ch, "CS_HANGUP", 10)
	v.set("hangup_cause", cause)
	v.set("hangup_cause_q850", strconv.Itoa(causeQ850[cause]))
	s.setCallStateLocked(ch, "HANGUP", 7)
	v.set("start_epoch", strconv.FormatInt(ch.created.Unix(), 10))
	v.set("answer_epoch", epochOrZero(ch.answered))
	v.set("end_epoch", strconv.FormatInt(ch.hungup.Unix(), 10))
	v.set("duration", strconv.Itoa(int(ch.hungup.Sub(ch.created).Seconds())))
	billsec := 0
	if answered {
		billsec = int(ch.hungup.Sub(ch.answered).Seconds())
	}
	v.set("billsec", strconv.Itoa(billsec))
	switch {
	case how == hangRefused || how == hangBye:
	case answered:
		v.set("sip_hangup_disposition", "send_bye")
	default:
		// FreeSWITCH cancels the INVITE; the disposition is written with
		// the CDR (recording i).
		v.set("sip_hangup_disposition", "send_cancel")
		v.set("sip_invite_failure_status", "487")
		v.set("sip_invite_failure_phrase", "CANCEL")
	}
	ch.stateNum = 11
	s.setStateLocked(ch, "CS_REPORTING", 11)
	s.fireChanLocked(ch, "CHANNEL_HANGUP_COMPLETE")
	s.finishOriginateLocked(ch, "-ERR "+cause+"\n")
	if ch.gateway != "" && !answered {
		s.gwFailed++
	}
	s.destroyLocked(ch)
}

func (s *Server) hangupEventLocked(ch *channel, cause string) {
	ch.cause = cause
	ch.hungup = time.Now()
	ch.answer = "hangup"
	ch.stateNum = 10
	s.fireChanLocked(ch, "CHANNEL_HANGUP")
}

// closeAppLocked ends the running application (CHANNEL_EXECUTE_COMPLETE);
// mod_conference puts the read codec back first (CODEC).
func (s *Server) closeAppLocked(ch *channel) {
	if !ch.executing {
		return
	}
	ch.executing = false
	if ch.app == "conference" {
		ch.readCodec = "PCMU"
		s.codecLocked(ch, false)
	}
	s.fireLocked(s.chanEventLocked(ch, "CHANNEL_EXECUTE_COMPLETE", func(e *event) {
		e.add("Application", ch.app)
		if ch.appData != "" || ch.inline == nil { // answer, hangup: none (q)
			e.add("Application-Data", ch.appData)
		}
		e.add("Application-Response", "_none_").add("Application-UUID", ch.appUUID)
	}))
}

func (s *Server) destroyLocked(ch *channel) {
	ch.stateNum = 12
	s.fireChanLocked(ch, "CHANNEL_DESTROY")
	s.setStateLocked(ch, "CS_DESTROY", 12)
	s.removeChanLocked(ch)
}

func (s *Server) removeChanLocked(ch *channel) {
	ch.gone = true
	delete(s.chans, ch.uuid)
	for i, u := range s.chanOrder {
		if u == ch.uuid {
			s.chanOrder = append(s.chanOrder[:i], s.chanOrder[i+1:]...)
			break
		}
	}
}

func epochOrZero(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.Unix(), 10)
}

// phantomDestroyLocked is what FreeSWITCH emits for a session it could not
// set up (unknown gateway/profile, no user): CHANNEL_DESTROY and
// CHANNEL_STATE CS_DESTROY for a uuid that never had CHANNEL_CREATE.
func (s *Server) phantomDestroyLocked(uuid string) {
	s.sessions++
	ch := &channel{uuid: uuid, name: "N/A", vars: newVarList(), sessionID: s.sessions,
		state: "CS_NONE", callState: "DOWN", answer: "ringing"}
	ch.vars.set("direction", "outbound")
	ch.vars.set("is_outbound", "true")
	ch.vars.set("uuid", uuid)
	ch.vars.set("call_uuid", uuid)
	ch.vars.set("session_id", strconv.Itoa(ch.sessionID))
	s.fireChanLocked(ch, "CHANNEL_DESTROY")
	ch.state, ch.stateNum = "CS_DESTROY", 0
	s.fireChanLocked(ch, "CHANNEL_STATE")
}

// pressLocked is the phone pressing digits[i] now (RFC 4733): FreeSWITCH
// sends one DTMF event when the key ends, DTMF-Duration in samples at 8 kHz
// (recording q: 160 ms → 1280), and hands the digit to a running
// play_and_get_digits.
func (s *Server) pressLocked(ch *channel, digits string, i int) {
	if i >= len(digits) {
		return
	}
	d := ch.phone.DigitLength
	if d <= 0 {
		d = emuphone.DigitLength
	}
	s.afterLocked(ch, d, func() {
		digit := string(digits[i])
		s.fireLocked(s.chanEventLocked(ch, "DTMF", func(e *event) {
			e.add("DTMF-Digit", digit).
				add("DTMF-Duration", strconv.Itoa(int(d/time.Millisecond)*8)).
				add("DTMF-Source", "RTP")
		}))
		if ch.onDigit != nil {
			ch.onDigit(digit)
		}
		s.pressLocked(ch, digits, i+1)
	})
}
