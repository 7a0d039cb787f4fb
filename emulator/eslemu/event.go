package eslemu

import (
	"strconv"
	"strings"
	"time"
)

// hdr is one event header; events keep their headers in order because
// FreeSWITCH serializes them in insertion order and the recordings show it.
type hdr struct{ k, v string }

// event is one FreeSWITCH event before serialization.
type event struct {
	name     string // Event-Name
	subclass string // Event-Subclass for CUSTOM
	headers  []hdr
	body     string
	hasBody  bool
	// uuid is the channel the event is about (Unique-ID), for myevents.
	uuid string
}

func (e *event) add(k, v string) *event {
	e.headers = append(e.headers, hdr{k, v})
	return e
}

// get returns a header the way switch_event_get_header does (case-insensitive).
func (e *event) get(k string) (string, bool) {
	switch {
	case strings.EqualFold(k, "Event-Name"):
		return e.name, true
	case strings.EqualFold(k, "Event-Subclass") && e.subclass != "":
		return e.subclass, true
	}
	for _, h := range e.headers {
		if strings.EqualFold(h.k, k) {
			return h.v, true
		}
	}
	return "", false
}

func (e *event) setBody(b string) {
	e.body = b
	e.hasBody = true
}

// json is switch_event_serialize_json: one object, every value a string, a
// body as "Content-Length" then "_body" (recorded BACKGROUND_JOB).
func (e *event) json() string {
	var b strings.Builder
	b.WriteByte('{')
	first := true
	w := func(k, v string) {
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(jsonString(k))
		b.WriteByte(':')
		b.WriteString(jsonString(v))
	}
	for _, h := range e.headers {
		w(h.k, h.v)
	}
	if e.hasBody {
		w("Content-Length", strconv.Itoa(len(e.body)))
		w("_body", e.body)
	}
	b.WriteByte('}')
	return b.String()
}

// plain is switch_event_serialize with URL encoding: "Name: value\n" per
// header, then either "\n" or an inner Content-Length, "\n\n" and the body.
func (e *event) plain() string {
	var b strings.Builder
	for _, h := range e.headers {
		b.WriteString(h.k)
		b.WriteString(": ")
		b.WriteString(urlEncode(h.v))
		b.WriteByte('\n')
	}
	if e.hasBody {
		b.WriteString("Content-Length: ")
		b.WriteString(strconv.Itoa(len(e.body)))
		b.WriteString("\n\n")
		b.WriteString(e.body)
	} else {
		b.WriteByte('\n')
	}
	return b.String()
}

// calling is where FreeSWITCH says an event came from (Event-Calling-*), as
// recorded for each kind of event.
type calling struct{ file, fn, line string }

var callingOf = map[string]calling{
	"API":                      {"switch_loadable_module.c", "switch_api_execute", "2954"},
	"BACKGROUND_JOB":           {"mod_event_socket.c", "api_exec", "1572"},
	"CALL_UPDATE":              {"switch_channel.c", "switch_channel_flip_cid", "3277"},
	"CHANNEL_ANSWER":           {"switch_channel.c", "switch_channel_perform_mark_answered", "3846"},
	"CHANNEL_CALLSTATE":        {"switch_channel.c", "switch_channel_perform_set_callstate", "301"},
	"CHANNEL_CREATE":           {"switch_core_state_machine.c", "switch_core_session_run", "626"},
	"CHANNEL_DESTROY":          {"switch_core_session.c", "switch_core_session_perform_destroy", "1584"},
	"CHANNEL_EXECUTE":          {"switch_core_session.c", "switch_core_session_exec", "2944"},
	"CHANNEL_EXECUTE_COMPLETE": {"switch_core_session.c", "switch_core_session_exec", "2967"},
	"CHANNEL_HANGUP":           {"switch_channel.c", "switch_channel_perform_hangup", "3445"},
	"CHANNEL_HANGUP_COMPLETE":  {"switch_core_state_machine.c", "switch_core_session_reporting_state", "943"},
	"CHANNEL_ORIGINATE":        {"switch_core_state_machine.c", "switch_core_session_run", "632"},
	"CHANNEL_OUTGOING":         {"switch_core_session.c", "switch_core_session_outgoing_channel", "768"},
	"CHANNEL_PROGRESS":         {"switch_channel.c", "switch_channel_perform_mark_ring_ready_value", "3505"},
	"CHANNEL_PROGRESS_MEDIA":   {"switch_channel.c", "switch_channel_perform_mark_pre_answered", "3700"},
	"CHANNEL_STATE":            {"switch_channel.c", "switch_channel_perform_set_running_state", "2408"},
	"CHANNEL_DATA":             {"mod_commands.c", "uuid_dump_function", "6468"},
	"DTMF":                     {"switch_channel.c", "switch_channel_dequeue_dtmf", "677"},
	"PLAYBACK_START":           {"switch_ivr_play_say.c", "switch_ivr_play_file", "1646"},
	"PLAYBACK_STOP":            {"switch_ivr_play_say.c", "switch_ivr_play_file", "2020"},
	"CODEC":                    {"switch_core_codec.c", "switch_core_session_set_read_codec", "279"},
	"HEARTBEAT":                {"switch_core.c", "send_heartbeat", "95"},
	"SHUTDOWN":                 {"switch_core.c", "switch_core_destroy", "3023"},
}

