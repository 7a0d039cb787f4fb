package freeswitch

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/fiorix/go-eventsocket/eventsocket"

	"github.com/convoice/convoice/pbx"
)

// reasonPBXRestarted is the end reason of a leg hung up because
// FreeSWITCH shut down or restarted.
const reasonPBXRestarted = "pbx restarted"

// ---- dispatcher -------------------------------------------------------------

func (d *Driver) enqueue(f func()) {
	d.qmu.Lock()
	if len(d.queue) >= maxQueue {
		d.qmu.Unlock()
		d.onLost("event queue full (the handler is not keeping up)")
		return
	}
	d.queue = append(d.queue, f)
	d.qmu.Unlock()
	select {
	case d.qwake <- struct{}{}:
	default:
	}
}

func (d *Driver) dispatch(ctx context.Context, h pbx.Handler) {
	d.handler = h
	for {
		d.qmu.Lock()
		batch := d.queue
		d.queue = nil
		d.qmu.Unlock()
		for _, f := range batch {
			f()
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-d.qwake:
		}
	}
}

// onEvent is called by the socket reader: queue, never block.
func (d *Driver) onEvent(ev *eventsocket.Event) {
	d.enqueue(func() { d.apply(ev) })
}

// onLost counts an event we could not use and tells the controller once
// (coalesced) so it resyncs.
func (d *Driver) onLost(reason string) {
	d.health.Lost()
	d.log.Warn("event lost", "reason", reason)
	d.qmu.Lock()
	if d.lostPending {
		d.qmu.Unlock()
		return
	}
	d.lostPending = true
	d.queue = append(d.queue, func() {
		d.qmu.Lock()
		d.lostPending = false
		d.qmu.Unlock()
		d.emit(pbx.Event{Type: pbx.EventLost, Reason: reason, At: time.Now()})
	})
	d.qmu.Unlock()
	select {
	case d.qwake <- struct{}{}:
	default:
	}
}

func (d *Driver) emitLink(e pbx.Event) { d.enqueue(func() { d.emit(e) }) }

// emit calls the handler; only from the dispatcher goroutine.
func (d *Driver) emit(e pbx.Event) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	if d.handler != nil {
		d.handler.HandleEvent(e)
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
	if name != "CUSTOM" {
		l.seen = true
	}
	if l.killOnSight {
		// Hung up by us before its channel existed: hang it up now, report
		// only its end (as ours), never ringing or the room.
		if name == "CHANNEL_HANGUP_COMPLETE" {
			e := d.endLocked(l, causeCode(ev.Get("Hangup-Cause"), ev.Get("variable_hangup_cause_q850")),
				ev.Get("Hangup-Cause"), "", eventTime(ev))
			d.mu.Unlock()
			d.emit(e)
			return
		}
		if name == "CHANNEL_ANSWER" {
			l.answered = true
		}
		d.killPendingLocked(l)
		d.mu.Unlock()
		return
	}
	at := eventTime(ev)
	var out []pbx.Event
	switch name {
	case "CHANNEL_CREATE":
		// Only proves the channel exists (seen, above).
	case "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA":
		// 180 and 183 alike: ringing, never answered.
		if !l.ringing && !l.answered {
			l.ringing = true
			out = append(out, pbx.Event{Type: pbx.EventRinging, LegID: l.id, ConferenceID: l.conf, At: at})
		}
	case "CHANNEL_ANSWER":
		l.answered = true
		if l.confirm && !l.answeredEmitted && !l.connected {
			// Answered, not in the room: the prompt plays and the
			// key is awaited (the dialplan does it, recording q).
			l.answeredEmitted = true
			out = append(out, pbx.Event{Type: pbx.EventAnswered, LegID: l.id, ConferenceID: l.conf, At: at})
		}
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
		// "+OK <uuid>": the channel exists; it says nothing of the answer
		// (with early media taken as success it came at the 183, p).
		d.mu.Lock()
		if l := d.legs[m[1]]; l != nil && l.killOnSight {
			d.killPendingLocked(l)
		}
		d.mu.Unlock()
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
