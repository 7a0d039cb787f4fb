package ariemu

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// maxUniqueID is AST_MAX_PUBLIC_UNIQUEID.
const maxUniqueID = 149

// labEndpoints are the PJSIP endpoints configured in the recordings' lab
// (pjsip.conf): the phones 1001…1007, reachable as "PJSIP/<name>", with
// their callerid; and the carrier trunks, reached as "PJSIP/<number>@trunk".
var labEndpoints = map[string]string{
	"1001": "Phone 1001", "1002": "Phone 1002", "1003": "Phone 1003", "1004": "Phone 1004",
	"1005": "Phone 1005", "1006": "Phone 1006", "1007": "Phone 1007",
	"trunk": "", "trunk-slow": "",
}

// knownFormats are codec names Asterisk knows, for "formats".
var knownFormats = map[string]bool{
	"ulaw": true, "alaw": true, "slin": true, "slin16": true, "g722": true, "g729": true,
	"gsm": true, "opus": true, "ilbc": true, "speex": true, "g726": true, "h264": true, "vp8": true,
}

type originateArgs struct {
	channelID, otherID  string
	endpoint            string
	app, appArgs        string
	extension, context  string
	callerID            string
	timeout             int
	originator, formats string
	vars                map[string]string
}

// handleOriginate is POST /channels and POST /channels/{channelId}, with the
// checks in Asterisk's order (resource_channels.c
// ari_channels_handle_originate_with_id) and the answers of recording d.
func (s *Server) handleOriginate(rc *reqCtx) {
	if !rc.loadBody() {
		return
	}
	if d := s.OriginateDelay(); d > 0 {
		// SetOriginateDelay: a slow Asterisk, nothing exists yet.
		select {
		case <-time.After(d):
		case <-s.done:
			panic(http.ErrAbortHandler)
		case <-rc.r.Context().Done():
			panic(http.ErrAbortHandler)
		}
	}
	p := rc.p
	a := originateArgs{
		channelID:  p.str("channelId"),
		otherID:    p.str("otherChannelId"),
		endpoint:   p.str("endpoint"),
		app:        p.str("app"),
		appArgs:    p.str("appArgs"),
		extension:  p.str("extension"),
		context:    p.str("context"),
		callerID:   p.str("callerId"),
		timeout:    p.int("timeout", 30),
		originator: p.str("originator"),
		formats:    p.str("formats"),
	}
	if id, ok := rc.vars["channelId"]; ok {
		a.channelID = id
	}
	if v, ok := p.body["variables"]; ok {
		m, ok := v.(map[string]any)
		vars := map[string]string{}
		for k, x := range m {
			str, isStr := x.(string)
			if !isStr {
				ok = false
				break
			}
			vars[k] = str
		}
		if !ok {
			rc.err(http.StatusBadRequest, "Only string values in the 'variables' object allowed")
			return
		}
		a.vars = vars
	}
	if len(a.channelID) > maxUniqueID || len(a.otherID) > maxUniqueID {
		rc.err(http.StatusBadRequest, fmt.Sprintf("Uniqueid length exceeds maximum of %d", maxUniqueID))
		return
	}
	if a.endpoint == "" {
		rc.err(http.StatusBadRequest, "Endpoint must be specified")
		return
	}
	if a.originator != "" && a.formats != "" {
		rc.err(http.StatusBadRequest, "Originator and formats can't both be specified")
		return
	}
	tech, resource, _ := strings.Cut(a.endpoint, "/")
	if tech == "" || resource == "" {
		rc.err(http.StatusBadRequest, "Invalid endpoint specified")
		return
	}
	if a.app == "" && a.extension == "" {
		rc.err(http.StatusBadRequest, "Application or extension must be specified")
		return
	}
	for _, f := range strings.Split(a.formats, ",") {
		if f = strings.TrimSpace(f); f != "" && !knownFormats[f] {
			rc.err(http.StatusBadRequest, fmt.Sprintf("Provided format (%s) was not found", f))
			return
		}
	}

	s.mu.Lock()
	if a.originator != "" && s.channels[a.originator] == nil {
		s.mu.Unlock()
		rc.err(http.StatusBadRequest, "Provided originator channel was not found")
		return
	}
	ch, status := s.originateLocked(a, tech, resource)
	if ch == nil {
		s.mu.Unlock()
		switch status {
		case http.StatusConflict:
			rc.err(http.StatusConflict, "Channel with given unique ID already exists")
		default:
			rc.allocFailed()
		}
		return
	}
	body := s.appendChannel(nil, ch)
	s.mu.Unlock()

	if cb := s.cfg.OnOriginate; cb != nil {
		cb(ch.id, time.Now())
	}
	rc.json(http.StatusOK, body)
	rc.after = func() {
		s.mu.Lock()
		s.startDialLocked(ch)
		s.mu.Unlock()
	}
}

