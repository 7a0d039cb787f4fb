package ariemu

import (
	"net/http"
	"strings"
	"time"

	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// handleBridgeCreate is POST /bridges (bridgeId in the query or body) and
// POST /bridges/{bridgeId}; an id in use is 409 either way (recording k).
func (s *Server) handleBridgeCreate(rc *reqCtx) {
	if !rc.loadBody() {
		return
	}
	id := rc.p.str("bridgeId")
	if v, ok := rc.vars["bridgeId"]; ok {
		id = v
	}
	typ := "mixing"
	for _, w := range strings.Split(rc.p.str("type"), ",") {
		if strings.TrimSpace(w) == "holding" {
			typ = "holding"
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != "" && s.bridges[id] != nil {
		rc.err(http.StatusConflict, "Bridge with id '"+id+"' already exists")
		return
	}
	if id == "" {
		id = emuserver.UUID()
	}
	s.seq++
	br := &bridge{id: id, name: rc.p.str("name"), typ: typ, created: time.Now(), seq: s.seq}
	br.recomputeTech()
	s.bridges[id] = br
	s.evBridgeCreated(br)
	rc.json(http.StatusOK, s.appendBridge(nil, br, br.tech))
}

func (s *Server) handleBridgeList(rc *reqCtx) {
	s.mu.Lock()
	b := []byte{'['}
	for i, br := range s.sortedBridges() {
		if i > 0 {
			b = append(b, ',')
		}
		b = s.appendBridge(b, br, br.tech)
	}
	s.mu.Unlock()
	rc.json(http.StatusOK, append(b, ']'))
}

func (s *Server) handleBridgeGet(rc *reqCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	br := s.bridges[rc.vars["bridgeId"]]
	if br == nil {
		rc.err(http.StatusNotFound, "Bridge not found")
		return
	}
	rc.json(http.StatusOK, s.appendBridge(nil, br, br.tech))
}

// handleBridgeDestroy: members leave alive (ChannelLeftBridge each, they
// stay in the application), then BridgeDestroyed to whoever is still
// subscribed to the bridge — often nobody (recording k).
func (s *Server) handleBridgeDestroy(rc *reqCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	br := s.bridges[rc.vars["bridgeId"]]
	if br == nil {
		rc.err(http.StatusNotFound, "Bridge not found")
		return
	}
	s.destroyBridgeLocked(br)
	rc.noContent()
}

func (s *Server) handleBridgeNoop(rc *reqCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bridges[rc.vars["bridgeId"]] == nil {
		rc.err(http.StatusNotFound, "Bridge not found")
		return
	}
	rc.noContent()
}

// controlList is control_list_create: "channel" is a comma-separated list;
// an unknown channel is 400 and one not in Stasis 422 (recording k).
func (s *Server) controlListLocked(rc *reqCtx) []*channel {
	var out []*channel
	for _, id := range strings.Split(rc.p.str("channel"), ",") {
		id = strings.TrimSpace(id)
		if id == "" {
			continue
		}
		ch := s.channels[id]
		if ch == nil {
			rc.err(http.StatusBadRequest, "Channel not found")
			return nil
		}
		if !ch.inStasis {
			rc.err(http.StatusUnprocessableEntity, "Channel not in Stasis application")
			return nil
		}
		out = append(out, ch)
	}
	if len(out) == 0 {
		rc.err(http.StatusBadRequest, "Missing parameter channel")
		return nil
	}
	return out
}

// bridgeControlLocked is the bridge of the path and the channels of the
// "channel" parameter for addChannel and removeChannel; nil when an error
// answer has been written (404 before the parameter's 400 or 404).
func (s *Server) bridgeControlLocked(rc *reqCtx) (*bridge, []*channel) {
	br := s.bridges[rc.vars["bridgeId"]]
	if br == nil {
		rc.err(http.StatusNotFound, "Bridge not found")
		return nil, nil
	}
	chans := s.controlListLocked(rc)
	if chans == nil {
		return nil, nil
	}
	return br, chans
}

// handleAddChannel: a channel already in a bridge leaves it first — the
// same bridge gives ChannelLeftBridge then ChannelEnteredBridge (recording
// k) — and the events go out before the 204, as they can with Asterisk.
func (s *Server) handleAddChannel(rc *reqCtx) {
	if !rc.loadBody() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	br, chans := s.bridgeControlLocked(rc)
	if br == nil {
		return
	}
	if !s.waitPromptsLocked(rc, chans) {
		panic(http.ErrAbortHandler)
	}
	// The world may have moved while the prompt played.
	if br, chans = s.bridgeControlLocked(rc); br == nil {
		return
	}
	mute := rc.p.bool("mute")
	for _, ch := range chans {
		if ch.bridge != nil {
			s.leaveBridgeLocked(ch, true)
		}
		if mute {
			ch.mutedIn = true
		}
		s.enterBridgeLocked(ch, br)
	}
	rc.noContent()
}

func (s *Server) handleRemoveChannel(rc *reqCtx) {
	if !rc.loadBody() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	br, chans := s.bridgeControlLocked(rc)
	if br == nil {
		return
	}
	for _, ch := range chans {
		if ch.bridge != br {
			rc.err(http.StatusUnprocessableEntity, "Channel not in this bridge")
			return
		}
	}
	for _, ch := range chans {
		s.leaveBridgeLocked(ch, true)
	}
	rc.noContent()
}
