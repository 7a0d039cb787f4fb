// Package emuphone is the table of scripted phones both PBX emulators dial:
// what each number does (ring, answer, busy, …) and for how long.
// It never speaks a PBX protocol or holds a call: it imports nothing of
// convoice, so the same number behaves the same whichever PBX is emulated.
//
// The table is the one fixed in
// API-CONTRACT.md ("The emulator's phones") plus the lab endpoints of the
// Asterisk recordings (PJSIP/1001 … 1007), so recordings can be replayed.
//
// The numbers added with recordings o, p and q: "0183" sends 183 Session
// Progress with early media for Timing.EarlyMedia (3 s), then answers;
// "0187" the same early media, then 480 Temporarily Unavailable; "0111"
// rings like an ordinary phone (Timing.Ring; the lab carrier 0.5 s), answers
// and presses "1" Timing.DigitAfter (1.5 s) after answering, held 160 ms;
// "0190" is a voicemail box: rings like an ordinary phone, answers, never
// presses a key, and hangs up (BYE) Timing.VoicemailHold (40 s) after
// answering.
package emuphone

import (
	"strings"
	"time"
)

// Outcome is what the far end does with the call.
type Outcome int

const (
	// Answer: rings for Ring, answers, stays until hung up.
	Answer Outcome = iota
	// AnswerThenHangup: rings for Ring, answers, hangs up (BYE) after Hold.
	AnswerThenHangup
	// Busy: 486 at once (cause 17), never rings.
	Busy
	// NoAnswer: rings until the originate timeout (cause 19).
	NoAnswer
	// Reject: 603 decline (cause 21) at once.
	Reject
	// Unallocated: 404 (cause 1) at once.
	Unallocated
	// Congestion: 503 (cause 34) at once.
	Congestion
	// Unreachable: the endpoint cannot be allocated at all (ARI 500
	// "Allocation failed"; an unregistered PJSIP endpoint or one where
	// nothing listens).
	Unreachable
	// Unavailable: 183 Session Progress with early media for EarlyMedia,
	// then 480 Temporarily Unavailable ("0187"). Asterisk reports cause 19
	// (tech_cause 480), FreeSWITCH NO_USER_RESPONSE (18).
	Unavailable
)

func (o Outcome) String() string {
	switch o {
	case Answer:
		return "answer"
	case AnswerThenHangup:
		return "answer-then-hangup"
	case Busy:
		return "busy"
	case NoAnswer:
		return "no-answer"
	case Reject:
		return "reject"
	case Unallocated:
		return "unallocated"
	case Congestion:
		return "congestion"
	case Unreachable:
		return "unreachable"
	case Unavailable:
		return "unavailable"
	}
	return "unknown"
}

// Phone is the scripted behaviour of one dialed number.
type Phone struct {
	Outcome Outcome
	// Ring is how long it rings before answering (Answer, AnswerThenHangup).
	Ring time.Duration
	// Hold is how long an AnswerThenHangup phone stays up after answering.
	Hold time.Duration
	// Cause is the Q.850 cause the far end ends the call with (busy 17,
	// reject 21, unallocated 1, congestion 34, far-end BYE 16).
	Cause int
	// SIPStatus is the SIP response the far end sends (486, 603, 404, 503,
	// 480), for emulators that report it; 0 for answered calls.
	SIPStatus int
	// EarlyMedia, when set, replaces the ringing: the far end sends 183
	// Session Progress with SDP and early media (a tone) for EarlyMedia,
	// then its final answer (200 for Answer, 480 for Unavailable) —
	// "0183" and "0187". Ring is then not used.
	EarlyMedia time.Duration
	// Digits are keys the far end presses (RFC 4733), DigitAfter after it
	// answered, each held DigitLength ("0111": "1" at 1.5 s, 160 ms).
	Digits      string
	DigitAfter  time.Duration
	DigitLength time.Duration
}

// Answers reports whether the far end answers (200 OK) at some point.
func (p Phone) Answers() bool {
	return p.Outcome == Answer || p.Outcome == AnswerThenHangup
}

// Timing holds the tunable delays.
type Timing struct {
	// Ring is how long ordinary phones ring before answering (contract:
	// about 300 ms, configurable). The lab endpoints of the recordings ring
	// 500 ms as the real phones did.
	Ring time.Duration
	// Hold is how long the "0200" phone stays up (contract: 2 s).
	Hold time.Duration
	// SlowRing is how long "@trunk-slow" rings (recording n: 3 s).
	SlowRing time.Duration
	// EarlyMedia is how long "0183" and "0187" send early media before
	// their 200 or 480 (recordings o and p: 3 s). Tests shorten it.
	EarlyMedia time.Duration
	// DigitAfter is how long after answering "0111" presses its key
	// (recording q: 1.5 s; the key ends 160 ms later).
	DigitAfter time.Duration
	// VoicemailHold is how long the "0190" voicemail box stays up after
	// answering before it sends BYE (recording q: 40 s).
	VoicemailHold time.Duration
}

