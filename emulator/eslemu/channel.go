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

func (v *varList) del(k string) {
	if _, ok := v.vals[k]; !ok {
		return
	}
	delete(v.vals, k)
	for i, x := range v.keys {
		if x == k {
			v.keys = append(v.keys[:i], v.keys[i+1:]...)
			break
		}
	}
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
	case emuphone.Unavailable:
		// 183 then 480 Temporarily Unavailable: NO_USER_RESPONSE (18),
		// recording p.
		return refusal{"NO_USER_RESPONSE", 480, "Temporarily Unavailable"}
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
	// ignoreEarly: ignore_early_media=true in the originate's {vars}.
	ignoreEarly bool
	// appStarted: the originate succeeded and the application runs (at
	// the answer, or at the 183 when early media counts).
	appStarted bool
	// inline is the dialplan the answered leg runs instead of an
	// &app(args) (originate … '<apps>' inline, or an XML extension);
	// inlineText is it as given, the destination while routing.
	inline     []dpApp
	inlineText string
	// onDigit receives the keys the phone presses (play_and_get_digits).
	onDigit func(digit string)
	verbose bool // every event carries the variables

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
	"PLAYBACK_START": true, "PLAYBACK_STOP": true,
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
