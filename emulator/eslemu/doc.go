// Package eslemu is an emulated FreeSWITCH 1.10.12 speaking the event socket
// (mod_event_socket, inbound) on loopback, checked against the recordings.
// It never imports convoice's drivers or controller: only the shared phone
// table (emuphone) and the emulators' scaffolding (internal/emuserver).
//
// It runs in-process on a real TCP listener, so the FreeSWITCH driver, the
// controller scenarios and demos run without a FreeSWITCH on the machine.
//
// What it follows, in this order:
//
//   - The traffic recorded from a real FreeSWITCH 1.10.12 in
//     testdata/freeswitch/*.json (copied from the lab fixtures): replies,
//     event names and order per call, header names and order, causes,
//     member ids, resync query formats. The conformance test replays every
//     recording against the emulator.
//   - The mod_event_socket documentation ("mod_event_socket", FreeSWITCH
//     Explained: developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_event_socket_1048924,
//     section 3 "Command Documentation": auth, api, bgapi + Job-UUID,
//     event plain|json, filter / filter delete, myevents, noevents, exit)
//     and its source, src/mod/event_handlers/mod_event_socket/mod_event_socket.c
//     (listener_run, parse_command, api_exec, event_handler, send_disconnect)
//     for what the recordings do not show.
//
// Calls are the scripted phones of package emuphone (shared with the ARI
// emulator): the dial string's last four digits decide busy, no answer,
// reject, unallocated, congestion, answer-then-hangup or answer. Where
// FreeSWITCH names a cause differently from the contract's table the
// recording wins: a 503 is NORMAL_TEMPORARY_FAILURE (41), not congestion.
//
// Early media (recording p): "0183"/"0187" answer the INVITE with 183 and
// SDP; without ignore_early_media=true in the originate's {vars} the
// originate succeeds on it (BACKGROUND_JOB +OK, the application runs, the
// leg joins its room unanswered) and originate_timeout no longer applies;
// with it nothing happens until the 200 OK. A 480 after the early media is
// NO_USER_RESPONSE (18).
//
// Confirm-to-join (recording q): `originate … '<apps>' inline` runs an
// inline dialplan with play_and_get_digits, transfer, answer, conference,
// park and hangup, expanding ${var} and ${cond(…)} when each app runs; a
// transfer to "conf-<room> XML default" answers and joins
// "conference <room>@default"; the "0111" phone's key gives a DTMF event;
// uuid_transfer runs the same transfer. dialplan.go says what is assumed
// where the recording is silent.
//
// Test knobs: SetOriginateDelay, SetAnswerDelay, SetPartitioned (=
// SetUnresponsive), Restart/RestartHard (a new Core-UUID; reconnecting to
// the same process keeps it).
//
// Not emulated: XML event format (sent as plain), the log/linger/sendmsg
// family beyond their error replies, outbound sockets, floor-change events,
// MODULE_UNLOAD and presence events, SDP and RTP details of the variables
// (events carry a subset of the variable_* headers, in FreeSWITCH's order).
package eslemu
