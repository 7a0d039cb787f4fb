package ariemu

import (
	"net/http"
	"strconv"
	"strings"
)

// The channel resources once a channel exists: reads, hangup, the control
// operations (mute, DTMF, no-ops) and channel variables. Originate, which
// creates channels, is in originate.go.

func (s *Server) handleChannelList(rc *reqCtx) {
	s.mu.Lock()
	b := []byte{'['}
	for i, ch := range s.sortedChannels() {
		if i > 0 {
			b = append(b, ',')
		}
		b = s.appendChannel(b, ch)
	}
	s.mu.Unlock()
	rc.json(http.StatusOK, append(b, ']'))
}

func (s *Server) handleChannelGet(rc *reqCtx) {
	s.mu.Lock()
	ch := s.channels[rc.vars["channelId"]]
	if ch == nil {
		s.mu.Unlock()
		rc.err(http.StatusNotFound, "Channel not found")
		return
	}
	b := s.appendChannel(nil, ch)
	s.mu.Unlock()
	rc.json(http.StatusOK, b)
}

// ---- hangup ----

// handleHangup is DELETE /channels/{id} with reason / reason_code and the
// 400s of recording i.
func (s *Server) handleHangup(rc *reqCtx) {
	reason, code := rc.p.str("reason"), rc.p.str("reason_code")
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[rc.vars["channelId"]]
	if ch == nil {
		rc.err(http.StatusNotFound, "Channel not found")
		return
	}
	cause := 16
	switch {
	case reason != "" && code != "":
		rc.err(http.StatusBadRequest, "The reason and reason_code can't both be specified")
		return
	case code != "":
		n, ok := scanInt(code)
		if !ok {
			rc.err(http.StatusBadRequest, "Invalid reason for hangup reason code provided")
			return
		}
		cause = n
	case reason != "":
		c, ok := hangupReasons[reason]
		if !ok {
			rc.err(http.StatusBadRequest, "Invalid reason for hangup reason provided")
			return
		}
		cause = c
	}
	s.hangupByUsLocked(ch, cause)
	rc.noContent()
}

// scanInt is sscanf("%30d"): optional blanks and sign, then at least one
// digit; trailing text is ignored.
func scanInt(s string) (int, bool) {
	t := strings.TrimLeft(s, " \t")
	i := 0
	if i < len(t) && (t[i] == '+' || t[i] == '-') {
		i++
	}
	if i >= len(t) || t[i] < '0' || t[i] > '9' {
		return 0, false
	}
	return atoi(t), true
}

// ---- control operations ----

// findControl is find_control: 404 for an unknown channel, 409 for one that
// exists but is not in Stasis (a leg still ringing, recording k).
func (s *Server) findControlLocked(rc *reqCtx) *channel {
	ch := s.channels[rc.vars["channelId"]]
	if ch == nil {
		rc.err(http.StatusNotFound, "Channel not found")
		return nil
	}
	if !ch.inStasis {
		rc.err(http.StatusConflict, "Channel not in Stasis application")
		return nil
	}
	return ch
}

// stateInvalid is channel_state_invalid: outbound channels in Stasis before
// their answer cannot take media operations (412).
func stateInvalid(rc *reqCtx, ch *channel) bool {
	if ch.state == stateDown || ch.state == stateRinging {
		rc.err(http.StatusPreconditionFailed, "Channel in invalid state")
		return true
	}
	return false
}

