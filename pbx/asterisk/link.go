package asterisk

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/link"
)

var errReplaced = errors.New("ARI application replaced by another websocket (another convoice with the same app name?)")

// Run connects, keeps the event websocket up and delivers events to h until
// ctx is done; it then returns nil. It never blocks start-up on Asterisk:
// while Asterisk is down Run keeps retrying (backoff capped at link.MaxBackoff)
// and Status says why it is not ready. Handler calls come from several
// goroutines (one per shard, plus link events); the events of one leg are
// always delivered in order from one goroutine.
func (d *Driver) Run(ctx context.Context, h pbx.Handler) error {
	return d.health.HoldRun("asterisk", h, func() {
		d.handler.Store(&h)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		d.runShards(ctx)
		go d.resyncLoop(ctx)
		go link.Sweep(ctx, d.forgetOld)
		link.Keeper{State: d.health, Log: d.log,
			Failed: "ARI connection attempt failed; retrying", Describe: describe}.Keep(ctx, d.session)
	})
}

// session is one life of the event connection: preflight, websocket,
// resync, link up, supervision, link down. up says whether it got to link
// up (the backoff restarts then).
func (d *Driver) session(ctx context.Context, connects int) (up bool, err error) {
	startup, err := d.preflight(ctx)
	if err != nil {
		d.health.Set(false, describe(err))
		return false, err
	}
	ws, lc, err := d.dialWS(ctx)
	if err != nil {
		d.health.Set(false, "websocket: "+describe(err))
		return false, err
	}
	defer lc.Close()

	readerDone := make(chan error, 1)
	go func() { readerDone <- d.readEvents(ws) }()

	// Resync before saying we are up, so that the controller's own
	// Snapshot on EventLinkUp sees answered legs already in their bridge
	// and a restart is reported first.
	rctx, cancel := context.WithTimeout(ctx, 4*d.cfg.RequestTimeout)
	err = d.resync(rctx, true, startup)
	cancel()
	if err != nil {
		d.health.Set(false, "resync after connect failed: "+describe(err))
		return false, fmt.Errorf("resync after connect: %w", err)
	}
	select {
	case err := <-readerDone:
		d.health.Set(false, "websocket closed during resync: "+describe(err))
		return false, err
	default:
	}

	reason := "connected"
	if connects > 0 {
		d.health.Reconnected()
		reason = "reconnected"
	}
	d.health.Set(true, "connected to "+d.cfg.URL)
	d.log.Info("ARI event link up", "reason", reason)
	d.emit(pbx.Event{Type: pbx.EventLinkUp, Reason: reason})

	why := d.supervise(ctx, ws, lc, readerDone)
	lc.Close()
	if ctx.Err() != nil {
		return true, nil
	}
	d.health.Set(false, "link down: "+why)
	d.log.Warn("ARI event link down", "reason", why)
	d.emit(pbx.Event{Type: pbx.EventLinkDown, Reason: why})
	return true, nil
}

// preflight asks GET /asterisk/info before the websocket upgrade: the
// upgrade's failure says only "bad status", this says 401, 503 "Asterisk
// not booted" or connection refused. It returns status.startup_time, the
// restart detector ("" when the PBX does not give it).
func (d *Driver) preflight(ctx context.Context) (string, error) {
	var info struct {
		Status struct {
			StartupTime string `json:"startup_time"`
		} `json:"status"`
	}
	err := d.rest.do(ctx, http.MethodGet, "/asterisk/info", nil, nil, &info)
	if err != nil {
		if answered(err) {
			return "", nil // not offered: the websocket attempt decides
		}
		return "", err
	}
	return info.Status.StartupTime, nil
}

// answered reports whether a REST call got an answer from a booted
// Asterisk, even an error one: a 404 or 501 still proves the HTTP side
// lives; no answer, 401/403 and 502/503/504 do not.
func answered(err error) bool {
	if err == nil {
		return true
	}
	var ae *APIError
	return errors.As(err, &ae) && !ae.unavailable()
}

