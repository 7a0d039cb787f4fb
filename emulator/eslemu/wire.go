package eslemu

// Wire format of mod_event_socket, as documented in "mod_event_socket"
// (FreeSWITCH Explained, developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_event_socket_1048924:
// "3. Command Documentation": api, bgapi, event, filter, myevents, exit,
// auth) and as written by src/mod/event_handlers/mod_event_socket/mod_event_socket.c
// (listener_run, parse_command, api_exec, send_disconnect). Every frame the
// server writes is a block of "Name: value" lines, an empty line, then
// exactly Content-Length bytes of body when that header is present. The
// header orders below are the ones recorded from FreeSWITCH 1.10.12 in
// testdata/freeswitch/*.json (events put Content-Length first, replies put
// Content-Type first).

import (
	"strconv"
	"strings"
)

// Frame texts, byte for byte as recorded.
const (
	authRequestFrame = "Content-Type: auth/request\n\n"

	// goodbyeText is what FreeSWITCH writes in the disconnect notice when a
	// listener ends (exit, failed auth, ACL rejection, session gone).
	goodbyeText  = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
	shutdownText = "The system is being shut down.\n"
	rudeText     = "Access Denied, go away.\n"
)

// commandReply is a "command/reply" frame with a Reply-Text.
func commandReply(text string) string {
	return "Content-Type: command/reply\nReply-Text: " + text + "\n\n"
}

// bgapiReply is the command/reply to bgapi: the Job-UUID twice
// (mod_event_socket.c: "~Reply-Text: +OK Job-UUID: %s\nJob-UUID: %s\n\n").
func bgapiReply(job string) string {
	return "Content-Type: command/reply\nReply-Text: +OK Job-UUID: " + job + "\nJob-UUID: " + job + "\n\n"
}

// apiResponse is the "api/response" frame; an empty result becomes
// "-ERR no reply\n" as in api_exec.
func apiResponse(body string) string {
	if body == "" {
		body = "-ERR no reply\n"
	}
	return "Content-Type: api/response\nContent-Length: " + strconv.Itoa(len(body)) + "\n\n" + body
}

// disconnectNotice is "text/disconnect-notice"; with a controlled session
// (myevents) it names the session (send_disconnect).
func disconnectNotice(text, sessionUUID string) string {
	if sessionUUID != "" {
		return "Content-Type: text/disconnect-notice\nControlled-Session-UUID: " + sessionUUID +
			"\nContent-Disposition: disconnect\nContent-Length: " + strconv.Itoa(len(text)) + "\n\n" + text
	}
	return "Content-Type: text/disconnect-notice\nContent-Length: " + strconv.Itoa(len(text)) + "\n\n" + text
}

// rudeRejection is what an ACL-refused client gets instead of auth/request.
func rudeRejection() string {
	return "Content-Type: text/rude-rejection\nContent-Length: " + strconv.Itoa(len(rudeText)) + "\n\n" + rudeText
}

// eventFrame wraps a serialized event: "Content-Length: N\nContent-Type:
// text/event-<fmt>\n\n" (the order the listener thread writes).
func eventFrame(format, body string) string {
	return "Content-Length: " + strconv.Itoa(len(body)) + "\nContent-Type: text/event-" + format + "\n\n" + body
}

// urlUnsafe is SWITCH_URL_UNSAFE from switch_utils.h: the characters
// switch_url_encode escapes in plain events.
const urlUnsafe = "\r\n #%&+:;<=>?@[\\]^`{|}\""

// urlEncode is switch_url_encode without double encoding: an existing
// %XX escape is kept as is (the recordings show "%2B" in Channel-Name stays
// "%2B" in plain events), every other unsafe or non-printable byte becomes
// %XX with upper-case hex.
func urlEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) && isUpperHex(s[i+1]) && isUpperHex(s[i+2]) {
			b.WriteByte(c)
			continue
		}
		if c < ' ' || c > '~' || strings.IndexByte(urlUnsafe, c) >= 0 {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isUpperHex(c byte) bool { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') }

// jsonString quotes s the way cJSON's print_string_ptr does: only '"', '\\'
// and control characters are escaped ('/' and non-ASCII pass through, unlike
// encoding/json which would also escape <, > and &).
func jsonString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte("0123456789abcdef"[c>>4])
				b.WriteByte("0123456789abcdef"[c&15])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// jnode is a value for the cJSON-style formatted printer used by
// "conference json_list" (cJSON_Print: tabs, "key":<TAB>value, array items
// separated by ", ").
type jnode struct {
	kind  byte // 'o' object, 'a' array, 's' string, 'n' number, 'b' bool
	keys  []string
	vals  []*jnode
	str   string
	num   int64
	truth bool
}

func jobj() *jnode         { return &jnode{kind: 'o'} }
func jarr() *jnode         { return &jnode{kind: 'a'} }
func jstr(s string) *jnode { return &jnode{kind: 's', str: s} }
func jnum(n int64) *jnode  { return &jnode{kind: 'n', num: n} }
func jbool(v bool) *jnode  { return &jnode{kind: 'b', truth: v} }
func (n *jnode) set(k string, v *jnode) *jnode {
	n.keys = append(n.keys, k)
	n.vals = append(n.vals, v)
	return n
}
func (n *jnode) add(v *jnode) *jnode { n.vals = append(n.vals, v); return n }

// print renders n as cJSON_Print does (depth counts nesting levels).
func (n *jnode) print(b *strings.Builder, depth int) {
	switch n.kind {
	case 's':
		b.WriteString(jsonString(n.str))
	case 'n':
		b.WriteString(strconv.FormatInt(n.num, 10))
	case 'b':
		if n.truth {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case 'a':
		if len(n.vals) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteByte('[')
		for i, v := range n.vals {
			if i > 0 {
				b.WriteString(", ")
			}
			v.print(b, depth+1)
		}
		b.WriteByte(']')
	case 'o':
		b.WriteString("{\n")
		for i, k := range n.keys {
			b.WriteString(strings.Repeat("\t", depth+1))
			b.WriteString(jsonString(k))
			b.WriteString(":\t")
			n.vals[i].print(b, depth+1)
			if i < len(n.keys)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(strings.Repeat("\t", depth))
		b.WriteByte('}')
	}
}

func (n *jnode) String() string {
	var b strings.Builder
	n.print(&b, 0)
	return b.String()
}
