package eslemu

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// execAPI runs one API command (the part after "api " or "bgapi ") and
// returns the api/response body. pending is true when the result will be
// reported later by the channel itself (bgapi originate: BACKGROUND_JOB on
// answer or failure).
func (s *Server) execAPI(cmd, arg, job string) (result string, pending bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "-ERR shutting down\n", false
	}
	api := s.newEventLocked("API", "", callingOf["API"])
	api.add("API-Command", cmd)
	if arg != "" {
		api.add("API-Command-Argument", arg)
	}
	s.fireLocked(api)
	if cmd == "originate" {
		s.mu.Unlock()
		return s.originate(arg, job)
	}
	defer s.mu.Unlock()
	switch cmd {
	case "status":
		return s.statusText(), false
	case "version":
		return "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n", false
	case "show":
		return s.showLocked(arg), false
	case "sofia":
		return s.sofiaLocked(arg), false
	case "conference":
		return s.confAPILocked(arg), false
	case "uuid_kill":
		f := strings.Fields(arg)
		if len(f) == 0 {
			return "-USAGE: <uuid> [cause]\n", false
		}
		ch := s.chans[f[0]]
		if ch == nil {
			return "-ERR No such channel!\n", false
		}
		cause := "NORMAL_CLEARING"
		if len(f) > 1 && knownCause(f[1]) {
			cause = strings.ToUpper(f[1])
		}
		s.hangupLocked(ch, cause, hangKill)
		return "+OK\n", false
	case "uuid_transfer":
		// uuid_transfer <uuid> [-bleg|-both] <dest> [dialplan] [context]:
		// not recorded; emulated as the running app ending (a conference
		// member leaves) and the transfer app running with those args.
		f := strings.Fields(arg)
		if len(f) > 1 && strings.HasPrefix(f[1], "-") {
			f = append(f[:1], f[2:]...)
		}
		if len(f) < 2 {
			return "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n", false
		}
		ch := s.chans[f[0]]
		if ch == nil {
			return "-ERR No such channel!\n", false
		}
		ch.onDigit = nil
		if ch.member != nil {
			s.leaveLocked(ch.member)
		}
		s.closeAppLocked(ch)
		ch.appStarted = true
		s.runAppsLocked(ch, []dpApp{{"transfer", strings.Join(f[1:], " ")}})
		return "+OK\n", false
	case "uuid_exists":
		_, ok := s.chans[strings.TrimSpace(arg)]
		return strconv.FormatBool(ok), false
	case "uuid_getvar":
		f := strings.Fields(arg)
		if len(f) < 2 {
			return "-USAGE: <uuid> <var>\n", false
		}
		ch := s.chans[f[0]]
		if ch == nil {
			return "-ERR No such channel!\n", false
		}
		if v, ok := ch.vars.get(f[1]); ok {
			return v, false
		}
		return "_undef_", false
	case "uuid_dump":
		f := strings.Fields(arg)
		if len(f) == 0 {
			return "-USAGE: <uuid> [format]\n", false
		}
		ch := s.chans[f[0]]
		if ch == nil {
			return "-ERR No such channel!\n", false
		}
		e := s.chanEventLocked(ch, "CHANNEL_DATA", nil)
		if len(f) > 1 && f[1] == "json" {
			return e.json(), false
		}
		var b strings.Builder
		for _, h := range e.headers {
			fmt.Fprintf(&b, "%s: %s\n", h.k, h.v)
		}
		return b.String(), false
	case "fsctl":
		if strings.TrimSpace(arg) == "shutdown" {
			go func() {
				time.Sleep(50 * time.Millisecond)
				s.shutdown(true)
			}()
			return "+OK\n", false
		}
		return "-ERR Unsupported command in the emulator\n", false
	}
	return "-ERR " + cmd + " Command not found!\n", false
}

func (s *Server) statusText() string {
	up := time.Since(s.started)
	d := int(up / (24 * time.Hour))
	h := int(up/time.Hour) % 24
	m := int(up/time.Minute) % 60
	sec := int(up/time.Second) % 60
	ms := int(up/time.Millisecond) % 1000
	us := int(up/time.Microsecond) % 1000
	return fmt.Sprintf("UP 0 years, %d days, %d hours, %d minutes, %d seconds, %d milliseconds, %d microseconds\n"+
		"FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"+
		"%d session(s) since startup\n"+
		"%d session(s) - peak %d, last 5min %d \n"+
		"0 session(s) per Sec out of max 30, peak %d, last 5min %d \n"+
		"100 session(s) max\nmin idle cpu 0.00/99.00\nCurrent Stack Size/Max 240K/8192K\n",
		d, h, m, sec, ms, us, s.sessions, len(s.chans), s.peak, s.peak, s.peak, s.peak)
}