// DefaultTiming is the contract's timing.
var DefaultTiming = Timing{Ring: 300 * time.Millisecond, Hold: 2 * time.Second, SlowRing: 3 * time.Second,
	EarlyMedia: 3 * time.Second, DigitAfter: 1500 * time.Millisecond, VoicemailHold: 40 * time.Second}

// DigitLength is how long the carrier held a key (recording q: one RFC 4733
// event of 160 ms).
const DigitLength = 160 * time.Millisecond

func (t Timing) withDefaults() Timing {
	if t.Ring <= 0 {
		t.Ring = DefaultTiming.Ring
	}
	if t.Hold <= 0 {
		t.Hold = DefaultTiming.Hold
	}
	if t.SlowRing <= 0 {
		t.SlowRing = DefaultTiming.SlowRing
	}
	if t.EarlyMedia <= 0 {
		t.EarlyMedia = DefaultTiming.EarlyMedia
	}
	if t.DigitAfter <= 0 {
		t.DigitAfter = DefaultTiming.DigitAfter
	}
	if t.VoicemailHold <= 0 {
		t.VoicemailHold = DefaultTiming.VoicemailHold
	}
	return t
}

// labRing is how long the recordings' lab phones rang before answering.
const labRing = 500 * time.Millisecond

// ForEndpoint gives the phone behind a dial string such as "PJSIP/1001",
// "PJSIP/+12025550486@trunk", "sofia/gateway/pbx/+12025550480" or a bare
// number. The lab endpoints of the Asterisk recordings are matched exactly;
// everything else by the last four digits of the number part (contract).
func ForEndpoint(endpoint string, t Timing) Phone {
	t = t.withDefaults()
	resource := endpoint
	if i := strings.LastIndex(resource, "/"); i >= 0 {
		resource = resource[i+1:]
	}
	host := ""
	if i := strings.Index(resource, "@"); i >= 0 {
		resource, host = resource[:i], resource[i+1:]
	}
	if strings.HasPrefix(endpoint, "PJSIP/") && host == "" {
		switch resource {
		case "1001", "1004":
			return Phone{Outcome: Answer, Ring: labRing, Cause: 16}
		case "1002":
			return Phone{Outcome: Busy, Cause: 17, SIPStatus: 486}
		case "1003":
			return Phone{Outcome: NoAnswer, Cause: 19}
		case "1005":
			return Phone{Outcome: Reject, Cause: 21, SIPStatus: 603}
		case "1006", "1007":
			return Phone{Outcome: Unreachable}
		}
	}
	ring := t.Ring
	if host == "trunk-slow" {
		ring = t.SlowRing
	}
	return forNumber(resource, ring, t)
}

// ForNumber applies the contract's last-four-digits table, with the
// default timing for what ring and hold do not say.
func ForNumber(number string, ring, hold time.Duration) Phone {
	return forNumber(number, ring, Timing{Ring: ring, Hold: hold}.withDefaults())
}

func forNumber(number string, ring time.Duration, t Timing) Phone {
	hold := t.Hold
	digits := onlyDigits(number)
	last4 := digits
	if len(last4) > 4 {
		last4 = last4[len(last4)-4:]
	}
	switch last4 {
	case "0486":
		return Phone{Outcome: Busy, Cause: 17, SIPStatus: 486}
	case "0480":
		return Phone{Outcome: NoAnswer, Cause: 19}
	case "0603":
		return Phone{Outcome: Reject, Cause: 21, SIPStatus: 603}
	case "0404":
		return Phone{Outcome: Unallocated, Cause: 1, SIPStatus: 404}
	case "0503":
		return Phone{Outcome: Congestion, Cause: 34, SIPStatus: 503}
	case "0200":
		return Phone{Outcome: AnswerThenHangup, Ring: ring, Hold: hold, Cause: 16}
	case "0183":
		return Phone{Outcome: Answer, EarlyMedia: t.EarlyMedia, Cause: 16}
	case "0187":
		return Phone{Outcome: Unavailable, EarlyMedia: t.EarlyMedia, Cause: 19, SIPStatus: 480}
	case "0111":
		return Phone{Outcome: Answer, Ring: ring, Cause: 16,
			Digits: "1", DigitAfter: t.DigitAfter, DigitLength: DigitLength}
	case "0190":
		// A voicemail box: answers, never a key, BYE after VoicemailHold.
		return Phone{Outcome: AnswerThenHangup, Ring: ring, Hold: t.VoicemailHold, Cause: 16}
	}
	return Phone{Outcome: Answer, Ring: ring, Cause: 16}
}

func onlyDigits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}