var conferenceCalling = map[string]calling{
	"conference-create":     {"mod_conference.c", "conference_new", "3848"},
	"conference-destroy":    {"mod_conference.c", "conference_thread_run", "863"},
	"add-member":            {"conference_member.c", "conference_member_add", "962"},
	"del-member":            {"conference_member.c", "conference_member_del", "1355"},
	"start-talking":         {"conference_loop.c", "conference_loop_input", "1154"},
	"stop-talking":          {"conference_loop.c", "stop_talking_handler", "783"},
	"mute-member":           {"conference_api.c", "conference_api_sub_mute", "339"},
	"unmute-member":         {"conference_api.c", "conference_api_sub_unmute", "492"},
	"deaf-member":           {"conference_api.c", "conference_api_sub_deaf", "797"},
	"undeaf-member":         {"conference_api.c", "conference_api_sub_undeaf", "839"},
	"hup-member":            {"conference_api.c", "conference_api_sub_hup", "871"},
	"kick-member":           {"conference_api.c", "conference_api_sub_kick", "902"},
	"energy-level-member":   {"conference_api.c", "conference_api_sub_energy", "1228"},
	"lock":                  {"conference_api.c", "conference_api_sub_lock", "3474"},
	"unlock":                {"conference_api.c", "conference_api_sub_unlock", "3496"},
	"play-file":             {"conference_api.c", "conference_api_sub_play", "2817"},
	"play-file-member":      {"conference_api.c", "conference_api_sub_play", "2846"},
	"play-file-done":        {"conference_file.c", "conference_file_close", "52"},
	"play-file-member-done": {"conference_file.c", "conference_file_close", "52"},
}

// newEventLocked starts an event with the core headers every FreeSWITCH
// event carries, in the recorded order. Callers hold s.mu (it bumps the
// event sequence).
func (s *Server) newEventLocked(name, subclass string, at calling) *event {
	s.seq++
	now := time.Now()
	e := &event{name: name, subclass: subclass}
	if subclass != "" {
		e.add("Event-Subclass", subclass)
	}
	e.add("Event-Name", name).
		add("Core-UUID", s.coreUUID).
		add("FreeSWITCH-Hostname", s.cfg.Hostname).
		add("FreeSWITCH-Switchname", s.cfg.Switchname).
		add("FreeSWITCH-IPv4", s.cfg.IPv4).
		add("FreeSWITCH-IPv6", s.cfg.IPv6).
		add("Event-Date-Local", now.Local().Format("2006-01-02 15:04:05")).
		add("Event-Date-GMT", now.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT")).
		add("Event-Date-Timestamp", strconv.FormatInt(now.UnixMicro(), 10)).
		add("Event-Calling-File", at.file).
		add("Event-Calling-Function", at.fn).
		add("Event-Calling-Line-Number", at.line).
		add("Event-Sequence", strconv.FormatUint(s.seq, 10))
	return e
}

// eventNames are the names `event` accepts (switch_event.c EVENT_NAMES);
// anything else is ignored the way switch_name_event fails.
var eventNames = map[string]bool{}

func init() {
	for _, n := range strings.Fields(`CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE
	CHANNEL_CALLSTATE CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE
	CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD CHANNEL_UNHOLD CHANNEL_BRIDGE CHANNEL_UNBRIDGE
	CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK
	CHANNEL_APPLICATION CHANNEL_ORIGINATE CHANNEL_UUID API LOG INBOUND_CHAN OUTBOUND_CHAN
	STARTUP SHUTDOWN PUBLISH UNPUBLISH TALK NOTALK SESSION_CRASH MODULE_LOAD MODULE_UNLOAD
	DTMF MESSAGE PRESENCE_IN NOTIFY_IN PRESENCE_OUT PRESENCE_PROBE MESSAGE_WAITING
	MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB DETECTED_SPEECH DETECTED_TONE PRIVATE_COMMAND
	HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE EXE_SCHEDULE RE_SCHEDULE RELOADXML NOTIFY
	PHONE_FEATURE PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE RECV_MESSAGE REQUEST_PARAMS
	CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT CLIENT_DISCONNECTED SERVER_DISCONNECTED
	SEND_INFO RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT RECORD_START
	RECORD_STOP PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA MEDIA_BUG_START
	MEDIA_BUG_STOP CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ CALL_SETUP_RESULT
	CALL_DETAIL DEVICE_STATE TEXT SHUTDOWN_REQUESTED ALL`) {
		eventNames[n] = true
	}
}

// myeventsTypes are the event types `myevents` subscribes to
// (mod_event_socket.c parse_command, "myevents").
var myeventsTypes = []string{"CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE",
	"CHANNEL_CREATE", "CHANNEL_DATA", "CHANNEL_DESTROY", "CHANNEL_EXECUTE",
	"CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE",
	"CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_OUTGOING", "CHANNEL_PARK",
	"CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_STATE", "CHANNEL_UNBRIDGE",
	"CHANNEL_UNPARK", "DETECTED_SPEECH", "DTMF", "NOTALK", "TALK"}
