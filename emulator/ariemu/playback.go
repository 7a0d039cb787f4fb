package ariemu

import (
	"net/http"
	"strings"
	"time"

	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// Playbacks on a channel and the keys its phone presses (recording q).
//
// What the recording shows: POST /channels/{id}/play[/{playbackId}] answers
// 201 with the playback (state "queued" or "playing", both seen; the
// emulator says "queued"), PlaybackStarted ("playing") follows, and at the
// end of the prompt PlaybackFinished "done". A digit does not stop it.
// DELETE /playbacks/{id} → 204 and PlaybackFinished "done" as well. A
// finished playback is gone: GET/DELETE → 404 "Playback not found".
// addChannel while a prompt plays is answered only once the prompt is over:
// PlaybackFinished, ChannelEnteredBridge, then the 204.
//
// What it does not show, and the emulator assumes: prompts last as recorded
// for the two sounds played (sound:vm-press 723 ms, sound:conf-getpin
// 2404 ms) and 1 s for any other media; a second play on a channel whose
// prompt still runs is queued and starts when the first ends; a channel
// that hangs up mid-prompt ends its playbacks with PlaybackFinished "done"
// right after its ChannelHangupRequest; a reused live playback id answers
// 409 "Playback ID already in use" (hypothetical wording).

// promptLengths are the prompts of recording q, start to PlaybackFinished.
var promptLengths = map[string]time.Duration{
	"sound:vm-press":    723 * time.Millisecond,
	"sound:conf-getpin": 2404 * time.Millisecond,
}

// defaultPromptLength is the assumed length of any other media.
const defaultPromptLength = time.Second

type playback struct {
	id, media string
	ch        *channel
	playing   bool
	timer     *time.Timer
	done      chan struct{} // closed when finished
}

func (s *Server) appendPlayback(b []byte, pb *playback, state string) []byte {
	b = append(b, '{')
	b = appendStrField(b, "id", pb.id)
	b = append(b, ',')
	b = appendStrField(b, "media_uri", pb.media)
	b = append(b, ',')
	b = appendStrField(b, "target_uri", "channel:"+pb.ch.id)
	b = append(b, `,"language":"en",`...)
	b = appendStrField(b, "state", state)
	return append(b, '}')
}

func (s *Server) evPlayback(typ string, pb *playback, state string) {
	b := append(s.ebuf[:0], '{')
	b = appendTypeTS(b, typ)
	b = append(b, `,"playback":`...)
	b = s.appendPlayback(b, pb, state)
	s.evSend(b, s.chanApps(pb.ch))
}

// handlePlay is POST /channels/{id}/play and /play/{playbackId}.
func (s *Server) handlePlay(rc *reqCtx) {
	if !rc.loadBody() {
		return
	}
	s.mu.Lock()
	ch := s.findControlLocked(rc)
	if ch == nil || stateInvalid(rc, ch) {
		s.mu.Unlock()
		return
	}
	media := rc.p.str("media")
	if media == "" {
		s.mu.Unlock()
		rc.err(http.StatusBadRequest, "Missing parameter media")
		return
	}
	media, _, _ = strings.Cut(media, ",") // several media: the first only
	id := rc.vars["playbackId"]
	if id == "" {
		id = rc.p.str("playbackId")
	}
	if id == "" {
		id = emuserver.UUID()
	}
	if s.playbacks[id] != nil {
		s.mu.Unlock()
		rc.err(http.StatusConflict, "Playback ID already in use")
		return
	}
	pb := &playback{id: id, media: media, ch: ch, done: make(chan struct{})}
	s.playbacks[id] = pb
	ch.playQ = append(ch.playQ, pb)
	body := s.appendPlayback(nil, pb, "queued")
	s.mu.Unlock()
	rc.json(http.StatusCreated, body)
	rc.after = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.nextPlaybackLocked(ch)
	}
}

