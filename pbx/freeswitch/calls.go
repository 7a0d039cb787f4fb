package freeswitch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/fiorix/go-eventsocket/eventsocket"

	"github.com/convoice/convoice/pbx"
)

// reasonPBXRestarted is the end reason of a leg hung up because
// FreeSWITCH shut down or restarted.
const reasonPBXRestarted = "pbx restarted"

// Channel variables we set on every originate.
const (
	varNode = "convoice_node"       // the event filter's key
	varConf = "convoice_conference" // our conference id, for resync after a restart of convoice
)

// ---- requests -----------------------------------------------------------------

// current is the live connection, or ErrUnavailable with the reason.
func (d *Driver) current() (*eslConn, error) {
	c := d.conn.Load()
	if c == nil {
		return nil, fmt.Errorf("%w: %s", pbx.ErrUnavailable, d.Status().Detail)
	}
	if err := c.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s", pbx.ErrUnavailable, describe(err))
	}
	return c, nil
}

// api runs "api <cmd>" and returns the response body.
func (d *Driver) api(ctx context.Context, cmd string) (string, error) {
	c, err := d.current()
	if err != nil {
		return "", err
	}
	return apiOn(ctx, c, cmd)
}

func apiOn(ctx context.Context, c *eslConn, cmd string) (string, error) {
	f, err := c.request(ctx, "api "+cmd)
	if err != nil {
		if ctx.Err() != nil {
			return "", err
		}
		return "", fmt.Errorf("%w: %v", pbx.ErrUnavailable, err)
	}
	if f.get("Content-Type") != "api/response" {
		return "", fmt.Errorf("%w: %s: %s", pbx.ErrRefused, commandName(cmd), f.get("Reply-Text"))
	}
	return f.body, nil
}

// ---- pbx.Driver operations ------------------------------------------------

// CreateConference checks the id: mod_conference makes the room when the
// first leg joins (&conference(<id>@<profile>)), so there is nothing to
// create ahead.
func (d *Driver) CreateConference(ctx context.Context, conferenceID string) error {
	if !safeWord.MatchString(conferenceID) {
		return fmt.Errorf("%w: conference id %q cannot be a FreeSWITCH room name", pbx.ErrRefused, conferenceID)
	}
	_, err := d.current()
	return err
}

// Dial places a call: bgapi originate with our leg id as origination_uuid
// into &conference(<conference>@<profile>). It returns when FreeSWITCH
// has taken the job; the outcome comes as events (a failed originate as
// EventEnded with FreeSWITCH's cause).
func (d *Driver) Dial(ctx context.Context, req pbx.DialRequest) error {
	if !uuidLike.MatchString(req.LegID) {
		return fmt.Errorf("%w: leg id %q is not a UUID (FreeSWITCH's origination_uuid)", pbx.ErrRefused, req.LegID)
	}
	if !safeWord.MatchString(req.ConferenceID) {
		return fmt.Errorf("%w: conference id %q cannot be a FreeSWITCH room name", pbx.ErrRefused, req.ConferenceID)
	}
	dialString, err := d.cfg.Routes.DialString(req.Number)
	if err != nil {
		return fmt.Errorf("%w: %v", pbx.ErrRefused, err)
	}
	if strings.ContainsAny(dialString, " ,{}&()'\"\r\n") {
		return fmt.Errorf("%w: dial route gives %q, which cannot be used in an originate", pbx.ErrRefused, dialString)
	}
	c, err := d.current()
	if err != nil {
		return err
	}
	d.mu.Lock()
	if l := d.legs[req.LegID]; l != nil {
		d.mu.Unlock()
		return fmt.Errorf("%w: leg %s", pbx.ErrExists, req.LegID)
	}
	d.mu.Unlock()
	// After a restart of convoice we do not remember every call: ask.
	if body, err := apiOn(ctx, c, "uuid_exists "+req.LegID); err != nil {
		return err
	} else if strings.TrimSpace(body) == "true" {
		return fmt.Errorf("%w: leg %s", pbx.ErrExists, req.LegID)
	}
	timeout := req.RingTimeout
	if timeout <= 0 {
		timeout = d.cfg.RingTimeout
	}
	vars := []string{
		"origination_uuid=" + req.LegID,
		fmt.Sprintf("originate_timeout=%d", int(math.Ceil(timeout.Seconds()))),
		varNode + "=" + d.cfg.Node,
		varConf + "=" + req.ConferenceID,
	}
	if n := cleanCallerID(req.CallerIDNumber); n != "" {
		vars = append(vars, "origination_caller_id_number="+n)
	}
	if n := cleanCallerName(req.CallerIDName); n != "" {
		vars = append(vars, "origination_caller_id_name='"+n+"'")
	}
	cmd := "bgapi originate {" + strings.Join(vars, ",") + "}" + dialString +
		" &conference(" + req.ConferenceID + "@" + d.cfg.Profile + ")"

	// Known before the command goes out: its first event can come before
	// the reply is read.
	d.mu.Lock()
	d.legs[req.LegID] = &leg{id: req.LegID, conf: req.ConferenceID}
	d.mu.Unlock()
	f, err := c.request(ctx, cmd)
	if err == nil && strings.HasPrefix(f.get("Reply-Text"), "+OK") {
		d.log.Info("leg dialed", "leg", req.LegID, "conference", req.ConferenceID, "job", f.get("Job-UUID"))
		return nil
	}
	d.mu.Lock()
	if err != nil && !errors.Is(err, errUnsent) {
		// The originate went out and no answer came: FreeSWITCH may
		// place the call. Keep the leg as abandoned (see apply) and try
		// to cancel it now, in the background.
		if l := d.legs[req.LegID]; l != nil {
			l.abandoned, l.endedAt = true, time.Now()
		}
		go d.killAbandoned(req.LegID)
	} else {
		delete(d.legs, req.LegID)
	}
	d.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: %v", pbx.ErrUnavailable, err)
	}
	return fmt.Errorf("%w: originate: %s", pbx.ErrRefused, f.get("Reply-Text"))
}