func (s *Server) sofiaLocked(arg string) string {
	f := strings.Fields(arg)
	line := strings.Repeat("=", 97) + "\n"
	if len(f) >= 1 && f[0] == "status" && len(f) == 1 {
		var b strings.Builder
		fmt.Fprintf(&b, "%25s\t%7s\t%42s\t%s\n", "Name", "Type", "Data", "State")
		b.WriteString(line)
		for _, p := range s.cfg.Profiles {
			fmt.Fprintf(&b, "%25s\t%7s\t%42s\t%s\n", p, "profile", "sip:mod_sofia@127.0.0.1:5080", "RUNNING (0)")
			if p == s.cfg.GatewayProfile {
				for _, g := range s.cfg.Gateways {
					fmt.Fprintf(&b, "%25s\t%7s\t%42s\t%s\n", p+"::"+g, "gateway", "sip:FreeSWITCH@127.0.0.1:50710", "NOREG")
				}
			}
		}
		b.WriteString(line)
		fmt.Fprintf(&b, "%d profile%s 0 aliases\n", len(s.cfg.Profiles), plural(len(s.cfg.Profiles)))
		return b.String()
	}
	if len(f) == 3 && f[0] == "status" && f[1] == "gateway" {
		if !s.hasGateway(f[2]) {
			return "Invalid Gateway!\n"
		}
		g := f[2]
		return line + "Name    \t" + g + "\nProfile \t" + s.cfg.GatewayProfile + "\nScheme  \tDigest\nRealm   \t127.0.0.1:50710\n" +
			"Username\tFreeSWITCH\nPassword\tno\nFrom    \t<sip:FreeSWITCH@127.0.0.1:50710>\n" +
			"Contact \t<sip:gw+" + g + "@127.0.0.1:5080;transport=udp;gw=" + g + ">\nExten   \tFreeSWITCH\n" +
			"To      \tsip:FreeSWITCH@127.0.0.1:50710\nProxy   \tsip:127.0.0.1:50710\nContext \tdefault\n" +
			"Expires \t3600\nFreq    \t3600\nPing    \t0\nPingFreq\t0\nPingTime\t0.00\nPingState\t0/0/0\n" +
			"State   \tNOREG\nStatus  \tUP\nUptime  \t" + strconv.Itoa(int(time.Since(s.started).Seconds())) + "s\n" +
			"CallsIN \t0\nCallsOUT\t" + strconv.Itoa(s.gwCalls) + "\nFailedCallsIN\t0\nFailedCallsOUT\t" + strconv.Itoa(s.gwFailed) + "\n" + line
	}
	return "-ERR Usage: sofia status [profile|gateway] <name>\n"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (s *Server) hasGateway(g string) bool {
	for _, x := range s.cfg.Gateways {
		if x == g {
			return true
		}
	}
	return false
}

func (s *Server) hasProfile(p string) bool {
	for _, x := range s.cfg.Profiles {
		if x == p {
			return true
		}
	}
	return false
}

// profileOf is the sofia profile a dial string goes out on.
func (s *Server) profileOf(dial string) string {
	rest := strings.TrimPrefix(dial, "sofia/")
	p, _, _ := strings.Cut(rest, "/")
	if p == "gateway" {
		return s.cfg.GatewayProfile
	}
	return p
}

// channelRowKeys are the columns of "show channels" (recording l).
var channelRowKeys = strings.Split("uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,application,application_data,dialplan,context,read_codec,read_rate,read_bit_rate,write_codec,write_rate,write_bit_rate,secure,hostname,presence_id,presence_data,accountcode,callstate,callee_name,callee_num,callee_direction,call_uuid,sent_callee_name,sent_callee_num,initial_cid_name,initial_cid_num,initial_ip_addr,initial_dest,initial_dialplan,initial_context", ",")

// callRowKeys are the columns of "show calls" (recording l): a conference
// leg has no b-leg, so the b_* columns are empty.
var callRowKeys = strings.Split("uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,presence_id,presence_data,accountcode,callstate,callee_name,callee_num,callee_direction,call_uuid,hostname,sent_callee_name,sent_callee_num,b_uuid,b_direction,b_created,b_created_epoch,b_name,b_state,b_cid_name,b_cid_num,b_ip_addr,b_dest,b_presence_id,b_presence_data,b_accountcode,b_callstate,b_callee_name,b_callee_num,b_callee_direction,b_sent_callee_name,b_sent_callee_num,call_created_epoch", ",")

func (s *Server) channelRow(ch *channel) map[string]string {
	r := map[string]string{}
	for _, k := range callRowKeys {
		r[k] = ""
	}
	for _, k := range channelRowKeys {
		r[k] = ""
	}
	name, num := ch.listCallerID()
	r["uuid"] = ch.uuid
	r["direction"] = "outbound"
	r["created"] = ch.created.Local().Format("2006-01-02 15:04:05")
	r["created_epoch"] = strconv.FormatInt(ch.created.Unix(), 10)
	r["name"] = ch.name
	r["state"] = ch.state
	r["cid_name"] = name
	r["cid_num"] = num
	r["dest"] = ch.callee
	if ch.executing {
		r["application"] = ch.app
		r["application_data"] = ch.appData
	}
	r["context"] = "default"
	if ch.media {
		r["read_codec"], r["read_rate"], r["read_bit_rate"] = ch.readCodec, "8000", "64000"
		if ch.readCodec == "L16" {
			r["read_bit_rate"] = "128000"
		}
		r["write_codec"], r["write_rate"], r["write_bit_rate"] = "PCMU", "8000", "64000"
	}
	r["hostname"] = s.cfg.Switchname
	r["callstate"] = ch.callState
	if ch.flipped {
		r["callee_name"] = ch.cidName
		r["callee_num"] = ch.cidNum
		r["callee_direction"] = "RECV"
	} else {
		r["callee_name"] = "Outbound Call"
		r["callee_num"] = ch.callee
	}
	r["call_uuid"] = ch.uuid
	r["initial_cid_name"] = ch.cidName
	r["initial_cid_num"] = ch.cidNum
	r["initial_dest"] = ch.callee
	r["initial_context"] = "default"
	return r
}

// showLocked answers "show channels|calls [as json|count]".
func (s *Server) showLocked(arg string) string {
	f := strings.Fields(arg)
	if len(f) == 0 || (f[0] != "channels" && f[0] != "calls") {
		return "-USAGE: show <channels|calls|...> [as json|count]\n"
	}
	keys := channelRowKeys
	if f[0] == "calls" {
		keys = callRowKeys
	}
	var rows []map[string]string
	for _, u := range s.chanOrder {
		rows = append(rows, s.channelRow(s.chans[u]))
	}
	rest := strings.Join(f[1:], " ")
	switch rest {
	case "count":
		return fmt.Sprintf("\n%d total.\n", len(rows))
	case "as json":
		if len(rows) == 0 {
			return "{\"row_count\": 0}\n"
		}
		var b strings.Builder
		fmt.Fprintf(&b, "{\"row_count\":%d,\"rows\":[", len(rows))
		for i, r := range rows {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('{')
			for j, k := range keys {
				if j > 0 {
					b.WriteByte(',')
				}
				b.WriteString(jsonString(k))
				b.WriteByte(':')
				b.WriteString(jsonString(r[k]))
			}
			b.WriteByte('}')
		}
		b.WriteString("]}")
		return b.String()
	case "":
		if len(rows) == 0 {
			return "\n0 total.\n"
		}
		var b strings.Builder
		b.WriteString(strings.Join(keys, ","))
		b.WriteByte('\n')
		for _, r := range rows {
			vals := make([]string, len(keys))
			for i, k := range keys {
				vals[i] = r[k]
			}
			b.WriteString(strings.Join(vals, ","))
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "\n%d total.\n", len(rows))
		return b.String()
	}
	return "-USAGE: show <channels|calls|...> [as json|count]\n"
}

// originate parses "[{vars}]<dial string> <&app(args)|exten> [...]" the way
// the recordings show FreeSWITCH reacting to good and bad dial strings.
func (s *Server) originate(arg, job string) (string, bool) {
	if d := s.OriginateDelay(); d > 0 {
		s.mu.Lock()
		gen := s.gen
		s.mu.Unlock()
		if !emuserver.Sleep(d, s.genDone(gen)) {
			// The process ended meanwhile: the job is lost with it.
			return "", true
		}
	}
	toks := splitQuoted(arg)
	if len(toks) < 2 {
		return "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n", false
	}
	dial := toks[0]
	var vars []hdr
	if strings.HasPrefix(dial, "{") {
		end := strings.Index(dial, "}")
		if end < 0 {
			return "-ERR INVALID_URL\n", false
		}
		vars = parseVars(dial[1:end])
		dial = dial[end+1:]
	}
	varOf := func(k string) string {
		for _, h := range vars {
			if h.k == k {
				return h.v
			}
		}
		return ""
	}
	uuid := varOf("origination_uuid")
	if uuid == "" {
		uuid = emuserver.UUID()
	}
	app, appData := "park", ""
	var inline []dpApp
	inlineText := ""
	if a := toks[1]; strings.HasPrefix(a, "&") {
		name, rest, _ := strings.Cut(a[1:], "(")
		app, appData = name, strings.TrimSuffix(rest, ")")
	} else {
		// An extension: "<apps>" in the inline dialplan, or an extension
		// of the emulator's XML dialplan (dialplan.go).
		ext := strings.TrimSuffix(strings.TrimPrefix(a, "'"), "'")
		dialplan := "XML"
		if len(toks) > 2 {
			dialplan = toks[2]
		}
		switch {
		case strings.EqualFold(dialplan, "inline"):
			inline, inlineText = parseInline(ext), ext
		case strings.HasPrefix(ext, "conf-") && len(ext) > len("conf-"):
			inline, inlineText = []dpApp{{"answer", ""}, {"conference", ext[len("conf-"):] + "@default"}}, ext
		}
		if inline != nil {
			app = "inline"
		}
	}
	timeout := 60 * time.Second
	if t, err := strconv.Atoi(varOf("originate_timeout")); err == nil && t > 0 {
		timeout = time.Duration(t) * time.Second
	}

	s.mu.Lock()
	fail := func(cause string, phantom bool) (string, bool) {
		if phantom {
			s.phantomDestroyLocked(uuid)
		}
		s.mu.Unlock()
		return "-ERR " + cause + "\n", false
	}
	if !strings.HasPrefix(dial, "sofia/") {
		return fail("CHAN_NOT_IMPLEMENTED", false)
	}
	ch := &channel{uuid: uuid, dial: dial, app: app, appData: appData, appUUID: emuserver.UUID(),
		inline: inline, inlineText: inlineText,
		timeout: timeout, vars: newVarList(), speaking: s.cfg.AutoTalk,
		cidName: varOf("origination_caller_id_name"), cidNum: varOf("origination_caller_id_number")}
	if ch.cidNum == "" {
		ch.cidNum = "0000000000"
	}
	rest := strings.TrimPrefix(dial, "sofia/")
	profile, target, _ := strings.Cut(rest, "/")
	if profile == "gateway" {
		gw, dest, _ := strings.Cut(target, "/")
		if !s.hasGateway(gw) {
			return fail("INVALID_GATEWAY", true)
		}
		if dest == "" {
			return fail("INVALID_NUMBER_FORMAT", true)
		}
		ch.gateway = gw
		ch.name = "sofia/" + s.cfg.GatewayProfile + "/" + dest
		ch.dest, ch.callee = dest, dest
		s.gwCalls++
	} else {
		if !s.hasProfile(profile) {
			return fail("INVALID_PROFILE", true)
		}
		user, host, _ := strings.Cut(target, "@")
		if user == "" {
			return fail("USER_NOT_REGISTERED", true)
		}
		ch.dest = urlEncode(user)
		ch.callee = user
		ch.name = "sofia/" + profile + "/" + ch.dest
		if host != "" {
			ch.name += "@" + host
		}
	}
	if s.chans[uuid] != nil {
		// Not recorded: FreeSWITCH refuses a session with a uuid in use
		// ("Duplicate UUID"); sofia reports it as out of order.
		s.mu.Unlock()
		return "-ERR DESTINATION_OUT_OF_ORDER\n", false
	}
	ch.phone = emuphone.ForEndpoint(dial, s.Timing(s.cfg.Timing))
	o := &origination{job: job, arg: arg}
	if job == "" {
		o.result = make(chan string, 1)
	}
	ch.orig = o
	s.startLocked(ch, vars)
	if len(s.chans) > s.peak {
		s.peak = len(s.chans)
	}
	gen := s.gen
	s.mu.Unlock()
	if job != "" {
		return "", true
	}
	// A blocking "api originate" holds the socket until the call is
	// answered or fails (recordings b, c, e: the reply comes first, then
	// the call's events).
	select {
	case r := <-o.result:
		return r, false
	case <-s.genDone(gen):
		return "-ERR SYSTEM_SHUTDOWN\n", false
	}
}

// varOfList is the value of variable k in an originate's {vars}.
func varOfList(vars []hdr, k string) string {
	for _, h := range vars {
		if h.k == k {
			return h.v
		}
	}
	return ""
}

// astTrue is switch_true: yes, on, true, t, enabled, active, allow or a
// non-zero number.
func astTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "on", "true", "t", "enabled", "active", "allow":
		return true
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	return err == nil && n != 0
}

// parseVars splits "a=b,c='d, e'" into ordered variables.
func parseVars(s string) []hdr {
	var out []hdr
	var cur strings.Builder
	quoted := false
	flush := func() {
		kv := cur.String()
		cur.Reset()
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1]
		}
		out = append(out, hdr{strings.TrimSpace(k), v})
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '\'':
			quoted = !quoted
			cur.WriteByte(c)
		case c == ',' && !quoted:
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}

// splitQuoted splits on spaces outside single quotes and braces.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, depth := false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			quoted = !quoted
		case c == '{':
			depth++
		case c == '}' && depth > 0:
			depth--
		case c == ' ' && !quoted && depth == 0:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			continue
		}
		cur.WriteByte(c)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
