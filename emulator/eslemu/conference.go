package eslemu

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// toneEnergy is the energy the lab phones' 440 Hz tone measured at
// (Current-Energy ≈ 2522 in recording a): a member whose energy threshold is
// above it stops "talking" (recording h, "energy 9 3000").
const toneEnergy = 2522

// conference is one mod_conference room.
type conference struct {
	name    string
	profile string
	uuid    string
	members []*member // join order
	locked  bool
	created time.Time
	floor   *member
}

type member struct {
	id      int
	ch      *channel
	conf    *conference
	muted   bool
	deaf    bool
	energy  int
	talking bool
	joined  time.Time
}

// confEventLocked builds a conference::maintenance event; with a member it
// carries the member's channel data and flags (recorded layout).
func (s *Server) confEventLocked(c *conference, action string, m *member, pre, post []hdr) *event {
	at, ok := conferenceCalling[action]
	if !ok {
		at = calling{"conference_api.c", "conference_api_dispatch", "0"}
	}
	e := s.newEventLocked("CUSTOM", "conference::maintenance", at)
	e.add("Conference-Name", c.name).
		add("Conference-Domain", s.cfg.Domain).
		add("Conference-Size", strconv.Itoa(len(c.members))).
		add("Conference-Ghosts", "0").
		add("Conference-Profile-Name", c.profile).
		add("Conference-Unique-ID", c.uuid)
	for _, h := range pre {
		e.add(h.k, h.v)
	}
	if m == nil {
		e.add("Action", action)
		for _, h := range post {
			e.add(h.k, h.v)
		}
		return e
	}
	e.uuid = m.ch.uuid
	e.add("Floor", strconv.FormatBool(c.floor == m))
	m.ch.addBasic(e, true)
	m.ch.addCaller(e)
	cur := "0"
	if m.ch.speaking {
		cur = strconv.Itoa(toneEnergy)
	}
	e.add("Video", "false").
		add("Hear", strconv.FormatBool(!m.deaf)).
		add("See", "true").
		add("Speak", strconv.FormatBool(!m.muted)).
		add("Talking", strconv.FormatBool(m.talking)).
		add("Mute-Detect", "false").
		add("Hold", "false").
		add("Member-ID", strconv.Itoa(m.id)).
		add("Member-Type", "member").
		add("Member-Ghost", "false").
		add("Energy-Level", strconv.Itoa(m.energy)).
		add("Current-Energy", cur)
	for _, h := range post {
		e.add(h.k, h.v)
	}
	e.add("Action", action)
	return e
}

func (s *Server) fireConfLocked(c *conference, action string, m *member) {
	s.fireLocked(s.confEventLocked(c, action, m, nil, nil))
}

// joinLocked puts an answered channel into a room, creating the room on
// first use (conference-create, then add-member).
func (s *Server) joinLocked(ch *channel, room, profile string) {
	c := s.confs[room]
	if c == nil {
		c = &conference{name: room, profile: profile, uuid: emuserver.UUID(), created: time.Now()}
		s.confs[room] = c
		s.confOrder = append(s.confOrder, room)
		s.fireConfLocked(c, "conference-create", nil)
	}
	m := &member{id: s.nextMember, ch: ch, conf: c, energy: 100, joined: time.Now()}
	s.nextMember++
	c.members = append(c.members, m)
	ch.member, ch.conf = m, room
	v := ch.vars
	v.set("current_application", "conference")
	v.set("conference_name", room)
	v.set("conference_member_id", strconv.Itoa(m.id))
	v.set("conference_uuid", c.uuid)
	s.fireConfLocked(c, "add-member", m)
	s.talkLocked(m, false)
}

// leaveLocked removes a member (del-member) and destroys an empty room.
func (s *Server) leaveLocked(m *member) {
	c := m.conf
	for i, x := range c.members {
		if x == m {
			c.members = append(c.members[:i], c.members[i+1:]...)
			break
		}
	}
	s.fireConfLocked(c, "del-member", m)
	m.ch.member = nil
	if c.floor == m {
		c.floor = nil
	}
	if len(c.members) == 0 {
		s.destroyConfLocked(c)
	}
}