var uuidLike = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)

func cleanCallerID(s string) string {
	var b strings.Builder
	for i, r := range s {
		if (r >= '0' && r <= '9') || (r == '+' && i == 0) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cleanCallerName keeps what can sit in a single-quoted originate
// variable: no quotes, braces, commas or control characters.
func cleanCallerName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < ' ' || strings.ContainsRune(`'"{}[],\`, r) {
			continue
		}
		b.WriteRune(r)
	}
	out := strings.TrimSpace(b.String())
	if len(out) > 64 {
		out = out[:64]
	}
	return out
}

// Hangup ends a leg with uuid_kill. A leg that was not answered yet is
// cancelled with ORIGINATOR_CANCEL (FreeSWITCH sends CANCEL and reports
// that cause, recording i); an answered one is cleared (NORMAL_CLEARING).
func (d *Driver) Hangup(ctx context.Context, legID string) error {
	if !uuidLike.MatchString(legID) {
		return fmt.Errorf("%w: leg %s", pbx.ErrNotFound, legID)
	}
	d.mu.Lock()
	l := d.legs[legID]
	answered := false
	if l != nil {
		if l.ended {
			d.mu.Unlock()
			return fmt.Errorf("%w: leg %s already ended", pbx.ErrNotFound, legID)
		}
		l.cancelled = true
		answered = l.answered
	}
	d.mu.Unlock()
	cmd := "uuid_kill " + legID
	if l != nil && !answered {
		cmd += " ORIGINATOR_CANCEL"
	}
	body, err := d.api(ctx, cmd)
	if err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(body, "+OK"):
		return nil
	case strings.Contains(body, "No such channel"):
		return fmt.Errorf("%w: leg %s", pbx.ErrNotFound, legID)
	}
	return fmt.Errorf("%w: uuid_kill: %s", pbx.ErrRefused, strings.TrimSpace(body))
}

// SetMute mutes or unmutes a member with "conference <room> mute|unmute
// <member-id>"; the member id comes from add-member (or the room's list).
func (d *Driver) SetMute(ctx context.Context, conferenceID, legID string, muted bool) error {
	if !safeWord.MatchString(conferenceID) {
		return fmt.Errorf("%w: conference %s", pbx.ErrNotFound, conferenceID)
	}
	d.mu.Lock()
	l := d.legs[legID]
	var member string
	var ended, inConf bool
	if l != nil {
		member, ended, inConf = l.member, l.ended, l.inConf
	}
	d.mu.Unlock()
	if l != nil && ended {
		return fmt.Errorf("%w: leg %s already ended", pbx.ErrNotFound, legID)
	}
	if l != nil && !inConf {
		return fmt.Errorf("%w: leg %s is not in the conference yet", pbx.ErrNotReady, legID)
	}
	if member == "" {
		m, err := d.findMember(ctx, conferenceID, legID)
		if err != nil {
			return err
		}
		member = m
	}
	verb := "unmute"
	if muted {
		verb = "mute"
	}
	body, err := d.api(ctx, "conference "+conferenceID+" "+verb+" "+member)
	if err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(body, "+OK"):
		d.mu.Lock()
		if l := d.legs[legID]; l != nil {
			l.muted = muted
		}
		d.mu.Unlock()
		return nil
	case strings.Contains(body, "Non-Existant ID"), strings.Contains(body, "not found"):
		return fmt.Errorf("%w: leg %s is not in conference %s", pbx.ErrNotFound, legID, conferenceID)
	}
	return fmt.Errorf("%w: %s: %s", pbx.ErrRefused, verb, strings.TrimSpace(body))
}

// findMember looks a leg up in the room's member list.
func (d *Driver) findMember(ctx context.Context, conferenceID, legID string) (string, error) {
	body, err := d.api(ctx, "conference "+conferenceID+" json_list")
	if err != nil {
		return "", err
	}
	rooms, err := parseRooms(body)
	if err != nil {
		return "", fmt.Errorf("%w: leg %s is not in conference %s", pbx.ErrNotFound, legID, conferenceID)
	}
	for _, r := range rooms {
		for _, m := range r.Members {
			if m.UUID == legID {
				id := fmt.Sprint(m.ID)
				d.mu.Lock()
				if l := d.legs[legID]; l != nil {
					l.member, l.inConf = id, true
				}
				d.mu.Unlock()
				return id, nil
			}
		}
	}
	return "", fmt.Errorf("%w: leg %s is not in conference %s", pbx.ErrNotFound, legID, conferenceID)
}

// EndConference hangs up every member ("conference <room> hup all") and
// every leg of ours still ringing for the room (they are not members yet),
// so nothing is left on FreeSWITCH. An unknown room is fine.
func (d *Driver) EndConference(ctx context.Context, conferenceID string) error {
	if !safeWord.MatchString(conferenceID) {
		return nil
	}
	// Every leg of the room ends because we said so.
	d.mu.Lock()
	for _, l := range d.legs {
		if l.conf == conferenceID && !l.ended {
			l.cancelled = true
		}
	}
	d.mu.Unlock()
	body, err := d.api(ctx, "conference "+conferenceID+" hup all")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(body, "+OK") && !strings.Contains(body, "not found") {
		d.log.Warn("conference hup all", "conference", conferenceID, "answer", strings.TrimSpace(body))
	}
	// Legs of the room not in it: ringing ones we know, and any we do not
	// (after a restart of convoice) found by their convoice_conference.
	snap, err := d.Snapshot(ctx)
	if err != nil {
		return err
	}
	for _, ls := range snap.Legs {
		if ls.ConferenceID != conferenceID {
			continue
		}
		if err := d.Hangup(ctx, ls.LegID); err != nil && !isNotFound(err) {
			return err
		}
	}
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, pbx.ErrNotFound) }

// killAbandoned hangs up a call whose originate we reported failed, if
// FreeSWITCH placed it after all.
func (d *Driver) killAbandoned(legID string) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.RequestTimeout)
	defer cancel()
	err := d.Hangup(ctx, legID)
	switch {
	case err == nil:
		d.mu.Lock()
		if l := d.legs[legID]; l != nil {
			l.killed = true
		}
		d.mu.Unlock()
		d.log.Warn("hung up a call whose originate had timed out", "leg", legID)
	case !isNotFound(err):
		d.log.Warn("hanging up a call whose originate had timed out failed; resync will retry", "leg", legID, "err", err)
	}
}

// ---- events ---------------------------------------------------------------

// apply maps one FreeSWITCH event onto our legs; dispatcher goroutine only.
func (d *Driver) apply(ev *eventsocket.Event) {
	name := ev.Get("Event-Name")
	if name == "BACKGROUND_JOB" {
		d.backgroundJob(ev)
		return
	}
	uuid := ev.Get("Unique-ID")
	if uuid == "" {
		return // room-level conference events: nothing to report
	}
	d.mu.Lock()
	l := d.legs[uuid]
	if l == nil && ev.Get("variable_"+varNode) == d.cfg.Node {
		// A call of ours placed before convoice restarted.
		l = &leg{id: uuid, conf: ev.Get("variable_" + varConf)}
		d.legs[uuid] = l
	}
	if l == nil || l.ended {
		d.mu.Unlock()
		return
	}
	if l.abandoned {
		// A call whose originate we reported failed: never reported, hung
		// up as soon as it shows.
		if name == "CHANNEL_HANGUP_COMPLETE" {
			l.ended = true
		} else if !l.killed {
			go d.killAbandoned(l.id)
		}
		d.mu.Unlock()
		return
	}
	at := eventTime(ev)
	var out []pbx.Event
	switch name {
	case "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA":
		// 180 and 183 alike: ringing, never answered.
		if !l.ringing && !l.answered {
			l.ringing = true
			out = append(out, pbx.Event{Type: pbx.EventRinging, LegID: l.id, ConferenceID: l.conf, At: at})
		}
	case "CHANNEL_ANSWER":
		l.answered = true
		out = append(out, d.connectedLocked(l, at)...)
	case "CHANNEL_HANGUP_COMPLETE":
		cause := ev.Get("Hangup-Cause")
		reason := ""
		if cause == "SYSTEM_SHUTDOWN" && !l.cancelled {
			// FreeSWITCH hangs every call up this way when it stops or
			// restarts (recordings g_*): say so, as the controller does
			// when a restart is only noticed after the fact.
			reason = reasonPBXRestarted
		}
		out = append(out, d.endLocked(l, causeCode(cause, ev.Get("variable_hangup_cause_q850")), cause, reason, at))
	case "CUSTOM":
		if ev.Get("Event-Subclass") != "conference::maintenance" {
			break
		}
		if room := ev.Get("Conference-Name"); l.conf == "" {
			l.conf = room
		}
		switch ev.Get("Action") {
		case "add-member":
			l.inConf, l.member = true, ev.Get("Member-ID")
			l.muted = ev.Get("Speak") == "false"
			if ev.Get("Answer-State") == "answered" {
				l.answered = true
			}
			out = append(out, d.connectedLocked(l, at)...)
		case "del-member":
			l.inConf, l.member = false, ""
		case "mute-member":
			l.muted = true
		case "unmute-member":
			l.muted = false
		case "start-talking", "stop-talking":
			if l.connected {
				t := pbx.EventTalkingStarted
				if ev.Get("Action") == "stop-talking" {
					t = pbx.EventTalkingFinished
				}
				out = append(out, pbx.Event{Type: t, LegID: l.id, ConferenceID: l.conf, At: at})
			}
		}
	}
	d.mu.Unlock()
	for _, e := range out {
		d.emit(e)
	}
}

// connectedLocked: answered and in the mix (add-member) is connected; early
// media never is.
func (d *Driver) connectedLocked(l *leg, at time.Time) []pbx.Event {
	if !l.answered || !l.inConf || l.connected {
		return nil
	}
	l.connected = true
	return []pbx.Event{{Type: pbx.EventConnected, LegID: l.id, ConferenceID: l.conf, At: at}}
}

func (d *Driver) endLocked(l *leg, cause int, causeText, reason string, at time.Time) pbx.Event {
	l.ended, l.endedAt = true, time.Now()
	l.inConf, l.member = false, ""
	if reason == "" && l.cancelled {
		reason = "hung up by convoice"
	}
	d.log.Info("leg ended", "leg", l.id, "cause", cause, "cause_txt", causeText, "reason", reason)
	return pbx.Event{Type: pbx.EventEnded, LegID: l.id, ConferenceID: l.conf, Cause: cause,
		CauseText: causeText, Reason: reason, At: at}
}

var jobLegRE = regexp.MustCompile(`origination_uuid=([0-9A-Fa-f-]{36})`)

// backgroundJob: the originate result. "-ERR <CAUSE>" ends the leg (for no
// answer it comes before CHANNEL_HANGUP_COMPLETE; for an unknown gateway
// there is no channel at all); "+OK <uuid>" needs nothing.
func (d *Driver) backgroundJob(ev *eventsocket.Event) {
	if ev.Get("Job-Command") != "originate" {
		return
	}
	m := jobLegRE.FindStringSubmatch(ev.Get("Job-Command-Arg"))
	if m == nil {
		return
	}
	body := strings.TrimSpace(ev.Body)
	if !strings.HasPrefix(body, "-") {
		return
	}
	d.mu.Lock()
	l := d.legs[m[1]]
	if l == nil && strings.Contains(ev.Get("Job-Command-Arg"), varNode+"="+d.cfg.Node+",") {
		// An originate of ours sent by another convoice replica (one
		// without the event connection): its failure is ours to report.
		l = &leg{id: m[1], conf: jobConference(ev.Get("Job-Command-Arg"))}
		d.legs[m[1]] = l
	}
	if l == nil || l.ended {
		d.mu.Unlock()
		return
	}
	if l.abandoned {
		l.ended = true // the originate failed after all: nothing to hang up
		d.mu.Unlock()
		return
	}
	cause := strings.TrimSpace(strings.TrimPrefix(body, "-ERR"))
	if strings.HasPrefix(body, "-USAGE") {
		cause = body
	}
	if configCauses[cause] {
		d.log.Warn("FreeSWITCH cannot place calls on this dial route: check the routes and FreeSWITCH's sofia config",
			"leg", l.id, "cause", cause)
	}
	e := d.endLocked(l, causeCode(cause, ""), cause, "", eventTime(ev))
	d.mu.Unlock()
	d.emit(e)
}

// jobConference is the conference id in an originate's arguments.
func jobConference(arg string) string {
	if m := jobConfRE.FindStringSubmatch(arg); m != nil {
		return m[1]
	}
	return ""
}

var jobConfRE = regexp.MustCompile(varConf + `=([^,}]+)`)

// eventTime is when FreeSWITCH says the event happened.
func eventTime(ev *eventsocket.Event) time.Time {
	var us int64
	if _, err := fmt.Sscan(ev.Get("Event-Date-Timestamp"), &us); err == nil && us > 0 {
		return time.UnixMicro(us)
	}
	return time.Now()
}

// ---- resync ---------------------------------------------------------------

// Snapshot reads what FreeSWITCH holds of ours: "show channels as json"
// for the calls, "conference json_list" for the rooms and members.
func (d *Driver) Snapshot(ctx context.Context) (pbx.Snapshot, error) {
	c, err := d.current()
	if err != nil {
		return pbx.Snapshot{}, err
	}
	return d.snapshotOn(ctx, c)
}

type channelRow struct {
	UUID            string `json:"uuid"`
	CallState       string `json:"callstate"`
	Application     string `json:"application"`
	ApplicationData string `json:"application_data"`
}

type roomInfo struct {
	Name    string `json:"conference_name"`
	Members []struct {
		ID    int    `json:"id"`
		UUID  string `json:"uuid"`
		Flags struct {
			CanSpeak bool `json:"can_speak"`
		} `json:"flags"`
	} `json:"members"`
}

func parseRooms(body string) ([]roomInfo, error) {
	var rooms []roomInfo
	if err := json.Unmarshal([]byte(body), &rooms); err != nil {
		return nil, fmt.Errorf("conference json_list: %v", err)
	}
	return rooms, nil
}

func (d *Driver) snapshotOn(ctx context.Context, c *eslConn) (pbx.Snapshot, error) {
	snap := pbx.Snapshot{At: time.Now()}
	body, err := apiOn(ctx, c, "show channels as json")
	if err != nil {
		return snap, err
	}
	var chans struct {
		Rows []channelRow `json:"rows"`
	}
	if err := json.Unmarshal([]byte(body), &chans); err != nil {
		return snap, fmt.Errorf("%w: show channels as json: %v", pbx.ErrUnavailable, err)
	}
	body, err = apiOn(ctx, c, "conference json_list")
	if err != nil {
		return snap, err
	}
	rooms, err := parseRooms(body)
	if err != nil {
		return snap, fmt.Errorf("%w: %v", pbx.ErrUnavailable, err)
	}
	type membership struct {
		room  string
		id    int
		muted bool
	}
	members := map[string]membership{}
	for _, r := range rooms {
		for _, m := range r.Members {
			members[m.UUID] = membership{r.Name, m.ID, !m.Flags.CanSpeak}
		}
	}
	confs := map[string]bool{}
	for _, row := range chans.Rows {
		d.mu.Lock()
		l := d.legs[row.UUID]
		conf := ""
		if l != nil && !l.ended {
			conf = l.conf
		}
		d.mu.Unlock()
		if l == nil {
			// Not one we remember (convoice restarted?): ours if it
			// carries our tag.
			node, err := apiOn(ctx, c, "uuid_getvar "+row.UUID+" "+varNode)
			if err != nil {
				return snap, err
			}
			if strings.TrimSpace(node) != d.cfg.Node {
				continue
			}
			conf, err = apiOn(ctx, c, "uuid_getvar "+row.UUID+" "+varConf)
			if err != nil {
				return snap, err
			}
			conf = strings.TrimSpace(conf)
			if conf == "_undef_" || strings.HasPrefix(conf, "-ERR") {
				conf = ""
			}
		} else if l.ended {
			continue
		}
		ls := pbx.LegSnapshot{LegID: row.UUID, ConferenceID: conf,
			Answered: row.CallState == "ACTIVE" || row.CallState == "HELD"}
		if m, ok := members[row.UUID]; ok {
			ls.InConference, ls.Muted = true, m.muted
			if ls.ConferenceID == "" {
				ls.ConferenceID = m.room
			}
		}
		if ls.ConferenceID != "" && ls.InConference {
			confs[ls.ConferenceID] = true
		}
		snap.Legs = append(snap.Legs, ls)
	}
	for _, r := range rooms {
		if confs[r.Name] {
			snap.Conferences = append(snap.Conferences, r.Name)
		}
	}
	// Member ids for SetMute.
	d.mu.Lock()
	for _, ls := range snap.Legs {
		if l := d.legs[ls.LegID]; l != nil && !l.ended {
			if m, ok := members[ls.LegID]; ok {
				l.member = fmt.Sprint(m.id)
			}
		}
	}
	d.mu.Unlock()
	return snap, nil
}

// reconcile brings the leg table in line with a snapshot taken after a
// (re)connect and tells the controller what it missed: legs that rang,
// joined or vanished while the link was down. When none of the calls we
// knew exists any more, FreeSWITCH lost them all (restart, crash):
// EventPBXRestarted. Dispatcher goroutine only.
func (d *Driver) reconcile(snap pbx.Snapshot, reconnect bool) {
	now := time.Now()
	have := map[string]pbx.LegSnapshot{}
	for _, ls := range snap.Legs {
		have[ls.LegID] = ls
	}
	var out []pbx.Event
	d.mu.Lock()
	var live []*leg
	for _, l := range d.legs {
		if !l.ended {
			live = append(live, l)
		}
	}
	found := 0
	for _, l := range live {
		if _, ok := have[l.id]; ok {
			found++
		}
	}
	if reconnect && len(live) > 0 && found == 0 {
		for _, l := range live {
			l.ended, l.endedAt = true, now
		}
		d.mu.Unlock()
		d.log.Warn("none of our calls exist after reconnecting: FreeSWITCH restarted", "calls", len(live))
		d.emit(pbx.Event{Type: pbx.EventPBXRestarted, Reason: "none of our calls exist on FreeSWITCH after reconnecting", At: now})
		return
	}
	for _, l := range live {
		ls, ok := have[l.id]
		if l.abandoned {
			if ok {
				go d.killAbandoned(l.id)
			} else if reconnect {
				l.ended = true
			}
			continue
		}
		if !ok {
			if reconnect {
				out = append(out, d.endLocked(l, 0, "", "gone from FreeSWITCH while the event link was down", now))
			}
			continue
		}
		if ls.Answered {
			l.answered = true
		}
		l.inConf, l.muted = ls.InConference, ls.Muted
		out = append(out, d.connectedLocked(l, now)...)
	}
	for id, ls := range have {
		if d.legs[id] == nil {
			d.legs[id] = &leg{id: id, conf: ls.ConferenceID, answered: ls.Answered, inConf: ls.InConference,
				muted: ls.Muted, ringing: !ls.Answered, connected: ls.Answered && ls.InConference}
		}
	}
	d.mu.Unlock()
	for _, e := range out {
		d.emit(e)
	}
}
