package eslemu

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// Dialplans after an originate's answer (recording q): the inline dialplan
// of `originate <dial> '<apps>' inline`, the emulator's XML dialplan that
// transfer reaches, and the applications they run. What the recording does
// not show is stated where it is assumed.
//
// Inline dialplan: "app:args,app:args", or with "^^<sep>" in front the
// apps separated by <sep> ("^^;play_and_get_digits:…;transfer:…"). Args are
// expanded when the app runs, not when originate parses them: ${var} is the
// channel variable (empty when unset), ${cond(A == B ? X : Y)} (also !=)
// compares the two sides as strings. Applications: play_and_get_digits,
// transfer, answer, conference, park, hangup [cause]; any other name hangs
// the call up with DESTINATION_OUT_OF_ORDER (assumed, as for &nosuchapp()).
// When the chain runs out the call is hung up NORMAL_CLEARING (assumed; it
// is what FreeSWITCH does when a dialplan ends).
//
// XML dialplan of the emulator (context "default", the only one): the
// extension "conf-<room>" answers and joins "conference <room>@default",
// as the lab's "conf-dt" joins room "dt" — so a driver names its own room
// with "transfer:conf-<room> XML default". Any other extension in XML hangs
// up with NO_ROUTE_DESTINATION (assumed; FreeSWITCH's answer to an
// extension no dialplan matches).

type dpApp struct{ name, args string }

// parseInline splits an inline dialplan into its applications.
func parseInline(s string) []dpApp {
	sep := ","
	if strings.HasPrefix(s, "^^") && len(s) > 2 {
		sep, s = s[2:3], s[3:]
	}
	var out []dpApp
	for _, part := range strings.Split(s, sep) {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, args, _ := strings.Cut(part, ":")
		out = append(out, dpApp{strings.TrimSpace(name), args})
	}
	return out
}

