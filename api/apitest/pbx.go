package apitest

// What the emulated PBX holds and does, for tests to look at and to break.

import "strings"

// Kind is the emulated PBX kind of this environment.
func (e *Env) Kind() string {
	if e.ESL != nil {
		return "freeswitch"
	}
	return "asterisk"
}

// PBXCalls counts the calls the emulated PBX holds now.
func (e *Env) PBXCalls() int {
	if e.ESL != nil {
		return len(e.ESL.Channels())
	}
	return len(e.Emu.Channels())
}

// PBXRooms lists, per mixing room (bridge or conference) on the emulated
// PBX, how many calls are in it.
func (e *Env) PBXRooms() []int {
	var out []int
	if e.ESL != nil {
		for _, c := range e.ESL.Conferences() {
			out = append(out, len(c.Members))
		}
		return out
	}
	for _, b := range e.Emu.Bridges() {
		out = append(out, len(b.ChannelIDs))
	}
	return out
}

// PBXMuted reports whether the emulated PBX has leg muted (what it says
// into the conference).
func (e *Env) PBXMuted(legID string) bool {
	if e.ESL != nil {
		for _, c := range e.ESL.Channels() {
			if c.UUID == legID {
				return c.Muted
			}
		}
		return false
	}
	for _, ch := range e.Emu.Channels() {
		if ch.ID == legID {
			return ch.MutedIn
		}
	}
	return false
}

// PBXResetRequests forgets what the emulated PBX was asked so far.
func (e *Env) PBXResetRequests() {
	if e.ESL != nil {
		e.eslMark = len(e.ESL.Commands())
		return
	}
	e.Emu.ResetRequests()
}

// PBXOriginates counts originate requests since PBXResetRequests.
func (e *Env) PBXOriginates() int {
	n := 0
	if e.ESL != nil {
		for _, c := range e.ESL.Commands()[e.eslMark:] {
			if strings.Contains(c, "originate") {
				n++
			}
		}
		return n
	}
	for _, req := range e.Emu.Requests() {
		if req.Method == "POST" && strings.HasPrefix(req.Path, "/ari/channels") &&
			strings.Count(strings.TrimPrefix(req.Path, "/ari/channels"), "/") <= 1 {
			n++
		}
	}
	return n
}

// PBXWrites counts requests that could place or change a call since
// PBXResetRequests (everything but reads and pings).
func (e *Env) PBXWrites() int {
	n := 0
	if e.ESL != nil {
		for _, c := range e.ESL.Commands()[e.eslMark:] {
			if strings.Contains(c, "originate") || strings.Contains(c, "uuid_") || strings.Contains(c, "conference") && !strings.Contains(c, "list") {
				n++
			}
		}
		return n
	}
	for _, req := range e.Emu.Requests() {
		if req.Method != "GET" {
			n++
		}
	}
	return n
}

// PBXLeg is one call on the emulated PBX.
type PBXLeg struct {
	ID       string
	Answered bool   // the far end picked up
	Room     string // the bridge / conference it is in ("" when none)
}

// PBXLegs lists the calls the emulated PBX holds now, by id (our leg id).
func (e *Env) PBXLegs() map[string]PBXLeg {
	out := map[string]PBXLeg{}
	if e.ESL != nil {
		for _, c := range e.ESL.Channels() {
			out[c.UUID] = PBXLeg{ID: c.UUID, Answered: c.Answered, Room: c.Conference}
		}
		return out
	}
	for _, c := range e.Emu.Channels() {
		out[c.ID] = PBXLeg{ID: c.ID, Answered: c.State == "Up", Room: c.BridgeID}
	}
	return out
}

// PBXRoomIDs lists the mixing rooms (bridges / conferences) on the emulated
// PBX by id (our conference id).
func (e *Env) PBXRoomIDs() []string {
	var out []string
	if e.ESL != nil {
		for _, c := range e.ESL.Conferences() {
			out = append(out, c.Name)
		}
		return out
	}
	for _, b := range e.Emu.Bridges() {
		out = append(out, b.ID)
	}
	return out
}

// PBXDropLink cuts convoice's event connection the way a network does
// (ARI: the websockets end with a bare TCP close; ESL: the sockets close);
// calls go on.
func (e *Env) PBXDropLink() {
	if e.ESL != nil {
		e.ESL.DropConnections()
		return
	}
	e.Emu.DropWebsockets()
}

// PBXUnresponsive switches the emulated PBX's half-open mode: connections
// stay open but nothing is answered; calls go on.
func (e *Env) PBXUnresponsive(on bool) {
	if e.ESL != nil {
		e.ESL.SetUnresponsive(on)
		return
	}
	e.Emu.SetUnresponsive(on)
}

// PBXRestart restarts the emulated PBX: graceful (Asterisk `core restart
// now`, FreeSWITCH SIGTERM: every call hung up with its events) or a crash
// (SIGKILL: the connection just ends). Every call and room is gone after.
func (e *Env) PBXRestart(graceful bool) {
	switch {
	case e.ESL != nil && graceful:
		e.ESL.Restart()
	case e.ESL != nil:
		e.ESL.RestartHard()
	case graceful:
		e.Emu.Restart()
	default:
		e.Emu.Crash()
	}
}

// PBXFarEndHangup makes the phone of an answered call hang up.
func (e *Env) PBXFarEndHangup(legID string) error {
	if e.ESL != nil {
		return e.ESL.FarEndHangup(legID)
	}
	return e.Emu.FarEndHangup(legID)
}
