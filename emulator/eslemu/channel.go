package eslemu

import (
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

// varList is a channel's variables in FreeSWITCH order: setting a variable
// that exists moves it to the end (switch_event_add_header on a channel's
// variable event with unique headers), which is why call_uuid or
// current_application move in the recordings.
type varList struct {
	keys []string
	vals map[string]string
}

func newVarList() *varList { return &varList{vals: map[string]string{}} }

func (v *varList) set(k, val string) {
	if _, ok := v.vals[k]; ok {
		for i, x := range v.keys {
			if x == k {
				v.keys = append(v.keys[:i], v.keys[i+1:]...)
				break
			}
		}
	}
	v.keys = append(v.keys, k)
	v.vals[k] = val
}

func (v *varList) get(k string) (string, bool) { x, ok := v.vals[k]; return x, ok }

// Causes the emulator uses, with their Q.850 value as
// switch_channel_cause_q850 gives it (values above 127 report 16).
var causeQ850 = map[string]int{
	"NORMAL_CLEARING": 16, "USER_BUSY": 17, "NO_USER_RESPONSE": 18, "NO_ANSWER": 19,
	"CALL_REJECTED": 21, "UNALLOCATED_NUMBER": 1, "NORMAL_TEMPORARY_FAILURE": 41,
	"NORMAL_CIRCUIT_CONGESTION": 34, "NETWORK_OUT_OF_ORDER": 38, "SWITCH_CONGESTION": 42,
	"DESTINATION_OUT_OF_ORDER": 27, "RECOVERY_ON_TIMER_EXPIRE": 102, "NORMAL_UNSPECIFIED": 31,
	"ORIGINATOR_CANCEL": 16, "SYSTEM_SHUTDOWN": 16, "MANAGER_REQUEST": 16, "CRASH": 16,
	"UNSPECIFIED": 0, "NO_ROUTE_DESTINATION": 3, "INVALID_NUMBER_FORMAT": 28,
	"SUBSCRIBER_ABSENT": 20, "SERVICE_UNAVAILABLE": 63, "INTERWORKING": 127,
}

// knownCause reports whether uuid_kill accepts the name (switch_channel_str2cause).
func knownCause(c string) bool { _, ok := causeQ850[strings.ToUpper(c)]; return ok }

// outcome of the far end for the emulator's channels: the cause FreeSWITCH
// reports and the SIP answer the lab's fake carrier sent (recordings b, d).
type refusal struct {
	cause  string
	status int
	phrase string
}

func refusalFor(p emuphone.Phone) refusal {
	switch p.Outcome {
	case emuphone.Busy:
		return refusal{"USER_BUSY", 486, "Busy Here"}
	case emuphone.Reject:
		return refusal{"CALL_REJECTED", 603, "Decline"}
	case emuphone.Unallocated:
		return refusal{"UNALLOCATED_NUMBER", 404, "Not Found"}
	case emuphone.Congestion:
		// The lab's carrier answered 503 and FreeSWITCH reported
		// NORMAL_TEMPORARY_FAILURE (41), not congestion (34): recording d.
		return refusal{"NORMAL_TEMPORARY_FAILURE", 503, "Service Unavailable"}
	default: // Unreachable: never recorded over sofia; a request timeout.
		return refusal{"RECOVERY_ON_TIMER_EXPIRE", 408, "Request Timeout"}
	}
}

// origination is the request that created a channel: a bgapi job or a
// blocking api originate.
type origination struct {
	job    string // Job-UUID for bgapi, "" for api
	arg    string // the originate arguments, for Job-Command-Arg
	result chan string
	done   bool
}

// channel is one emulated outbound leg.
type channel struct {
	uuid      string
	dial      string // dial string as given, without {vars}
	name      string // Channel-Name
	dest      string // Caller-Destination-Number
	callee    string // the dialed number as the far end shows it
	gateway   string
	phone     emuphone.Phone
	cidName   string
	cidNum    string
	app       string // application after answer ("conference", "park", …)
	appData   string
	appUUID   string
	sessionID int
	timeout   time.Duration
	gen       int // server generation (restarts)

	state     string // Channel-State
	stateNum  int    // Channel-State-Number
	callState string // Channel-Call-State
	answer    string // Answer-State: ringing, early, answered, hangup
	cause     string // Hangup-Cause once hung up
	hitDial   bool
	media     bool
	readCodec string
	netAddr   bool
	flipped   bool
	executing bool
	hanging   bool // teardown started
	verbose   bool // every event carries the variables

	created, progress, progressMedia, answered, hungup time.Time

	vars     *varList
	orig     *origination
	member   *member
	conf     string // room the leg joined
	speaking bool   // the phone is sending voice
	timers   []*time.Timer
	gone     bool
}

func fsTime(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}

// addBasic is switch_channel_event_set_basic_data.
func (ch *channel) addBasic(e *event, withCause bool) {
	e.add("Channel-State", ch.state).
		add("Channel-Call-State", ch.callState).
		add("Channel-State-Number", strconv.Itoa(ch.stateNum)).
		add("Channel-Name", ch.name).
		add("Unique-ID", ch.uuid).
		add("Call-Direction", "outbound").
		add("Presence-Call-Direction", "outbound").
		add("Channel-HIT-Dialplan", strconv.FormatBool(ch.hitDial)).
		add("Channel-Call-UUID", ch.uuid).
		add("Answer-State", ch.answer)
	if withCause && ch.cause != "" {
		e.add("Hangup-Cause", ch.cause)
	}
	if ch.media {
		rate, bits := "8000", "64000"
		if ch.readCodec == "L16" {
			bits = "128000"
		}
		e.add("Channel-Read-Codec-Name", ch.readCodec).
			add("Channel-Read-Codec-Rate", rate).
			add("Channel-Read-Codec-Bit-Rate", bits).
			add("Channel-Write-Codec-Name", "PCMU").
			add("Channel-Write-Codec-Rate", "8000").
			add("Channel-Write-Codec-Bit-Rate", "64000")
	}
}

// addCaller is switch_caller_profile_event_set_data with prefix "Caller".
// After the answer FreeSWITCH flips caller and callee ids (CALL_UPDATE).
func (ch *channel) addCaller(e *event) {
	e.add("Caller-Direction", "outbound").add("Caller-Logical-Direction", "outbound")
	if ch.flipped {
		e.add("Caller-Caller-ID-Name", "Outbound Call").
			add("Caller-Caller-ID-Number", ch.callee).
			add("Caller-Orig-Caller-ID-Number", ch.cidNum)
		if ch.cidName != "" {
			e.add("Caller-Callee-ID-Name", ch.cidName)
		}
		e.add("Caller-Callee-ID-Number", ch.cidNum)
	} else {
		if ch.cidName != "" {
			e.add("Caller-Caller-ID-Name", ch.cidName)
		}
		e.add("Caller-Caller-ID-Number", ch.cidNum).
			add("Caller-Orig-Caller-ID-Number", ch.cidNum).
			add("Caller-Callee-ID-Name", "Outbound Call").
			add("Caller-Callee-ID-Number", ch.callee)
	}
	if ch.netAddr {
		e.add("Caller-Network-Addr", "127.0.0.1")
	}
	e.add("Caller-ANI", ch.cidNum).
		add("Caller-Destination-Number", ch.dest).
		add("Caller-Unique-ID", ch.uuid).
		add("Caller-Source", "src/switch_ivr_originate.c").
		add("Caller-Context", "default").
		add("Caller-Channel-Name", ch.name).
		add("Caller-Profile-Index", "1").
		add("Caller-Profile-Created-Time", fsTime(ch.created)).
		add("Caller-Channel-Created-Time", fsTime(ch.created)).
		add("Caller-Channel-Answered-Time", fsTime(ch.answered)).
		add("Caller-Channel-Progress-Time", fsTime(ch.progress)).
		add("Caller-Channel-Progress-Media-Time", fsTime(ch.progressMedia)).
		add("Caller-Channel-Hangup-Time", fsTime(ch.hungup)).
		add("Caller-Channel-Transfer-Time", "0").
		add("Caller-Channel-Resurrect-Time", "0").
		add("Caller-Channel-Bridged-Time", "0").
		add("Caller-Channel-Last-Hold", "0").
		add("Caller-Channel-Hold-Accum", "0").
		add("Caller-Screen-Bit", "true").
		add("Caller-Privacy-Hide-Name", "false").
		add("Caller-Privacy-Hide-Number", "false")
}

func (ch *channel) addVars(e *event) {
	for _, k := range ch.vars.keys {
		e.add("variable_"+k, ch.vars.vals[k])
	}
}

// Event kinds that carry the channel variables (as recorded).
var withVars = map[string]bool{
	"CHANNEL_CREATE": true, "CHANNEL_ORIGINATE": true, "CHANNEL_PROGRESS": true,
	"CHANNEL_PROGRESS_MEDIA": true, "CHANNEL_ANSWER": true, "CALL_UPDATE": true,
	"CHANNEL_EXECUTE": true, "CHANNEL_EXECUTE_COMPLETE": true, "CHANNEL_HANGUP": true,
	"CHANNEL_HANGUP_COMPLETE": true, "CHANNEL_DESTROY": true, "CHANNEL_DATA": true,
}

// chanEventLocked builds a channel event with the recorded header layout.
func (s *Server) chanEventLocked(ch *channel, name string, extra func(e *event)) *event {
	e := s.newEventLocked(name, "", callingOf[name])
	e.uuid = ch.uuid
	switch name {
	case "CHANNEL_HANGUP_COMPLETE":
		e.add("Hangup-Cause", ch.cause)
	case "CALL_UPDATE":
		e.add("Direction", "RECV")
	}
	if name == "CHANNEL_CALLSTATE" && extra != nil {
		extra(e) // Original-Channel-Call-State comes before the channel data
		extra = nil
	}
	ch.addBasic(e, true)
	if ch.created.IsZero() { // a session that never got a caller profile
		if withVars[name] {
			ch.addVars(e)
		}
		return e
	}
	ch.addCaller(e)
	if withVars[name] || ch.verbose {
		ch.addVars(e)
	}
	if extra != nil { // Application…, codec details: after the variables
		extra(e)
	}
	return e
}

func (s *Server) fireChanLocked(ch *channel, name string) {
	s.fireLocked(s.chanEventLocked(ch, name, nil))
}

func (s *Server) setStateLocked(ch *channel, state string, num int) {
	ch.state, ch.stateNum = state, num
	s.fireChanLocked(ch, "CHANNEL_STATE")
}

func (s *Server) setCallStateLocked(ch *channel, cs string, num int) {
	old := ch.callState
	ch.callState = cs
	s.fireLocked(s.chanEventLocked(ch, "CHANNEL_CALLSTATE", func(e *event) {
		e.add("Original-Channel-Call-State", old).add("Channel-Call-State-Number", strconv.Itoa(num))
	}))
}

func (s *Server) codecLocked(ch *channel, write bool) {
	s.fireLocked(s.chanEventLocked(ch, "CODEC", func(e *event) {
		if write {
			e.add("Channel-Write-Codec-Name", "PCMU").
				add("Channel-Write-Codec-Rate", "8000").
				add("Channel-Write-codec-bit-rate", "64000")
			return
		}
		bits := "64000"
		if ch.readCodec == "L16" {
			bits = "128000"
		}
		e.add("channel-read-codec-name", ch.readCodec).
			add("channel-read-codec-rate", "8000").
			add("channel-read-codec-bit-rate", bits)
	}))
}

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
	v.set("originate_early_media", "true")
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
		if ch.answered.IsZero() && ch.cause == "" {
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
		r := refusalFor(ch.phone)
		v := ch.vars
		v.set("sip_hangup_disposition", "recv_refuse")
		v.set("sip_invite_failure_status", strconv.Itoa(r.status))
		v.set("sip_invite_failure_phrase", r.phrase)
		v.set("sip_term_status", strconv.Itoa(r.status))
		v.set("proto_specific_hangup_cause", "sip:"+strconv.Itoa(r.status))
		v.set("sip_term_cause", strconv.Itoa(causeQ850[r.cause]))
		s.hangupLocked(ch, r.cause, hangRefused)
		return
	}
	ch.progress = time.Now()
	if s.cfg.EarlyMedia {
		// 183 with SDP: early media, never an answer.
		ch.progressMedia = ch.progress
		ch.answer = "early"
		s.fireChanLocked(ch, "CHANNEL_PROGRESS_MEDIA")
		s.setCallStateLocked(ch, "EARLY", 3)
	} else {
		s.fireChanLocked(ch, "CHANNEL_PROGRESS")
		s.setCallStateLocked(ch, "RINGING", 2)
	}
	switch ch.phone.Outcome {
	case emuphone.Answer, emuphone.AnswerThenHangup:
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

// answerLocked is the 200 OK and what follows it up to the application.
func (s *Server) answerLocked(ch *channel) {
	if ch.cause != "" || !ch.answered.IsZero() {
		return
	}
	ch.media, ch.readCodec = true, "PCMU"
	s.codecLocked(ch, false)
	s.codecLocked(ch, true)
	ch.answered = time.Now()
	ch.answer = "answered"
	s.fireChanLocked(ch, "CHANNEL_ANSWER")
	s.setCallStateLocked(ch, "ACTIVE", 4)
	ch.flipped, ch.hitDial = true, true
	ch.vars.set("endpoint_disposition", "ANSWER")
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
		return
	}
	if ch.phone.Outcome == emuphone.AnswerThenHangup {
		s.afterLocked(ch, ch.phone.Hold, func() { s.hangupLocked(ch, "NORMAL_CLEARING", hangBye) })
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
		e.add("Application", ch.app).add("Application-Data", ch.appData).
			add("Application-Response", "_none_").add("Application-UUID", ch.appUUID)
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
