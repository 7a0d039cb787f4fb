package eslemu

import (
	"bufio"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// conn is one event-socket client (a "listener" in mod_event_socket).
type conn struct {
	s    *Server
	link *emuserver.Link

	// Guarded by s.mu: the subscription, as parse_command keeps it.
	authed   bool
	eventsOn bool
	all      bool
	events   map[string]bool
	custom   map[string]bool
	format   string // plain, json, xml
	filters  []hdr
	myevents bool
	session  string // uuid of a myevents-bound channel
	exiting  bool

	// Guarded by mu: the output queue. While an api command runs, events
	// are held back and follow its reply, as FreeSWITCH's listener thread
	// does (it writes events only between commands).
	mu      sync.Mutex
	out     []string
	holding int
	held    []string
	closing bool // close once the queue is written
	dead    bool
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{s: s, link: emuserver.NewLink(nc), format: "plain", events: map[string]bool{}, custom: map[string]bool{}}
}

// send queues a reply or notice.
func (c *conn) send(frame string) {
	c.mu.Lock()
	if !c.dead && !c.closing {
		c.out = append(c.out, frame)
	}
	c.mu.Unlock()
	c.link.Ring()
}

// sendEvent queues an event frame, or holds it while an api command runs.
func (c *conn) sendEvent(frame string) {
	c.mu.Lock()
	switch {
	case c.dead || c.closing:
	case c.holding > 0:
		c.held = append(c.held, frame)
	default:
		c.out = append(c.out, frame)
	}
	c.mu.Unlock()
	c.link.Ring()
}

// finish queues the last frames and closes the socket once they are written.
func (c *conn) finish(frames ...string) {
	c.mu.Lock()
	if !c.dead && !c.closing {
		c.out = append(c.out, frames...)
		c.closing = true
	}
	c.mu.Unlock()
	c.link.Ring()
}

// close drops the connection at once (no notice), like a TCP reset.
func (c *conn) close() {
	c.link.Cut(func() {
		c.mu.Lock()
		c.dead = true
		c.out, c.held = nil, nil
		c.mu.Unlock()
	})
}

func (c *conn) writer() {
	defer c.s.wg.Done()
	for c.link.Rung() {
		for {
			if !c.s.waitResponsive(c.link.Done()) {
				return
			}
			c.mu.Lock()
			batch := c.out
			c.out = nil
			last := c.closing && len(batch) == 0
			c.mu.Unlock()
			if last {
				c.close()
				return
			}
			if len(batch) == 0 {
				break
			}
			for _, f := range batch {
				if _, err := io.WriteString(c.link.Conn, f); err != nil {
					c.close()
					return
				}
			}
		}
	}
}

// readCommand reads one command block: lines up to an empty line; the
// first is the command, the others headers ("Job-UUID: …" for bgapi), and a
// Content-Length header brings a body (mod_event_socket.c read_packet).
func readCommand(br *bufio.Reader) (string, []hdr, error) {
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(lines) == 0 {
				continue
			}
			break
		}
		lines = append(lines, line)
	}
	var hs []hdr
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if ok {
			hs = append(hs, hdr{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	for _, h := range hs {
		if strings.EqualFold(h.k, "Content-Length") {
			n, err := strconv.Atoi(h.v)
			if err == nil && n > 0 && n < 16<<20 {
				if _, err := io.ReadFull(br, make([]byte, n)); err != nil {
					return "", nil, err
				}
			}
		}
	}
	return lines[0], hs, nil
}

func (c *conn) reader(rude bool) {
	defer c.s.wg.Done()
	defer c.s.dropConn(c)
	if rude {
		// listener_run: an address the ACL denies gets no auth/request,
		// only the rejection, then the usual goodbye (recording f).
		c.finish(rudeRejection(), disconnectNotice(goodbyeText, ""))
		return
	}
	c.send(authRequestFrame)
	br := bufio.NewReader(c.link.Conn)
	for {
		cmd, hs, err := readCommand(br)
		if err != nil {
			c.close()
			return
		}
		if !c.s.waitResponsive(c.link.Done()) {
			return
		}
		if !c.handle(cmd, hs) {
			return
		}
	}
}

// handle runs one command; false ends the session.
func (c *conn) handle(cmd string, hs []hdr) bool {
	s := c.s
	lower := strings.ToLower(cmd)
	if strings.HasPrefix(lower, "exit") || strings.HasPrefix(lower, "...") {
		s.mu.Lock()
		c.exiting = true
		s.mu.Unlock()
		c.finish(commandReply("+OK bye"), disconnectNotice(goodbyeText, ""))
		return false
	}
	s.mu.Lock()
	authed := c.authed
	s.mu.Unlock()
	if !authed {
		if strings.HasPrefix(lower, "auth ") {
			if cmd[5:] == s.cfg.Password {
				s.mu.Lock()
				c.authed = true
				s.mu.Unlock()
				c.send(commandReply("+OK accepted"))
				return true
			}
			c.finish(commandReply("-ERR invalid"), disconnectNotice(goodbyeText, ""))
			return false
		}
		c.send(commandReply("-ERR command not found"))
		return true
	}
	switch {
	case strings.HasPrefix(lower, "api "):
		s.record(cmd)
		name, arg, _ := strings.Cut(strings.TrimSpace(cmd[4:]), " ")
		c.mu.Lock()
		c.holding++
		c.mu.Unlock()
		result, _ := s.execAPI(name, strings.TrimSpace(arg), "")
		c.mu.Lock()
		c.holding--
		if !c.dead && !c.closing {
			c.out = append(c.out, apiResponse(result))
			if c.holding == 0 {
				c.out = append(c.out, c.held...)
				c.held = nil
			}
		}
		c.mu.Unlock()
		c.link.Ring()
		return true
	case strings.HasPrefix(lower, "bgapi "):
		s.record(cmd)
		name, arg, _ := strings.Cut(strings.TrimSpace(cmd[6:]), " ")
		arg = strings.TrimSpace(arg)
		job := ""
		for _, h := range hs {
			if strings.EqualFold(h.k, "Job-UUID") {
				job = h.v
			}
		}
		if job == "" {
			job = emuserver.UUID()
		}
		c.send(bgapiReply(job))
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			result, pending := s.execAPI(name, arg, job)
			if pending {
				return
			}
			s.mu.Lock()
			if !s.closed {
				s.fireLocked(s.backgroundJobLocked(job, name, arg, result))
			}
			s.mu.Unlock()
		}()
		return true
	}
	s.mu.Lock()
	reply := c.commandLocked(cmd, lower)
	s.mu.Unlock()
	c.send(commandReply(reply))
	return true
}

// commandLocked answers the socket-level commands (not api/bgapi).
func (c *conn) commandLocked(cmd, lower string) string {
	switch {
	case strings.HasPrefix(lower, "filter "):
		return c.filterLocked(strings.TrimLeft(cmd[7:], " "))
	case strings.HasPrefix(lower, "myevents"):
		return c.myeventsLocked(cmd)
	case strings.HasPrefix(lower, "linger"), strings.HasPrefix(lower, "nolinger"):
		return "-ERR not controlling a session"
	case strings.HasPrefix(lower, "nolog"):
		return "-ERR not loging"
	case strings.HasPrefix(lower, "log"):
		return "+OK log level  [7]"
	case strings.HasPrefix(lower, "divert_events"):
		return "-ERR not controlling a session."
	case strings.HasPrefix(lower, "sendmsg"):
		uuid := strings.TrimSpace(cmd[7:])
		if c.s.chans[uuid] != nil {
			return "+OK"
		}
		return "-ERR invalid session id [" + uuid + "]"
	case strings.HasPrefix(lower, "event"):
		return c.eventLocked(cmd)
	case strings.HasPrefix(lower, "nixevent"):
		return c.nixeventLocked(cmd)
	case strings.HasPrefix(lower, "noevents"):
		if !c.eventsOn {
			return "-ERR not listening for events"
		}
		c.eventsOn, c.all = false, false
		c.events, c.custom = map[string]bool{}, map[string]bool{}
		return "+OK no longer listening for events"
	}
	return "-ERR command not found"
}

// eventLocked is "event [plain|json|xml] <names…> [CUSTOM <subclasses…>]".
func (c *conn) eventLocked(cmd string) string {
	_, rest, ok := strings.Cut(cmd, " ")
	keys, custom := 0, false
	if ok {
		for i, w := range strings.Fields(rest) {
			if i == 0 {
				switch strings.ToLower(w) {
				case "plain", "json", "xml":
					c.format = strings.ToLower(w)
					continue
				}
			}
			if custom {
				c.custom[w] = true
				continue
			}
			name := strings.ToUpper(w)
			if !eventNames[name] {
				continue
			}
			keys++
			if name == "ALL" {
				c.all = true
			}
			c.events[name] = true
			if name == "CUSTOM" {
				custom = true
			}
		}
	}
	if keys == 0 {
		return "-ERR no keywords supplied"
	}
	c.eventsOn = true
	return "+OK event listener enabled " + c.format
}

func (c *conn) nixeventLocked(cmd string) string {
	_, rest, _ := strings.Cut(cmd, " ")
	keys, custom := 0, false
	for _, w := range strings.Fields(rest) {
		if custom {
			delete(c.custom, w)
			continue
		}
		name := strings.ToUpper(w)
		if !eventNames[name] {
			continue
		}
		keys++
		switch name {
		case "CUSTOM":
			custom = true
		case "ALL":
			c.all = false
			c.events = map[string]bool{}
		default:
			if c.all {
				c.all = false
				for n := range eventNames {
					c.events[n] = true
				}
				delete(c.events, "ALL")
			}
			delete(c.events, name)
		}
	}
	if keys == 0 {
		return "-ERR no keywords supplied"
	}
	c.eventsOn = true
	return "+OK events nixed"
}

// filterLocked is mod_event_socket's "filter" (add, delete, delete all).
func (c *conn) filterLocked(arg string) string {
	name, val, hasVal := strings.Cut(arg, " ")
	if strings.EqualFold(name, "delete") && hasVal {
		name, val, hasVal = strings.Cut(val, " ")
		if strings.EqualFold(name, "all") {
			c.filters = nil
		} else {
			kept := c.filters[:0]
			for _, f := range c.filters {
				if strings.EqualFold(f.k, name) && (!hasVal || f.v == val) {
					continue
				}
				kept = append(kept, f)
			}
			c.filters = kept
		}
		return "+OK filter deleted. [" + name + "][" + val + "]"
	}
	if !hasVal {
		return "-ERR invalid syntax"
	}
	if strings.EqualFold(name, "add") {
		name, val, _ = strings.Cut(val, " ")
	}
	c.filters = append(c.filters, hdr{name, val})
	return "+OK filter added. [" + name + "]=[" + val + "]"
}

// myeventsLocked binds the socket to one channel's events. The format
// word is cut off with the uuid before it is looked at, so it is ignored
// (recording n); an unknown uuid is an error only when a format follows.
func (c *conn) myeventsLocked(cmd string) string {
	if c.myevents {
		return "-ERR aready enabled."
	}
	if len(cmd) > 9 {
		uuid, _, hasFmt := strings.Cut(strings.TrimSpace(cmd[9:]), " ")
		if c.s.chans[uuid] != nil {
			c.session = uuid
		} else if hasFmt {
			return "-ERR invalid uuid"
		}
	}
	for _, n := range myeventsTypes {
		c.events[n] = true
	}
	c.myevents, c.eventsOn = true, true
	return "+OK Events Enabled"
}

// wantsLocked is event_handler's decision for one listener.
func (c *conn) wantsLocked(e *event) bool {
	if !c.authed || !c.eventsOn || c.exiting {
		return false
	}
	send := false
	if c.all {
		send = true
	} else if c.events[e.name] {
		send = e.name != "CUSTOM" || e.subclass == "" || c.custom[e.subclass]
	}
	if send && len(c.filters) > 0 {
		send = false
		for _, f := range c.filters {
			hval, ok := e.get(f.k)
			if !ok {
				continue
			}
			comp, pos := f.v, true
			for len(comp) > 0 && (comp[0] == '+' || comp[0] == '-' || comp[0] == ' ') {
				if comp[0] == '-' {
					pos = false
				} else if comp[0] == '+' {
					pos = true
				}
				comp = comp[1:]
			}
			if send && pos {
				continue
			}
			var match bool
			if strings.HasPrefix(f.v, "/") {
				pat := strings.TrimSuffix(strings.TrimPrefix(comp, "/"), "/")
				re, err := regexp.Compile(pat)
				match = err == nil && re.MatchString(hval)
			} else {
				match = strings.EqualFold(hval, comp)
			}
			if match {
				if !pos {
					send = false
					break
				}
				send = true
			}
		}
	}
	if send && c.myevents {
		if e.uuid == "" || (c.session != "" && e.uuid != c.session) {
			send = false
		}
	}
	return send
}

// deliverLocked serializes an event for this listener if it wants it. A
// socket bound by myevents says goodbye after its channel's
// CHANNEL_HANGUP_COMPLETE (recording n).
func (c *conn) deliverLocked(e *event) {
	if !c.wantsLocked(e) {
		return
	}
	if c.format == "json" {
		c.sendEvent(eventFrame("json", e.json()))
	} else {
		c.sendEvent(eventFrame("plain", e.plain()))
	}
	if c.session != "" && e.uuid == c.session && e.name == "CHANNEL_HANGUP_COMPLETE" {
		c.exiting = true
		c.mu.Lock()
		c.out = append(c.out, c.held...)
		c.held = nil
		c.mu.Unlock()
		c.finish(disconnectNotice(goodbyeText, c.session))
	}
}
