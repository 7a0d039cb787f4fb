// Package leg is the life of one phone call of a conference, written as one
// table: (state, event) → (next state, effects). The engine applies it to
// every PBX event, to the ring watchdog, to resync and to a PBX that is
// gone; storage derives from it which states are "live" (its queries and
// the partial unique indexes that keep one live call per person).
//
// It is a leaf package at the root, importing nothing of ours, on purpose:
// storage needs the live set and must not import controller/, and the
// engine needs the whole table; putting the table below both keeps one
// source for each. It holds only data and pure functions (no store, no
// clock, no PBX): states, events, the table, effects named as data, and
// the cause rules of API-CONTRACT.md. What an effect does to a record is
// the engine's (controller/engine/transitions.go).
package leg

import (
	"fmt"
	"slices"
	"strings"
)

// State is a leg's state as the API shows it. An alias of string: it is a
// column of the store and a field of the views.
type State = string

// Leg states (API-CONTRACT.md).
const (
	Dialing = "dialing"
	Ringing = "ringing"
	// Confirming: answered, hearing the confirm-to-join prompt, not in the
	// mix yet (pbx.EventAnswered).
	Confirming = "confirming"
	Connected  = "connected"
	Ended      = "ended"
	Busy       = "busy"
	NoAnswer   = "no_answer"
	Rejected   = "rejected"
	Failed     = "failed"
	Cancelled  = "cancelled"
	// Unconfirmed: answered (confirming) and ended without the key:
	// probably a voicemail box.
	Unconfirmed = "unconfirmed"
)

// States lists every state, in the order people read them.
var States = []State{Dialing, Ringing, Confirming, Connected, Ended, Busy, NoAnswer, Rejected, Failed, Cancelled, Unconfirmed}

// Event is something that happens to a leg: told by the PBX, or decided by
// convoice.
type Event string

// Events of the PBX (pbx.EventType of the same name).
const (
	EvRinging         Event = "ringing"
	EvAnswered        Event = "answered"
	EvConnected       Event = "connected"
	EvEnded           Event = "ended" // with the PBX's cause
	EvTalkingStarted  Event = "talking_started"
	EvTalkingFinished Event = "talking_finished"
)

// Events of convoice.
const (
	// EvHangupRequested: someone hung the call up (or ended the audio);
	// the PBX is asked to end it and its ended event ends the leg.
	EvHangupRequested Event = "hangup_requested"
	// EvRingTimeout: the watchdog saw the leg ring past the ring timeout
	// with no word from the PBX.
	EvRingTimeout Event = "ring_timeout"
	// EvConfirmTimeout: the watchdog saw the leg wait for the confirm key
	// past the confirm timeout (plus a grace) with no word from the PBX,
	// which should have hung it up or joined it by then.
	EvConfirmTimeout Event = "confirm_timeout"
	// EvResyncGone: a resync found the call gone from the PBX.
	EvResyncGone Event = "resync_gone"
	// EvResyncInConference: a resync found the call in the conference.
	EvResyncInConference Event = "resync_in_conference"
	// EvPBXGone: the PBX really lost its calls: it restarted, or it stayed
	// unreachable past the long bound (CONVOICE_NODE_LOST_AFTER).
	EvPBXGone Event = "pbx_gone"
)

// Events lists every event, in the order of the table's columns.
var Events = []Event{EvRinging, EvAnswered, EvConnected, EvEnded, EvTalkingStarted, EvTalkingFinished,
	EvHangupRequested, EvRingTimeout, EvConfirmTimeout, EvResyncGone, EvResyncInConference, EvPBXGone}

// Effect is what a transition does besides setting the state; a set of
// bits.
type Effect uint16

const (
	// StampRinging sets ringing_at (when unset).
	StampRinging Effect = 1 << iota
	// StampAnswered sets answered_at (when unset), and ringing_at.
	StampAnswered
	// StampConnected sets connected_at (when unset), and answered_at and
	// ringing_at.
	StampConnected
	// End sets ended_at, the cause, its text and the end reason, stops
	// talking; the conference ends with its last live leg.
	End
	// HangUp asks the PBX to hang the call up.
	HangUp
	// MarkOurs remembers that convoice ends this call (hangup_requested):
	// an end before the answer is then "cancelled", an answer is hung up.
	MarkOurs
	// TalkingOn and TalkingOff follow voice activity.
	TalkingOn
	TalkingOff
)