func (s *Server) handleMute(rc *reqCtx) {
	if !rc.loadBody() {
		return
	}
	dir := "both"
	if rc.p.has("direction") {
		dir = rc.p.str("direction")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.findControlLocked(rc)
	if ch == nil || stateInvalid(rc, ch) {
		return
	}
	var in, out bool
	switch dir {
	case "":
		rc.err(http.StatusBadRequest, "Direction is required")
		return
	case "in":
		in = true
	case "out":
		out = true
	case "both":
		in, out = true, true
	default:
		rc.err(http.StatusBadRequest, "Invalid direction specified")
		return
	}
	mute := rc.r.Method == http.MethodPost
	if in {
		ch.mutedIn = mute
	}
	if out {
		ch.mutedOut = mute
	}
	if ch.bridge != nil {
		ch.bridge.recomputeTech()
	}
	rc.noContent()
}

// handleChannelNoop covers answer, ring, progress, hold, moh and silence:
// the checks are Asterisk's, the media effect is not emulated.
func (s *Server) handleChannelNoop(rc *reqCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.findControlLocked(rc)
	if ch == nil || stateInvalid(rc, ch) {
		return
	}
	rc.noContent()
}

func (s *Server) handleDTMF(rc *reqCtx) {
	if !rc.loadBody() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.findControlLocked(rc)
	if ch == nil || stateInvalid(rc, ch) {
		return
	}
	if rc.p.str("dtmf") == "" {
		rc.err(http.StatusBadRequest, "DTMF is required")
		return
	}
	rc.noContent()
}

// ---- variables ----

// handleSetVar is POST /channels/{id}/variable. Asterisk queues the set on
// the channel and answers 204 even when the function fails (TALK_DETECT
// without its module, recording k).
func (s *Server) handleSetVar(rc *reqCtx) {
	if !rc.loadBody() {
		return
	}
	name, value := rc.p.str("variable"), rc.p.str("value")
	if name == "" {
		rc.err(http.StatusBadRequest, "Variable name is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.findControlLocked(rc)
	if ch == nil {
		return
	}
	switch strings.ToUpper(name) {
	case "TALK_DETECT(SET)":
		silence, ok := parseTalkDetect(value)
		if !ok {
			s.log.Warn("TALK_DETECT: invalid value", "value", value, "channel", ch.id)
			break
		}
		s.setTalkDetectLocked(ch, true, silence)
	case "TALK_DETECT(REMOVE)":
		s.setTalkDetectLocked(ch, false, 0)
	default:
		if !strings.HasSuffix(name, ")") {
			if ch.vars == nil {
				ch.vars = map[string]string{}
			}
			ch.vars[name] = value
		}
	}
	rc.noContent()
}

// parseTalkDetect reads TALK_DETECT(set)'s value "[silence_ms[,talk_threshold]]";
// the default silence threshold is 2500 ms.
func parseTalkDetect(v string) (silenceMs int, ok bool) {
	silence, _, _ := strings.Cut(v, ",")
	silence = strings.TrimSpace(silence)
	if silence == "" {
		return 2500, true
	}
	n, err := strconv.Atoi(silence)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

func (s *Server) handleGetVar(rc *reqCtx) {
	name := rc.p.str("variable")
	if name == "" {
		rc.err(http.StatusBadRequest, "Variable name is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[rc.vars["channelId"]]
	if ch == nil {
		rc.err(http.StatusNotFound, "Provided channel was not found")
		return
	}
	var value string
	if strings.HasSuffix(name, ")") {
		v, ok := readFunction(ch, name)
		if !ok {
			rc.err(http.StatusInternalServerError, "Unable to read provided function")
			return
		}
		value = v
	} else {
		v, ok := ch.vars[name]
		if !ok {
			rc.err(http.StatusNotFound, "Provided variable was not found")
			return
		}
		value = v
	}
	b := appendStrField([]byte{'{'}, "value", value)
	rc.json(http.StatusOK, append(b, '}'))
}

func readFunction(ch *channel, name string) (string, bool) {
	switch strings.ToUpper(name) {
	case "CALLERID(NAME)":
		return ch.callerName, true
	case "CALLERID(NUM)", "CALLERID(NUMBER)":
		return ch.callerNum, true
	case "CHANNEL(NAME)":
		return ch.name, true
	case "CHANNEL(STATE)":
		return ch.state.String(), true
	}
	return "", false
}
