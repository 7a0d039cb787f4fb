package eslemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/internal/emutest"
)

// frame is one ESL frame as a client sees it.
type frame struct {
	ct      string
	order   []string // outer header names in wire order
	headers map[string]string
	body    string
}

// readFrame parses one frame: header lines, an empty line, Content-Length
// bytes of body.
func readFrame(br *bufio.Reader) (frame, error) {
	f := frame{headers: map[string]string{}}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return f, err
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			if len(f.order) == 0 {
				continue
			}
			break
		}
		k, v, _ := strings.Cut(line, ": ")
		f.order = append(f.order, k)
		f.headers[k] = v
	}
	f.ct = f.headers["Content-Type"]
	if n, err := strconv.Atoi(f.headers["Content-Length"]); err == nil && n > 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return f, err
		}
		f.body = string(b)
	}
	return f, nil
}

// evt is a decoded event: ordered headers and a body.
type evt struct {
	keys []string
	vals map[string]string
	body string
}

func (e evt) get(k string) string { return e.vals[k] }

func (e evt) name() string { return e.vals["Event-Name"] }

// decodeEvent reads text/event-json or text/event-plain.
func decodeEvent(f frame) (evt, error) {
	e := evt{vals: map[string]string{}}
	switch f.ct {
	case "text/event-json":
		dec := json.NewDecoder(strings.NewReader(f.body))
		tok, err := dec.Token()
		if err != nil || tok != json.Delim('{') {
			return e, fmt.Errorf("not a JSON object: %v", err)
		}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return e, err
			}
			// Values are strings, except the array variables FreeSWITCH
			// writes as JSON arrays (variable_transfer_history, q): kept
			// as their JSON text.
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return e, err
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				v = string(raw)
			}
			k := kt.(string)
			if k == "_body" {
				e.body = v
				continue
			}
			e.keys = append(e.keys, k)
			e.vals[k] = v
		}
		return e, nil
	case "text/event-plain":
		head, body, _ := strings.Cut(f.body, "\n\n")
		for _, line := range strings.Split(head, "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				continue
			}
			if dv, err := url.QueryUnescape(v); err == nil {
				v = dv
			}
			e.keys = append(e.keys, k)
			e.vals[k] = v
		}
		e.body = body
		return e, nil
	}
	return e, fmt.Errorf("not an event: %q", f.ct)
}

// client is a raw ESL test client that records every frame it receives.
type client struct {
	t     testing.TB
	nc    net.Conn
	inbox *emutest.Inbox[frame]
}

func dialClient(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &client{t: t, nc: nc, inbox: emutest.NewInbox[frame]()}
	go func() {
		br := bufio.NewReader(nc)
		for {
			f, err := readFrame(br)
			if err != nil {
				c.inbox.End(err)
				return
			}
			c.inbox.Add(f)
		}
	}()
	return c
}

func (c *client) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// snapshot is the frames so far, whether the socket ended in EOF, and the
// error that ended it.
func (c *client) snapshot() ([]frame, bool, error) {
	fs, err := c.inbox.Snapshot()
	return fs, err == io.EOF, err
}

// waitFor waits until cond holds on the frames received so far.
func (c *client) waitFor(d time.Duration, cond func(fs []frame, closed bool) bool) bool {
	return c.inbox.WaitFor(d, func(fs []frame, err error) bool { return cond(fs, err != nil) })
}

// cmd sends a command and returns its reply (the next non-event frame).
func (c *client) cmd(s string) frame {
	c.t.Helper()
	fs, _, _ := c.snapshot()
	n := 0
	for _, f := range fs {
		if !isEventFrame(f) {
			n++
		}
	}
	c.write(s + "\n\n")
	var got frame
	ok := c.waitFor(10*time.Second, func(fs []frame, _ bool) bool {
		i := 0
		for _, f := range fs {
			if isEventFrame(f) {
				continue
			}
			if i == n {
				got = f
				return true
			}
			i++
		}
		return false
	})
	if !ok {
		c.t.Fatalf("no reply to %q", s)
	}
	return got
}

// events returns the decoded events received so far.
func (c *client) events() []evt {
	fs, _, _ := c.snapshot()
	var out []evt
	for _, f := range fs {
		if isEventFrame(f) {
			if e, err := decodeEvent(f); err == nil {
				out = append(out, e)
			}
		}
	}
	return out
}

func (c *client) close() { _ = c.nc.Close() }

func isEventFrame(f frame) bool { return strings.HasPrefix(f.ct, "text/event-") }

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