var effectNames = []string{"stamp ringing_at", "stamp answered_at", "stamp connected_at", "end", "hang up on the PBX",
	"mark ours", "talking on", "talking off"}

// String lists the effects, "" for none.
func (e Effect) String() string {
	var out []string
	for i, n := range effectNames {
		if e&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return strings.Join(out, ", ")
}

// ByCause, as a rule's Next, says the final state comes from the PBX's
// cause (FromCause).
const ByCause State = "by cause"

// Rule is one cell of the table.
type Rule struct {
	// Next is the state after the event; "" keeps the state.
	Next    State
	Effects Effect
	// Ours, when set, replaces the rule for a leg convoice is ending (a
	// hang-up was requested, or its conference ended): such a leg is
	// never joined to the mix, and ends "cancelled" before the answer.
	Ours *Rule
}

// stay is a rule that keeps the state and does nothing: an allowed
// duplicate (a second ringing for early media, the connected of a resync
// for a leg already connected).
var stay = Rule{}

// hangUpInstead: a leg convoice is ending answered anyway; it is hung up
// again, never joined.
var hangUpInstead = &Rule{Effects: HangUp}

// preAnswer is the row of dialing and ringing.
func preAnswer(ringing Rule) map[Event]Rule {
	return map[Event]Rule{
		EvRinging:            ringing,
		EvAnswered:           {Next: Confirming, Effects: StampAnswered, Ours: hangUpInstead},
		EvConnected:          {Next: Connected, Effects: StampConnected, Ours: hangUpInstead},
		EvEnded:              {Next: ByCause, Effects: End, Ours: &Rule{Next: Cancelled, Effects: End}},
		EvHangupRequested:    {Effects: MarkOurs | HangUp},
		EvRingTimeout:        {Next: NoAnswer, Effects: HangUp | End, Ours: &Rule{Next: Cancelled, Effects: HangUp | End}},
		EvResyncGone:         {Next: Failed, Effects: End, Ours: &Rule{Next: Cancelled, Effects: End}},
		EvResyncInConference: {Next: Connected, Effects: StampConnected, Ours: hangUpInstead},
		EvPBXGone:            {Next: Failed, Effects: End, Ours: &Rule{Next: Cancelled, Effects: End}},
	}
}

// table is THE leg state machine. A (state, event) pair missing here is
// not allowed: the event is ignored (and counted), never applied. Final
// states have no row: nothing moves them.
var table = map[State]map[Event]Rule{
	Dialing: preAnswer(Rule{Next: Ringing, Effects: StampRinging}),
	Ringing: preAnswer(stay),
	Confirming: {
		EvAnswered:           stay,
		EvConnected:          {Next: Connected, Effects: StampConnected, Ours: hangUpInstead},
		EvEnded:              {Next: Unconfirmed, Effects: End},
		EvHangupRequested:    {Effects: MarkOurs | HangUp},
		EvConfirmTimeout:     {Next: Unconfirmed, Effects: HangUp | End},
		EvResyncGone:         {Next: Unconfirmed, Effects: End},
		EvResyncInConference: {Next: Connected, Effects: StampConnected, Ours: hangUpInstead},
		EvPBXGone:            {Next: Unconfirmed, Effects: End},
	},
	Connected: {
		EvConnected:          stay,
		EvEnded:              {Next: Ended, Effects: End},
		EvTalkingStarted:     {Effects: TalkingOn},
		EvTalkingFinished:    {Effects: TalkingOff},
		EvHangupRequested:    {Effects: MarkOurs | HangUp},
		EvResyncGone:         {Next: Ended, Effects: End},
		EvResyncInConference: stay,
		EvPBXGone:            {Next: Ended, Effects: End},
	},
}

// Step is the table's answer for a leg in state from: the rule to apply
// (its Ours variant when ours is set and it has one), or false when the
// event is not allowed in that state.
func Step(from State, ev Event, ours bool) (Rule, bool) {
	r, ok := table[from][ev]
	if !ok {
		return Rule{}, false
	}
	if ours && r.Ours != nil {
		r = *r.Ours
	}
	r.Ours = nil
	return r, true
}

// NextState resolves a rule's next state: from when it keeps the state,
// the cause's state (FromCause) for ByCause.
func NextState(from State, r Rule, cause int) State {
	switch r.Next {
	case "":
		return from
	case ByCause:
		return FromCause(cause)
	}
	return r.Next
}

// Q.850 causes the end-state rules name (the same numbers as pbx.Cause*;
// this package imports nothing).
const (
	causeUnknown        = 0
	causeUserBusy       = 17
	causeNoUserResponse = 18
	causeNoAnswer       = 19
	causeCallRejected   = 21
)

// FromCause is the final state of a leg that ended before the answer,
// not by us (API-CONTRACT.md): 17 busy, 18/19 no_answer, 21 rejected,
// anything else failed.
func FromCause(cause int) State {
	switch cause {
	case causeUserBusy:
		return Busy
	case causeNoUserResponse, causeNoAnswer:
		return NoAnswer
	case causeCallRejected:
		return Rejected
	}
	return Failed
}

// CauseText is what the record says of the PBX's cause for a leg that
// ends in state next. A connected call that ends with cause 0 (a carrier's
// BYE without a Reason header reaches ARI so, "Unknown") ended normally:
// someone hung up.
func CauseText(next State, cause int, pbxText string) string {
	if next == Ended && cause == causeUnknown && (pbxText == "" || strings.EqualFold(pbxText, "unknown")) {
		return NormalEndText
	}
	return pbxText
}

// NormalEndText is the cause text of a call that ended normally with no
// cause from the PBX.
const NormalEndText = "hung up (normal call clearing, no cause given)"

// IsLive reports whether a leg in state s still holds a phone: the states
// with a row in the table (an event can still move them).
func IsLive(s State) bool {
	_, ok := table[s]
	return ok
}

// Live lists the live states, in the order of States.
func Live() []State {
	return slices.DeleteFunc(slices.Clone(States), func(s State) bool { return !IsLive(s) })
}

// Final lists the states nothing moves any more.
func Final() []State {
	return slices.DeleteFunc(slices.Clone(States), IsLive)
}

// Accepting lists the states in which ev is allowed (e.g. the watchdog's:
// Accepting(EvRingTimeout)).
func Accepting(ev Event) []State {
	return slices.DeleteFunc(slices.Clone(States), func(s State) bool { _, ok := table[s][ev]; return !ok })
}

// Local reports whether ev concerns the leg alone, in every state that
// accepts it: it neither ends the leg nor connects it, and has no variant
// for a leg convoice is ending (which asks whether the conference has
// ended). Applying it needs nothing of the rest of the conference: the
// engine skips reading it (ringing, talking, a hang-up asked for).
func Local(ev Event) bool {
	for _, row := range table {
		r, ok := row[ev]
		if !ok {
			continue
		}
		if r.Ours != nil || r.Effects&End != 0 {
			return false
		}
		if r.Next != "" && (r.Next == ByCause || r.Next == Connected || !IsLive(r.Next)) {
			return false
		}
	}
	return true
}

// Markdown renders the table for people (README): one row per event, one
// column per live state; "–" is "ignored and counted".
func Markdown() string {
	var b strings.Builder
	live := Live()
	b.WriteString("| event \\ state |")
	for _, s := range live {
		fmt.Fprintf(&b, " **%s** |", s)
	}
	b.WriteString("\n|---|")
	for range live {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, ev := range Events {
		fmt.Fprintf(&b, "| %s |", ev)
		for _, s := range live {
			r, ok := table[s][ev]
			if !ok {
				b.WriteString(" – |")
				continue
			}
			cell := cellOf(r)
			if r.Ours != nil {
				cell += "; ours: " + cellOf(*r.Ours)
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\nFinal states, which every event leaves alone: %s. \"=\": the state stays. \"by cause\": 17 → busy, "+
		"18/19 → no_answer, 21 → rejected, any other → failed. \"ours\": a leg convoice is ending (hang-up requested, "+
		"or its conference ended). \"–\": not allowed: ignored and counted in "+
		"`convoice_leg_events_ignored_total{state,event}`.\n", strings.Join(Final(), ", "))
	return b.String()
}

func cellOf(r Rule) string {
	next := r.Next
	if next == "" {
		next = "="
	} else {
		next = "→ " + next
	}
	if e := r.Effects.String(); e != "" {
		return next + " (" + e + ")"
	}
	return next
}
