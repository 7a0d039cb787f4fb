// Package freeswitch is the pbx.Driver for FreeSWITCH over the inbound event socket: framing, commands, event mapping.
// Never the Asterisk driver, an emulator or the controller; supervision shared with Asterisk is in pbx/link.
//
// A conference is a mod_conference room named by our conference id, made by
// the first leg that joins it; a leg is "bgapi originate" with our leg id as
// origination_uuid into &conference(<id>@<profile>). Events come as JSON on
// one socket, filtered to our calls (a channel variable we set), our
// conference profile and background jobs:
//
//	CHANNEL_PROGRESS / CHANNEL_PROGRESS_MEDIA  → EventRinging (183 early media is never "answered")
//	CHANNEL_ANSWER + conference add-member      → EventConnected
//	CHANNEL_HANGUP_COMPLETE (Hangup-Cause)      → EventEnded, cause name → number (causes.go)
//	BACKGROUND_JOB "-ERR <CAUSE>"                → EventEnded (no answer, unknown gateway, …)
//	conference start-talking / stop-talking     → EventTalkingStarted / Finished
//
// Mute, unmute and hangup use "conference <room> mute|unmute <member-id>"
// and "uuid_kill"; the end of a conference is "conference <room> hup all"
// plus uuid_kill for legs still ringing. Snapshot reads "show channels as
// json" and "conference json_list". What these commands answer and in what
// order events come is taken from traffic recorded from FreeSWITCH 1.10.12
// (testdata/freeswitch, see its README) and the "mod_event_socket" page of
// FreeSWITCH Explained (developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_event_socket_1048924).
//
// # Why the connection is not github.com/fiorix/go-eventsocket's
//
// The project's ESL library is go-eventsocket, and its Event type is what
// this driver decodes events into. Its Connection cannot be used safely:
// its reader goroutine calls log.Fatal on a Content-Type it does not know
// (FreeSWITCH's text/rude-rejection when the ACL refuses us, which would end
// convoice), panics on short replies ("0" from "conference count", an empty
// Reply-Text), routes "-ERR" replies to the error channel that ReadEvent
// also reads, blocks on an unbuffered reply channel and on a 16-slot event
// channel, and its Send has no lock and no deadline. None of this can be
// fixed from outside because Dial starts that reader. So conn.go has its
// own frame reader and writer on the net.Conn: one reader that never waits
// (events go to an unbounded, counted queue served by one dispatcher
// goroutine), replies matched to commands in order, commands serialised
// under a lock with write deadlines and reply timeouts, and every surprise
// from the server (rejection, unknown Content-Type, truncated or malformed
// frame, silence) turned into an error, a not-ready Status, a reconnect
// with backoff and a resync.
package freeswitch