func (s *Server) destroyConfLocked(c *conference) {
	if s.confs[c.name] != c {
		return
	}
	delete(s.confs, c.name)
	for i, n := range s.confOrder {
		if n == c.name {
			s.confOrder = append(s.confOrder[:i], s.confOrder[i+1:]...)
			break
		}
	}
	s.fireConfLocked(c, "conference-destroy", nil)
}

// talkLocked re-evaluates voice activity: a member talks when its phone
// sends voice, it is not muted and its energy threshold is below the voice
// level. Muting clears the flag without a stop-talking event (recordings a,
// h, o); unmuting a speaking phone gives start-talking again.
func (s *Server) talkLocked(m *member, silent bool) {
	should := m.ch.speaking && !m.muted && m.energy <= toneEnergy
	switch {
	case should && !m.talking:
		m.talking = true
		if m.conf.floor == nil {
			m.conf.floor = m
		}
		s.fireConfLocked(m.conf, "start-talking", m)
	case !should && m.talking:
		m.talking = false
		if !silent {
			s.fireConfLocked(m.conf, "stop-talking", m)
		}
	}
}

// confAPILocked runs "conference ..." and returns the api/response body.
func (s *Server) confAPILocked(arg string) string {
	f := strings.Fields(arg)
	if len(f) == 0 {
		return "-USAGE: conference <conference_name> <cmd> [args]\n"
	}
	switch f[0] {
	case "list":
		if len(s.confOrder) == 0 {
			return "+OK No active conferences.\n"
		}
		var b strings.Builder
		for _, n := range s.sortedConfs() {
			c := s.confs[n]
			plural := "s"
			if len(c.members) == 1 {
				plural = ""
			}
			fmt.Fprintf(&b, "+OK Conference %s (%d member%s rate: 8000 flags: %s)\n", c.name, len(c.members), plural, confFlags(c))
			b.WriteString(s.memberList(c, ";"))
		}
		return b.String()
	case "json_list":
		arr := jarr()
		for _, n := range s.sortedConfs() {
			arr.add(s.confJSON(s.confs[n]))
		}
		return arr.String()
	case "xml_list":
		var b strings.Builder
		b.WriteString("<?xml version=\"1.0\"?>\n<conferences>\n")
		for _, n := range s.sortedConfs() {
			b.WriteString(s.confXML(s.confs[n]))
		}
		b.WriteString("</conferences>\n")
		return b.String()
	case "count":
		return strconv.Itoa(len(s.confs))
	}
	c := s.confs[f[0]]
	if c == nil {
		return "-ERR Conference " + f[0] + " not found\n"
	}
	if len(f) < 2 {
		return "-ERR Conference command '' not found.\n"
	}
	args := f[2:]
	switch cmd := f[1]; cmd {
	case "list":
		if len(args) > 0 && args[0] == "count" {
			return strconv.Itoa(len(c.members))
		}
		// "list as json" ignores the words after list (recording a).
		return s.memberList(c, ";")
	case "json_list":
		return jarr().add(s.confJSON(c)).String()
	case "xml_list":
		return "<?xml version=\"1.0\"?>\n<conferences>\n" + s.confXML(c) + "</conferences>\n"
	case "count":
		return strconv.Itoa(len(c.members))
	case "get":
		if len(args) == 0 {
			return "get <parameter-name>"
		}
		switch args[0] {
		case "count":
			return strconv.Itoa(len(c.members))
		case "uuid":
			return c.uuid
		case "max_members":
			return "0"
		case "rate":
			return "8000"
		case "profile_name":
			return c.profile
		case "is_locked":
			if c.locked {
				return "locked"
			}
			return "" // api_exec turns this into "-ERR no reply\n"
		}
		return "get <parameter-name>"
	case "get-uuid":
		if len(args) == 0 {
			return "get-uuid <member_id>"
		}
		m := c.byID(args[0])
		if m == nil {
			return "-ERR Non-Existant ID " + args[0] + "\n"
		}
		return m.ch.uuid
	case "lock", "unlock":
		c.locked = cmd == "lock"
		s.fireConfLocked(c, cmd, nil)
		return "+OK " + c.name + " " + cmd + "ed\n"
	case "mute", "unmute", "tmute", "deaf", "undeaf":
		usage := map[string]string{
			"mute":   "mute <[member_id|all]|last|non_moderator> [<quiet>]",
			"unmute": "unmute <[member_id|all]|last|non_moderator> [<quiet>]",
			"tmute":  "tmute <[member_id|all]|last|non_moderator> [<quiet>]",
			"deaf":   "deaf <[member_id|all]|last|non_moderator>",
			"undeaf": "undeaf <[member_id|all]|last|non_moderator>",
		}[cmd]
		ms, errText := c.pick(args, usage)
		if errText != "" {
			return errText
		}
		var b strings.Builder
		for _, m := range ms {
			b.WriteString(s.memberFlagLocked(m, cmd))
		}
		return b.String()
	case "kick", "hup":
		usage := "kick <[member_id|all|last|non_moderator]> [<optional sound file>]"
		if cmd == "hup" {
			usage = "hup <[member_id|all|last|non_moderator]>"
		}
		ms, errText := c.pick(args, usage)
		if errText != "" {
			return errText
		}
		var b strings.Builder
		for _, m := range ms {
			if cmd == "kick" {
				fmt.Fprintf(&b, "+OK kicked %d\n", m.id)
			} else {
				fmt.Fprintf(&b, "+OK hup %d\n", m.id)
			}
			s.fireConfLocked(c, cmd+"-member", m)
		}
		for _, m := range ms {
			s.hangupLocked(m.ch, "NORMAL_CLEARING", hangHup)
		}
		return b.String()
	case "energy":
		usage := "energy <member_id|all|last|non_moderator> [<newval>]"
		ms, errText := c.pick(args, usage)
		if errText != "" {
			return errText
		}
		var b strings.Builder
		for _, m := range ms {
			if len(args) > 1 {
				n, err := strconv.Atoi(args[1])
				if err != nil || n < 0 {
					return usage
				}
				m.energy = n
				s.fireLocked(s.confEventLocked(c, "energy-level-member", m, nil, nil).add("Energy-Level", strconv.Itoa(n)))
				s.talkLocked(m, false)
			}
			fmt.Fprintf(&b, "Energy %d = %d\n", m.id, m.energy)
		}
		return b.String()
	case "play":
		if len(args) == 0 {
			return "-ERR (play) no file\n"
		}
		file := args[0]
		ok := strings.HasPrefix(file, "tone_stream://") || strings.HasPrefix(file, "silence_stream://")
		if len(args) > 1 {
			m := c.byID(args[1])
			if m == nil {
				return "-ERR Member: " + args[1] + " not found.\n"
			}
			if !ok {
				return "-ERR (play) File: " + file + " not found.\n"
			}
			s.fireLocked(s.confEventLocked(c, "play-file-member", m, nil, []hdr{{"File", file}}))
			s.fireLocked(s.confEventLocked(c, "play-file-member-done", m, nil, []hdr{{"File", file}}))
			return fmt.Sprintf("+OK (play) Playing file %s to member %d\n", file, m.id)
		}
		if !ok {
			s.fireLocked(s.confEventLocked(c, "play-file", nil, nil, []hdr{{"File", file}, {"Async", "false"}, {"Error", "File could not be played"}}))
			return "-ERR (play) File: " + file + " not found.\n"
		}
		s.fireLocked(s.confEventLocked(c, "play-file", nil, nil, []hdr{{"File", file}, {"Async", "false"}}))
		s.fireLocked(s.confEventLocked(c, "play-file-done", nil, []hdr{{"seconds", "0"}, {"milliseconds", "200"}, {"samples", "1600"}}, []hdr{{"File", file}}))
		return "+OK (play) Playing file " + file + "\n"
	}
	return "-ERR Conference command '" + f[1] + "' not found.\n"
}