var varRE = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)\}`)

// expand is switch_channel_expand_variables for the forms used: ${var}
// first, then ${cond(...)}.
func (ch *channel) expand(s string) string {
	s = varRE.ReplaceAllStringFunc(s, func(m string) string {
		v, _ := ch.vars.get(m[2 : len(m)-1])
		return v
	})
	for {
		i := strings.Index(s, "${cond(")
		if i < 0 {
			return s
		}
		j := strings.Index(s[i:], ")}")
		if j < 0 {
			return s
		}
		s = s[:i] + evalCond(s[i+len("${cond("):i+j]) + s[i+j+2:]
	}
}

// evalCond is the cond API on "A == B ? X : Y" (or !=), as strings.
func evalCond(expr string) string {
	test, branches, ok := strings.Cut(expr, "?")
	if !ok {
		return ""
	}
	yes, no, _ := strings.Cut(branches, ":")
	op := "=="
	if strings.Contains(test, "!=") {
		op = "!="
	}
	a, b, _ := strings.Cut(test, op)
	eq := strings.TrimSpace(a) == strings.TrimSpace(b)
	if eq == (op == "==") {
		return strings.TrimSpace(yes)
	}
	return strings.TrimSpace(no)
}

// startInlineLocked is the answered leg entering its inline dialplan
// (recording q): the job's +OK, CS_ROUTING with the dialplan as
// destination, the caller ids flip (CALL_UPDATE), CS_EXECUTE, the apps.
func (s *Server) startInlineLocked(ch *channel) {
	s.finishOriginateLocked(ch, "+OK "+ch.uuid+"\n")
	number := ch.dest
	ch.dest = ch.inlineText
	ch.stateNum = 2
	s.setStateLocked(ch, "CS_ROUTING", 2)
	ch.dest = number
	ch.flipped, ch.hitDial = true, true
	ch.vars.set("endpoint_disposition", "ANSWER")
	ch.vars.set("call_uuid", ch.uuid)
	ch.vars.set("channel_cid_flipped", "yes")
	s.fireChanLocked(ch, "CALL_UPDATE")
	ch.vars.set("call_uuid", ch.uuid)
	s.setStateLocked(ch, "CS_EXECUTE", 4)
	s.runAppsLocked(ch, ch.inline)
}

// runAppsLocked runs apps[0] and, when it completes, the rest.
func (s *Server) runAppsLocked(ch *channel, apps []dpApp) {
	if ch.cause != "" {
		return
	}
	if len(apps) == 0 {
		s.hangupLocked(ch, "NORMAL_CLEARING", hangKill)
		return
	}
	a, rest := apps[0], apps[1:]
	ch.app, ch.appData, ch.appUUID = a.name, ch.expand(a.args), emuserver.UUID()
	ch.executing = true
	// The variables' order as recorded: current_application(_data) set
	// for the EXECUTE event and again, data first, right after it; an
	// app without data has no current_application_data at all.
	ch.vars.set("current_application", ch.app)
	if ch.appData != "" {
		ch.vars.set("current_application_data", ch.appData)
	} else {
		ch.vars.del("current_application_data")
	}
	s.fireLocked(s.chanEventLocked(ch, "CHANNEL_EXECUTE", func(e *event) {
		e.add("Application", ch.app)
		if ch.appData != "" {
			e.add("Application-Data", ch.appData)
		}
		e.add("Application-UUID", ch.appUUID)
	}))
	if ch.appData != "" {
		ch.vars.set("current_application_data", ch.appData)
		ch.vars.set("current_application", ch.app)
	}
	done := func() {
		s.closeAppLocked(ch)
		s.runAppsLocked(ch, rest)
	}
	switch a.name {
	case "answer":
		done() // already answered
	case "park":
	case "conference":
		ch.readCodec = "L16"
		s.codecLocked(ch, false)
		room, profile, _ := strings.Cut(ch.appData, "@")
		if profile == "" {
			profile = "default"
		}
		s.joinLocked(ch, room, profile)
	case "hangup":
		cause := strings.ToUpper(strings.TrimSpace(ch.appData))
		if !knownCause(cause) {
			cause = "NORMAL_CLEARING"
		}
		s.hangupLocked(ch, cause, hangKill)
	case "transfer":
		s.transferLocked(ch)
	case "play_and_get_digits":
		s.playAndGetDigitsLocked(ch, done)
	default:
		s.hangupLocked(ch, "DESTINATION_OUT_OF_ORDER", hangKill)
	}
}

// transferLocked is the transfer app (and uuid_transfer): "<ext> [XML|inline]
// [context]". Recorded order: EXECUTE_COMPLETE (state number 2, the new
// destination already), CS_ROUTING, CS_EXECUTE, then the new dialplan.
func (s *Server) transferLocked(ch *channel) {
	f := strings.Fields(ch.appData)
	if len(f) == 0 {
		s.closeAppLocked(ch)
		return
	}
	ext, dialplan := f[0], "XML"
	if len(f) > 1 {
		dialplan = f[1]
	}
	number := ch.dest
	ch.dest = ext
	ch.stateNum = 2
	s.closeAppLocked(ch)
	s.setStateLocked(ch, "CS_ROUTING", 2)
	var apps []dpApp
	if strings.EqualFold(dialplan, "inline") {
		apps = parseInline(ext)
		ch.dest = number // the inline dialplan keeps the number (recording q)
	} else if room, ok := strings.CutPrefix(ext, "conf-"); ok && room != "" {
		apps = []dpApp{{"answer", ""}, {"conference", room + "@default"}}
	} else {
		s.setStateLocked(ch, "CS_EXECUTE", 4)
		s.hangupLocked(ch, "NO_ROUTE_DESTINATION", hangKill)
		return
	}
	ch.vars.set("call_uuid", ch.uuid)
	s.setStateLocked(ch, "CS_EXECUTE", 4)
	s.runAppsLocked(ch, apps)
}

// streamLength is how long the emulator plays a file: a tone_stream
// %(on,off,…) one cycle, less the 15 ms the recording shows short of it
// (585 ms for %(400,200,523)); silence_stream://N N ms plus the recorded
// 12 ms; anything else 1 s (assumed).
func streamLength(file string) time.Duration {
	if rest, ok := strings.CutPrefix(file, "tone_stream://%("); ok {
		f := strings.Split(strings.TrimSuffix(rest, ")"), ",")
		if len(f) >= 2 {
			on, err1 := strconv.Atoi(f[0])
			off, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && on+off > 15 {
				return time.Duration(on+off-15) * time.Millisecond
			}
		}
	}
	if rest, ok := strings.CutPrefix(file, "silence_stream://"); ok {
		if n, err := strconv.Atoi(strings.Split(rest, ",")[0]); err == nil {
			return time.Duration(n+12) * time.Millisecond
		}
	}
	return time.Second
}

// playbackLocked plays a file: PLAYBACK_START, then after its length
// PLAYBACK_STOP "done"; cut short by a key it stops with "break" (assumed:
// the recording's key came after the prompt). then runs after the stop.
func (s *Server) playbackLocked(ch *channel, file string, then func()) (stop func()) {
	ev := func(name string, status string) {
		s.fireLocked(s.chanEventLocked(ch, name, func(e *event) {
			if kind, _, _ := strings.Cut(file, "://"); kind == "tone_stream" {
				// silence_stream has no file type (recording q)
				e.add("Playback-File-Type", kind)
			}
			e.add("Playback-File-Path", file)
			if status != "" {
				e.add("Playback-Status", status)
			}
		}))
	}
	ev("PLAYBACK_START", "")
	finished := false
	s.afterLocked(ch, streamLength(file), func() {
		if finished {
			return
		}
		finished = true
		ev("PLAYBACK_STOP", "done")
		then()
	})
	return func() {
		if !finished {
			finished = true
			ev("PLAYBACK_STOP", "break")
		}
	}
}

// playAndGetDigitsLocked is play_and_get_digits "min max tries timeout
// terminators file invalid_file var regexp" (recording q): per try the
// prompt, then up to timeout ms for the digits; a try that times out plays
// the invalid file. Success sets var and read_result=success; failure only
// read_result=failure. Keys during the prompt stop it and count (assumed).
func (s *Server) playAndGetDigitsLocked(ch *channel, done func()) {
	f := strings.Fields(ch.appData)
	if len(f) < 9 {
		ch.vars.set("read_result", "failure")
		done()
		return
	}
	maxDigits, _ := strconv.Atoi(f[1])
	tries, _ := strconv.Atoi(f[2])
	timeoutMs, _ := strconv.Atoi(f[3])
	terms, file, invalid, varName := f[4], f[5], f[6], f[7]
	re, err := regexp.Compile("^(?:" + f[8] + ")$")
	if err != nil {
		re = regexp.MustCompile(".*")
	}
	maxDigits = max(maxDigits, 1)
	tries = max(tries, 1)
	var (
		got      string
		try      int
		gen      int // bumps to cancel the pending timeout
		stopPlay func()
		over     bool
	)
	finish := func(ok bool) {
		over = true
		ch.onDigit = nil
		if ok {
			ch.vars.set("read_result", "success")
			ch.vars.set(varName, got)
		} else {
			ch.vars.set("read_result", "failure")
		}
		done()
	}
	var startTry func()
	timedOut := func() {
		// invalid or no input: read_result failure already while the
		// invalid file plays (recording q), then the next try.
		got = ""
		ch.vars.set("read_result", "failure")
		stopPlay = s.playbackLocked(ch, invalid, func() {
			if try >= tries {
				finish(false)
				return
			}
			startTry()
		})
	}
	wait := func() {
		gen++
		g := gen
		s.afterLocked(ch, time.Duration(timeoutMs)*time.Millisecond, func() {
			if !over && g == gen {
				timedOut()
			}
		})
	}
	startTry = func() {
		try++
		ch.vars.del("read_result") // cleared per try (recording q)
		stopPlay = s.playbackLocked(ch, file, wait)
	}
	ch.onDigit = func(d string) {
		if over {
			return
		}
		if stopPlay != nil {
			stopPlay()
		}
		gen++ // no timeout for this try any more
		if strings.Contains(terms, d) {
			if re.MatchString(got) && got != "" {
				finish(true)
			} else {
				timedOut()
			}
			return
		}
		got += d
		if len(got) >= maxDigits {
			if re.MatchString(got) {
				finish(true)
			} else {
				timedOut()
			}
			return
		}
		wait()
	}
	startTry()
}