// describe turns an error into a Status detail.
func describe(err error) string {
	if err == nil {
		return ""
	}
	var ae *APIError
	if errors.As(err, &ae) {
		switch {
		case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
			return fmt.Sprintf("ARI credentials rejected (HTTP %d)", ae.Status)
		case ae.Status != 0:
			if ae.Message != "" {
				return fmt.Sprintf("HTTP %d: %s", ae.Status, ae.Message)
			}
			return fmt.Sprintf("HTTP %d", ae.Status)
		}
		return ae.Err.Error()
	}
	return err.Error()
}

// wsURL is the events URL with the credentials in api_key: never log it.
func (d *Driver) wsURL() string {
	u := d.cfg.URL
	switch {
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://")
	default:
		u = "ws://" + strings.TrimPrefix(u, "http://")
	}
	q := url.Values{"app": {d.cfg.App}, "api_key": {d.cfg.User + ":" + d.cfg.Password}}
	return u + "/events?" + q.Encode()
}

// dialWS opens the events websocket with a bounded handshake. The TCP
// connection is dialed here (not by websocket.DialConfig) so that the
// watchdog sees every byte read: x/net/websocket answers the server's
// pings itself but swallows the pongs to ours, so this is where they
// become visible.
func (d *Driver) dialWS(ctx context.Context) (*websocket.Conn, *link.Conn, error) {
	cfg, err := websocket.NewConfig(d.wsURL(), d.cfg.URL)
	if err != nil {
		return nil, nil, errors.New("bad websocket URL")
	}
	host := cfg.Location.Host
	if cfg.Location.Port() == "" {
		if cfg.Location.Scheme == "wss" {
			host = net.JoinHostPort(cfg.Location.Hostname(), "443")
		} else {
			host = net.JoinHostPort(cfg.Location.Hostname(), "80")
		}
	}
	dctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	nd := &net.Dialer{KeepAlive: 15 * time.Second}
	var raw net.Conn
	if cfg.Location.Scheme == "wss" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if d.cfg.TLS != nil {
			tc = d.cfg.TLS.Clone()
		}
		tc.ServerName = cfg.Location.Hostname()
		td := &tls.Dialer{NetDialer: nd, Config: tc}
		raw, err = td.DialContext(dctx, "tcp", host)
	} else {
		raw, err = nd.DialContext(dctx, "tcp", host)
	}
	if err != nil {
		return nil, nil, err
	}
	lc := link.Watch(raw)
	_ = raw.SetDeadline(time.Now().Add(d.cfg.RequestTimeout))
	ws, err := websocket.NewClient(cfg, lc)
	if err != nil {
		lc.Close()
		if errors.Is(err, websocket.ErrBadStatus) {
			return nil, nil, errors.New("upgrade refused by the server")
		}
		return nil, nil, fmt.Errorf("handshake: %w", err)
	}
	_ = raw.SetDeadline(time.Time{})
	// We never send data frames: every frame we write is a ping.
	ws.PayloadType = websocket.PingFrame
	return ws, lc, nil
}

// supervise pings until the connection ends, ctx is done, or two rounds in
// a row go unanswered. It returns why the link ended.
func (d *Driver) supervise(ctx context.Context, ws *websocket.Conn, lc *link.Conn, readerDone <-chan error) string {
	interval := d.cfg.PingInterval
	restTimeout := min(interval, d.cfg.RequestTimeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()

	type round struct {
		sent     time.Duration // on lc's clock
		restSent time.Duration // on the REST client's clock
		restOK   atomic.Bool
	}
	var pending *round
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return "stopped"
		case err := <-readerDone:
			if errors.Is(err, errReplaced) {
				return errReplaced.Error()
			}
			return "websocket closed: " + describe(err)
		case <-tick.C:
		}
		if pending != nil {
			wsOK := lc.Since(pending.sent)
			// REST lives if the ping was answered, or if any other
			// request was: a busy Asterisk may answer the ping late.
			restOK := pending.restOK.Load() || d.rest.answers.Since(pending.restSent)
			if wsOK && restOK {
				if misses > 0 {
					d.health.Set(true, "connected to "+d.cfg.URL)
					d.log.Info("ARI answers pings again")
				}
				misses = 0
			} else {
				misses++
				d.stats.pingMisses.Add(1)
				what := "REST ping"
				if !wsOK {
					what = "websocket ping"
				}
				why := fmt.Sprintf("no answer to %s for %s", what, time.Duration(misses)*interval)
				if misses >= 2 {
					d.stats.halfOpen.Add(1)
					return why + " (half-open connection)"
				}
				d.health.Set(false, why)
				d.log.Warn("ARI ping unanswered", "what", what)
			}
		}
		r := &round{sent: lc.Now(), restSent: d.rest.answers.Now()}
		pending = r
		_ = lc.SetWriteDeadline(time.Now().Add(interval))
		if _, err := ws.Write([]byte("convoice")); err != nil {
			return "websocket ping write failed: " + err.Error()
		}
		go func() {
			err := d.rest.doTimeout(ctx, restTimeout, http.MethodGet, "/asterisk/ping", nil, nil, nil)
			r.restOK.Store(answered(err))
		}()
	}
}