// nextPlaybackLocked starts the channel's first queued playback, unless one
// plays.
func (s *Server) nextPlaybackLocked(ch *channel) {
	if ch.gone || len(ch.playQ) == 0 || ch.playQ[0].playing {
		return
	}
	pb := ch.playQ[0]
	pb.playing = true
	s.evPlayback("PlaybackStarted", pb, "playing")
	d, ok := promptLengths[pb.media]
	if !ok {
		d = defaultPromptLength
	}
	pb.timer = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || s.playbacks[pb.id] != pb {
			return
		}
		s.finishPlaybackLocked(pb)
		s.nextPlaybackLocked(pb.ch)
	})
}

// finishPlaybackLocked ends a playback: PlaybackFinished "done" (the
// recording has no other final state, stopped or not), gone from every
// lookup.
func (s *Server) finishPlaybackLocked(pb *playback) {
	if s.playbacks[pb.id] == pb {
		delete(s.playbacks, pb.id)
	}
	if pb.timer != nil {
		pb.timer.Stop()
	}
	ch := pb.ch
	for i, x := range ch.playQ {
		if x == pb {
			ch.playQ = append(ch.playQ[:i:i], ch.playQ[i+1:]...)
			break
		}
	}
	if pb.playing {
		s.evPlayback("PlaybackFinished", pb, "done")
	}
	close(pb.done)
}

// endPlaybacksLocked ends every playback of a channel that hangs up.
func (s *Server) endPlaybacksLocked(ch *channel) {
	for len(ch.playQ) > 0 {
		s.finishPlaybackLocked(ch.playQ[0])
	}
}

func (s *Server) handlePlaybackGet(rc *reqCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pb := s.playbacks[rc.vars["playbackId"]]
	if pb == nil {
		rc.err(http.StatusNotFound, "Playback not found")
		return
	}
	state := "queued"
	if pb.playing {
		state = "playing"
	}
	rc.json(http.StatusOK, s.appendPlayback(nil, pb, state))
}

// handlePlaybackStop is DELETE /playbacks/{id}: 204, then PlaybackFinished
// "done"; the channel's next queued playback starts.
func (s *Server) handlePlaybackStop(rc *reqCtx) {
	s.mu.Lock()
	pb := s.playbacks[rc.vars["playbackId"]]
	if pb == nil {
		s.mu.Unlock()
		rc.err(http.StatusNotFound, "Playback not found")
		return
	}
	delete(s.playbacks, pb.id) // gone for other requests at once
	s.mu.Unlock()
	rc.noContent()
	rc.after = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.playbacks[pb.id] = pb
		s.finishPlaybackLocked(pb)
		s.nextPlaybackLocked(pb.ch)
	}
}

// waitPromptsLocked blocks (releasing s.mu meanwhile) until none of chans
// has a prompt playing or queued: addChannel waits for the prompt to end
// (recording q). False when the request or the server ended first.
func (s *Server) waitPromptsLocked(rc *reqCtx, chans []*channel) bool {
	for {
		var wait chan struct{}
		for _, ch := range chans {
			if len(ch.playQ) > 0 && !ch.gone {
				wait = ch.playQ[len(ch.playQ)-1].done
				break
			}
		}
		if wait == nil {
			return true
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-s.done:
			s.mu.Lock()
			return false
		case <-rc.r.Context().Done():
			s.mu.Lock()
			return false
		}
		s.mu.Lock()
	}
}

// pressLocked is the phone pressing its keys (RFC 4733, "0111"): one
// ChannelDtmfReceived per key when it is released, only to a channel in
// Stasis (recording q).
func (s *Server) pressLocked(ch *channel, digits string) {
	if digits == "" {
		return
	}
	length := ch.phone.DigitLength
	time.AfterFunc(length, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || ch.gone {
			return
		}
		if ch.inStasis {
			b := append(s.ebuf[:0], '{')
			b = appendTypeTS(b, "ChannelDtmfReceived")
			b = append(b, ',')
			b = appendStrField(b, "digit", digits[:1])
			b = append(b, ',')
			b = appendIntField(b, "duration_ms", int(length/time.Millisecond))
			s.evSendChannel(b, ch)
		}
		s.pressLocked(ch, digits[1:])
	})
}
