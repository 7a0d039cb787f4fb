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