// resyncLoop runs a resync when events were lost (queue overflow,
// undecodable frame) or a leg could not be bridged, then reports
// pbx.EventLost so the controller resyncs too.
func (d *Driver) resyncLoop(ctx context.Context) {
	var reported int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.lostCh:
		}
		// Let a burst settle so one resync covers it.
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if ok, _ := d.health.Ready(); ok {
			rctx, cancel := context.WithTimeout(ctx, 4*d.cfg.RequestTimeout)
			if err := d.resync(rctx, false, ""); err != nil {
				d.log.Warn("resync after lost events failed", "err", err)
			}
			cancel()
		}
		if n := d.health.LostEvents(); n > reported {
			d.emit(pbx.Event{Type: pbx.EventLost,
				Reason: fmt.Sprintf("%d ARI event(s) dropped or undecodable", n-reported)})
			reported = n
		}
	}
}

// maxEventBytes bounds what one event may take of the reader's buffer (as
// x/net/websocket's own DefaultMaxPayloadBytes bounds a frame).
const maxEventBytes = 32 << 20

// readEvents decodes the events of the websocket, one JSON value per
// frame, and dispatches them until the connection fails, a frame is not
// JSON, or ApplicationReplaced; it returns why. It decodes straight from
// the connection: reading each frame whole first (websocket.Message)
// allocated a fresh, repeatedly grown buffer per frame, 12 % of all the
// bytes convoice allocated in BenchmarkDialOut. The decoder's buffer is
// kept and decoding takes the same two passes over a frame as
// json.Unmarshal did.
func (d *Driver) readEvents(ws *websocket.Conn) error {
	in := &eventReader{r: ws}
	dec := json.NewDecoder(in)
	for {
		in.n = 0
		h := new(frame)
		err := dec.Decode(h)
		if err != nil {
			var syntax *json.SyntaxError
			switch {
			case in.err != nil:
				return in.err // the connection's end, or an oversized event
			case errors.As(err, &syntax):
				// Frames are not delimited for the decoder: after bytes
				// that are not JSON it cannot find the next event.
				// Reconnect (and resync).
				d.log.Warn("undecodable ARI frame", "err", err)
				d.noteLost()
				return fmt.Errorf("ARI event stream: %w", err)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				return err
			}
		}
		// Any other error is a value of another shape than frame's in a
		// frame read whole: dispatchFrame decides.
		if !d.dispatchFrame(h, err) {
			return errReplaced
		}
	}
}

// eventReader is the websocket as the decoder reads it: it keeps the
// connection's error apart from the decoder's, and refuses an event
// larger than maxEventBytes (n counts the bytes read since the last
// event; readEvents resets it).
type eventReader struct {
	r   io.Reader
	n   int
	err error
}

func (e *eventReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.Read(p)
	e.n += n
	if err == nil && e.n > maxEventBytes {
		err = fmt.Errorf("ARI event larger than %d bytes", maxEventBytes)
	}
	e.err = err
	return n, err
}
