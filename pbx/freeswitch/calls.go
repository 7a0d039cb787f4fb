package freeswitch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/convoice/convoice/pbx"
)

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
	app := " &conference(" + req.ConferenceID + "@" + d.cfg.Profile + ")"
	if req.Confirm != nil {
		if app, err = confirmApp(req.ConferenceID, req.Confirm); err != nil {
			return err
		}
	}
	vars := []string{
		// A 183 with early media is not success: without this the
		// originate runs the application on the 183 and the carrier's
		// announcement plays into the room while we say "ringing"
		// (recording p).
		"ignore_early_media=true",
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
	cmd := "bgapi originate {" + strings.Join(vars, ",") + "}" + dialString + app

	// Known before the command goes out: its first event can come before
	// the reply is read.
	d.mu.Lock()
	d.legs[req.LegID] = &leg{id: req.LegID, conf: req.ConferenceID, confirm: req.Confirm != nil}
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

// Confirm-to-join defaults (pbx.Confirm's zero fields).
const (
	defaultConfirmKey     = "1"
	defaultConfirmTimeout = 5 * time.Second
	defaultConfirmTries   = 2
	// confirmVar holds the key play_and_get_digits read.
	confirmVar = "convoice_confirm_digit"
	// confirmContext is the XML dialplan context of the join extension
	// (freeswitch-conf/dialplan/convoice-confirm.xml): "conf-<room>"
	// answers and joins <room>, as the lab's "conf-dt" (recording q).
	confirmContext = "default"
)

// defaultConfirmPrompt is "press <key>" from FreeSWITCH's stock English
// sounds (en/us/callie: voicemail/vm-press.wav and digits/<key>.wav),
// resolved against sound_prefix like any relative file.
func defaultConfirmPrompt(key string) string {
	digit := key
	if key == "*" {
		digit = "star"
	}
	return "file_string://voicemail/vm-press.wav!digits/" + digit + ".wav"
}

// confirmApp is the inline dialplan of a confirm-to-join originate, as
// recorded (q): play_and_get_digits plays the prompt and reads one key
// (Tries times, Timeout each; a key other than Key counts as an invalid
// try), then transfer goes to the join extension "conf-<room>" when the
// key is Key, else to an inline hangup. Variables in it are expanded when
// the apps run, not when originate parses them; "^^;" makes ";" the
// separator, because tone_stream:// prompts have commas.
func confirmApp(room string, c *pbx.Confirm) (string, error) {
	key := c.Key
	if key == "" {
		key = defaultConfirmKey
	}
	if strings.Contains(room, ":") {
		// ${cond(a ? b : c)} splits at the first ':' after '?'.
		return "", fmt.Errorf("%w: conference id %q: no ':' with confirm-to-join", pbx.ErrRefused, room)
	}
	if len(key) != 1 || !strings.Contains("0123456789*", key) {
		return "", fmt.Errorf("%w: confirm key %q: one of 0-9 or *", pbx.ErrRefused, key)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = defaultConfirmTimeout
	}
	tries := c.Tries
	if tries <= 0 {
		tries = defaultConfirmTries
	}
	prompt := c.Prompt
	if prompt == "" {
		prompt = defaultConfirmPrompt(key)
	}
	if strings.ContainsAny(prompt, " \t;'\"{}\r\n") {
		return "", fmt.Errorf("%w: confirm prompt %q cannot be used in an originate", pbx.ErrRefused, prompt)
	}
	re := key
	if key == "*" {
		re = `\*`
	}
	return fmt.Sprintf(" '^^;play_and_get_digits:1 1 %d %d # %s silence_stream://250 %s %s;transfer:${cond(x${%s} == x%s ? conf-%s XML %s : hangup inline)}' inline",
		tries, timeout.Milliseconds(), prompt, confirmVar, re, confirmVar, key, room, confirmContext), nil
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
//
// A leg whose channel does not exist yet (its originate is still held by
// a loaded FreeSWITCH: uuid_kill says "No such channel") is remembered:
// it is hung up as soon as anything shows the channel and never joins
// (killOnSight). That is success for a leg we dialed (its end follows as
// an event); for a leg we know nothing of it is pbx.ErrNotFound, and the
// id is remembered all the same (the sweep forgets it).
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
		d.mu.Lock()
		defer d.mu.Unlock()
		if l = d.legs[legID]; l != nil && l.ended {
			return fmt.Errorf("%w: leg %s", pbx.ErrNotFound, legID)
		}
		if l == nil {
			d.legs[legID] = &leg{id: legID, cancelled: true, killOnSight: true, cancelAt: time.Now()}
			return fmt.Errorf("%w: leg %s", pbx.ErrNotFound, legID)
		}
		if l.seen {
			return fmt.Errorf("%w: leg %s", pbx.ErrNotFound, legID) // it existed and is gone
		}
		l.killOnSight, l.cancelAt = true, time.Now()
		d.log.Info("hangup of a leg whose channel does not exist yet: hanging it up when it shows", "leg", legID)
		return nil
	}
	return fmt.Errorf("%w: uuid_kill: %s", pbx.ErrRefused, strings.TrimSpace(body))
}

// killPendingLocked sends the uuid_kill of a killOnSight leg whose channel
// showed, once. Called with d.mu held.
func (d *Driver) killPendingLocked(l *leg) {
	if l.killSent || l.ended {
		return
	}
	l.killSent = true
	id := l.id
	cmd := "uuid_kill " + id
	if !l.answered {
		cmd += " ORIGINATOR_CANCEL"
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.RequestTimeout)
		defer cancel()
		body, err := d.api(ctx, cmd)
		if err == nil && strings.HasPrefix(body, "+OK") {
			d.log.Info("hung up a leg cancelled before its channel existed", "leg", id)
			return
		}
		d.log.Warn("hanging up a leg cancelled before its channel existed failed; its next event retries", "leg", id,
			"err", err, "answer", strings.TrimSpace(body))
		d.mu.Lock()
		if l := d.legs[id]; l != nil {
			l.killSent = false
		}
		d.mu.Unlock()
	}()
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