// memberFlagLocked applies mute/unmute/tmute/deaf/undeaf to one member.
func (s *Server) memberFlagLocked(m *member, cmd string) string {
	if cmd == "tmute" {
		cmd = "mute"
		if m.muted {
			cmd = "unmute"
		}
	}
	switch cmd {
	case "mute":
		m.muted = true
		s.talkLocked(m, true)
	case "unmute":
		m.muted = false
	case "deaf":
		m.deaf = true
	case "undeaf":
		m.deaf = false
	}
	s.fireConfLocked(m.conf, cmd+"-member", m)
	if cmd == "unmute" {
		s.talkLocked(m, false)
	}
	return fmt.Sprintf("+OK %s %d\n", cmd, m.id)
}

// pick resolves a member argument: an id, all, last; errors as recorded.
func (c *conference) pick(args []string, usage string) ([]*member, string) {
	if len(args) == 0 {
		return nil, usage
	}
	switch args[0] {
	case "all", "non_moderator":
		ms := make([]*member, 0, len(c.members))
		for i := len(c.members) - 1; i >= 0; i-- { // newest first
			ms = append(ms, c.members[i])
		}
		return ms, ""
	case "last":
		if len(c.members) == 0 {
			return nil, "-ERR Non-Existant ID last\n"
		}
		return []*member{c.members[len(c.members)-1]}, ""
	}
	if _, err := strconv.Atoi(args[0]); err != nil {
		return nil, usage
	}
	m := c.byID(args[0])
	if m == nil {
		return nil, "-ERR Non-Existant ID " + args[0] + "\n"
	}
	return []*member{m}, ""
}

