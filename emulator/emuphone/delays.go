package emuphone

import (
	"sync/atomic"
	"time"
)

// Delays are the two timing knobs both emulators offer on their Server
// (embedded there, so SetOriginateDelay and SetAnswerDelay are the
// Server's): a slow PBX and late-answering phones.
type Delays struct {
	originate atomic.Int64 // ns
	answer    atomic.Int64 // ns
}

// SetOriginateDelay holds each new originate d before its channel exists,
// like a loaded PBX; a hang-up of that id meanwhile gets what the PBX
// answers for an unknown channel (ARI 404, ESL "-ERR No such channel!")
// and the call still starts afterwards. 0 turns it off. How each protocol
// answers the originate meanwhile is in the emulator's own doc.
func (d *Delays) SetOriginateDelay(v time.Duration) { d.originate.Store(int64(v)) }

// SetAnswerDelay makes the phones that ring before answering (every number
// but the lab endpoints, "@trunk-slow" and the early-media numbers) ring v
// instead of Timing.Ring, for calls originated from now on. 0 goes back to
// the configured ring.
func (d *Delays) SetAnswerDelay(v time.Duration) { d.answer.Store(int64(v)) }

// OriginateDelay is the current SetOriginateDelay.
func (d *Delays) OriginateDelay() time.Duration { return time.Duration(d.originate.Load()) }

// Timing is base with the answer delay applied: the timing for a new call.
func (d *Delays) Timing(base Timing) Timing {
	if v := time.Duration(d.answer.Load()); v > 0 {
		base.Ring = v
	}
	return base
}