// originateLocked allocates the channel (ast_dial_prerun): unknown
// technology or an endpoint that cannot be reached is "Allocation failed"
// (500), a used id is 409.
func (s *Server) originateLocked(a originateArgs, tech, resource string) (*channel, int) {
	if s.closed {
		return nil, http.StatusInternalServerError
	}
	now := time.Now()
	ch := &channel{
		endpoint:  a.endpoint,
		app:       a.app,
		appArgs:   a.appArgs,
		created:   now,
		timeoutMs: originateTimeoutMs(a.timeout),
		exten:     "s",
		vars:      a.vars,
	}
	if a.app == "" {
		ch.appArgs = ""
	}
	switch strings.ToUpper(tech) {
	case "PJSIP":
		number, ep, hasAt := strings.Cut(resource, "@")
		if !hasAt {
			ep = number
		}
		callerName, known := labEndpoints[ep]
		if ep == "" || number == "" || (!hasAt && !known) {
			// "PJSIP/nosuch": no such endpoint (recording d).
			s.log.Info("originate: no such PJSIP endpoint", "endpoint", a.endpoint)
			return nil, http.StatusInternalServerError
		}
		ch.phone = emuphone.ForEndpoint(a.endpoint, s.Timing(s.cfg.Timing))
		if ch.phone.Outcome == emuphone.Unreachable {
			// No contact registered, or nothing listening (recording d).
			s.log.Info("originate: endpoint unreachable", "endpoint", a.endpoint)
			return nil, http.StatusInternalServerError
		}
		ch.dialstring = resource
		ch.context = "from-trunk"
		if !hasAt && ep != "trunk" && ep != "trunk-slow" {
			ch.context = "from-phones"
			ch.callerName, ch.callerNum = callerName, ep
		}
		if a.channelID != "" && s.channels[a.channelID] != nil {
			return nil, http.StatusConflict
		}
		s.pjsipSeq++
		ch.name = fmt.Sprintf("PJSIP/%s-%08x", ep, s.pjsipSeq-1)
		ch.protocolID = emuserver.UUID()
	case "LOCAL":
		exten, ctx, ok := strings.Cut(strings.TrimSuffix(resource, "/n"), "@")
		if !ok || exten == "" || ctx == "" {
			return nil, http.StatusInternalServerError
		}
		if (a.channelID != "" && s.channels[a.channelID] != nil) || (a.otherID != "" && s.channels[a.otherID] != nil) {
			return nil, http.StatusConflict
		}
		ch.local = true
		ch.dialstring = resource
		ch.context, ch.exten = ctx, exten
		ch.phone = localPhone(ctx, exten)
		s.localSeq++
		ch.name = fmt.Sprintf("Local/%s@%s-%08x;1", exten, ctx, s.localSeq-1)
	default:
		// Unknown channel technology (recording d, "FOO/bar").
		s.log.Info("originate: unknown channel technology", "endpoint", a.endpoint)
		return nil, http.StatusInternalServerError
	}
	if name, num, ok := parseCallerID(a.callerID); ok {
		ch.callerName, ch.callerNum = name, num
		ch.connected = true
	}
	ch.id = a.channelID
	if ch.id == "" {
		ch.id = s.nextUniqueID(now)
	}
	s.seq++
	ch.seq = s.seq
	s.channels[ch.id] = ch
	if ch.local {
		half2 := &channel{
			id: a.otherID, name: strings.TrimSuffix(ch.name, ";1") + ";2",
			endpoint: ch.endpoint, dialstring: ch.dialstring, context: ch.context, exten: ch.exten,
			callerName: ch.callerName, callerNum: ch.callerNum, connected: ch.connected,
			app: ch.app, created: now, state: stateRing, local: true, half2: true, timeoutMs: -1,
		}
		if half2.id == "" {
			half2.id = s.nextUniqueID(now)
		}
		s.seq++
		half2.seq = s.seq
		s.channels[half2.id] = half2
		ch.peer, half2.peer = half2, ch
	}
	// The application learns about the channel from the originate on only
	// if it exists then (stasis_app_subscribe_channel); an originate into
	// an application that does not exist is not in any channel_ids
	// (recording m, part 2).
	if a.app != "" && s.apps[a.app] != nil {
		s.subscribeLocked(ch)
		if ch.peer != nil {
			s.subscribeLocked(ch.peer)
		}
	}
	if len(s.subAll) > 0 {
		s.evChannelCreated(ch)
	}
	s.log.Debug("originate", "channel", ch.id, "endpoint", ch.endpoint, "app", ch.app, "phone", ch.phone.Outcome.String())
	return ch, http.StatusOK
}