func (c *conference) byID(id string) *member {
	n, err := strconv.Atoi(id)
	if err != nil {
		return nil
	}
	for _, m := range c.members {
		if m.id == n {
			return m
		}
	}
	return nil
}

// sortedConfs lists rooms in creation order.
func (s *Server) sortedConfs() []string { return append([]string(nil), s.confOrder...) }

func confFlags(c *conference) string {
	f := "running|answered|enforce_min|dynamic|exit_sound|enter_sound|json_status"
	if c.locked {
		f = "locked|" + f
	}
	return f
}

// memberList is conference_list: newest member first,
// id;channel;uuid;cid name;cid number;flags;volume in;volume out;energy.
func (s *Server) memberList(c *conference, delim string) string {
	var b strings.Builder
	for i := len(c.members) - 1; i >= 0; i-- {
		m := c.members[i]
		var flags []string
		if !m.deaf {
			flags = append(flags, "hear")
		}
		if !m.muted {
			flags = append(flags, "speak")
		}
		if m.talking {
			flags = append(flags, "talking")
		}
		if c.floor == m {
			flags = append(flags, "floor")
		}
		name, num := m.ch.listCallerID()
		fmt.Fprintf(&b, "%d%s%s%s%s%s%s%s%s%s%s%s0%s0%s%d\n", m.id, delim, m.ch.name, delim, m.ch.uuid, delim,
			name, delim, num, delim, strings.Join(flags, "|"), delim, delim, delim, m.energy)
	}
	return b.String()
}

// listCallerID is the caller id of the channel's profile (flipped after
// answer: "Outbound Call" and the dialed number).
func (ch *channel) listCallerID() (string, string) {
	if ch.flipped {
		return "Outbound Call", ch.callee
	}
	return ch.cidName, ch.cidNum
}