// originateTimeoutMs: >0 seconds, -1 no timeout, anything else 30 s.
func originateTimeoutMs(timeout int) int {
	switch {
	case timeout > 0:
		return timeout * 1000
	case timeout == -1:
		return -1
	}
	return 30000
}

// nextUniqueID is Asterisk's generated uniqueid: the creation time in
// seconds and a counter that starts at 0 with every boot ("1795756130.0"
// after the restart of recording f).
func (s *Server) nextUniqueID(now time.Time) string {
	id := strconv.FormatInt(now.Unix(), 10) + "." + strconv.Itoa(s.uniq)
	s.uniq++
	return id
}

// parseCallerID is ast_callerid_parse: `Name <number>`, `"Name" <number>`,
// a bare number, or a bare name. Numbers are shrunk (ast_shrink_phone_number
// drops the usual punctuation but keeps '+').
func parseCallerID(s string) (name, number string, ok bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", "", false
	}
	if i := strings.LastIndex(s, "<"); i >= 0 {
		rest := s[i+1:]
		if j := strings.Index(rest, ">"); j >= 0 {
			rest = rest[:j]
		}
		name = strings.TrimSpace(s[:i])
		name = strings.Trim(name, `"`)
		return name, shrinkNumber(rest), true
	}
	if isPhoneNumber(s) {
		return "", shrinkNumber(s), true
	}
	return strings.Trim(s, `"`), "", true
}

func isPhoneNumber(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789+-() .*#", r) {
			return false
		}
	}
	return true
}

func shrinkNumber(s string) string {
	if !isPhoneNumber(s) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune("-() .", r) {
			return -1
		}
		return r
	}, s)
}

// localPhone: the lab's dialplan context "lab-echo" (README of the
// recordings); any other context does not exist.
func localPhone(context, exten string) emuphone.Phone {
	if context != "lab-echo" {
		return emuphone.Phone{Outcome: emuphone.Unallocated, Cause: 0}
	}
	switch exten {
	case "busy":
		return emuphone.Phone{Outcome: emuphone.Busy, Cause: 17}
	case "congestion":
		return emuphone.Phone{Outcome: emuphone.Congestion, Cause: 34}
	case "ring":
		return emuphone.Phone{Outcome: emuphone.NoAnswer, Cause: 19}
	case "answer-hangup5":
		return emuphone.Phone{Outcome: emuphone.AnswerThenHangup, Hold: 5 * time.Second, Cause: 16}
	}
	return emuphone.Phone{Outcome: emuphone.Answer, Cause: 16}
}

// startLocalLocked runs a Local pair. Into a context that does not exist
// (recording d): caller id and connected line on the ;2 half, then both
// halves destroyed with cause 0 and no Dial at all. Into lab-echo: the ;2
// half answers at once and ;1 follows (extra/g).
func (s *Server) startLocalLocked(ch *channel) {
	h2 := ch.peer
	if h2 != nil {
		s.evCallerID(h2)
		s.evConnectedLine(h2)
	}
	if ch.context != "lab-echo" {
		if h2 != nil {
			ch.peer, h2.peer = nil, nil
			s.destroyLocked(h2, 0, 0)
		}
		s.destroyLocked(ch, 0, 0)
		return
	}
	s.evDial(ch, "")
	switch ch.phone.Outcome {
	case emuphone.Busy, emuphone.Congestion:
		s.farEndRefuseLocked(ch, ch.phone.Cause, 0)
		return
	case emuphone.NoAnswer:
		ch.state = stateRinging
		s.evStateChange(ch)
		s.evDial(ch, "RINGING")
		s.armRingLocked(ch)
		return
	}
	if h2 != nil {
		h2.state = stateUp
		s.evStateChange(h2)
	}
	s.answerLocked(ch)
	ch.voice = !s.cfg.QuietPhones && (ch.exten == "play" || ch.exten == "tone")
}