func (s *Server) confJSON(c *conference) *jnode {
	o := jobj().
		set("conference_name", jstr(c.name)).
		set("member_count", jnum(int64(len(c.members)))).
		set("ghost_count", jnum(0)).
		set("rate", jnum(8000)).
		set("run_time", jnum(int64(time.Since(c.created).Seconds()))).
		set("conference_uuid", jstr(c.uuid)).
		set("canvas_count", jnum(0)).
		set("max_bw_in", jnum(0)).
		set("force_bw_in", jnum(0)).
		set("video_floor_packets", jnum(0)).
		set("locked", jbool(c.locked)).
		set("destruct", jbool(false)).
		set("wait_mod", jbool(false)).
		set("audio_always", jbool(false)).
		set("running", jbool(true)).
		set("answered", jbool(true)).
		set("enforce_min", jbool(true)).
		set("bridge_to", jbool(false)).
		set("dynamic", jbool(true)).
		set("exit_sound", jbool(true)).
		set("enter_sound", jbool(true)).
		set("recording", jbool(false)).
		set("video_bridge", jbool(false)).
		set("video_floor_only", jbool(false)).
		set("video_rfc4579", jbool(false)).
		set("variables", jobj())
	ms := jarr()
	for i := len(c.members) - 1; i >= 0; i-- {
		m := c.members[i]
		name, num := m.ch.listCallerID()
		ms.add(jobj().
			set("type", jstr("caller")).
			set("id", jnum(int64(m.id))).
			set("flags", jobj().
				set("can_hear", jbool(!m.deaf)).
				set("can_see", jbool(true)).
				set("can_speak", jbool(!m.muted)).
				set("hold", jbool(false)).
				set("mute_detect", jbool(false)).
				set("talking", jbool(m.talking)).
				set("has_video", jbool(false)).
				set("video_bridge", jbool(false)).
				set("has_floor", jbool(c.floor == m)).
				set("is_moderator", jbool(false)).
				set("end_conference", jbool(false)).
				set("mandatory_member_end_conference", jbool(false)).
				set("pass_digits", jbool(false))).
			set("uuid", jstr(m.ch.uuid)).
			set("caller_id_name", jstr(name)).
			set("caller_id_number", jstr(num)).
			set("join_time", jnum(int64(time.Since(m.joined).Seconds()))).
			set("last_talking", jnum(0)).
			set("energy", jnum(int64(m.energy))).
			set("volume_in", jnum(0)).
			set("volume_out", jnum(0)).
			set("output-volume", jnum(0)).
			set("input-volume", jnum(0)))
	}
	o.set("members", ms)
	return o
}

func (s *Server) confXML(c *conference) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  <conference name=%q member-count=\"%d\" ghost-count=\"0\" rate=\"8000\" uuid=%q running=\"true\" answered=\"true\" enforce_min=\"true\" dynamic=\"true\" exit_sound=\"true\" enter_sound=\"true\" run_time=\"%d\">\n",
		c.name, len(c.members), c.uuid, int(time.Since(c.created).Seconds()))
	b.WriteString("    <variables></variables>\n    <members>\n")
	for i := len(c.members) - 1; i >= 0; i-- {
		m := c.members[i]
		name, num := m.ch.listCallerID()
		fmt.Fprintf(&b, "      <member type=\"caller\">\n        <id>%d</id>\n        <flags>\n", m.id)
		for _, f := range []struct {
			k string
			v bool
		}{{"can_hear", !m.deaf}, {"can_see", true}, {"can_speak", !m.muted}, {"mute_detect", false},
			{"talking", m.talking}, {"hold", false}, {"has_video", false}, {"video_bridge", false},
			{"has_floor", c.floor == m}, {"is_moderator", false}, {"end_conference", false},
			{"mandatory_member_end_conference", false}, {"is_ghost", false}} {
			fmt.Fprintf(&b, "          <%s>%t</%s>\n", f.k, f.v, f.k)
		}
		fmt.Fprintf(&b, "        </flags>\n        <uuid>%s</uuid>\n        <caller_id_name>%s</caller_id_name>\n        <caller_id_number>%s</caller_id_number>\n        <join_time>%d</join_time>\n        <last_talking>0</last_talking>\n        <energy>%d</energy>\n        <volume_in>0</volume_in>\n        <volume_out>0</volume_out>\n        <output-volume>0</output-volume>\n      </member>\n",
			m.ch.uuid, urlEncode(name), urlEncode(num), int(time.Since(m.joined).Seconds()), m.energy)
	}
	b.WriteString("    </members>\n  </conference>\n")
	return b.String()
}
