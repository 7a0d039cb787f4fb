package asterisk

import (
	"context"
	"net/http"
	"time"
)

// RunPassive serves commands without the event websocket (another convoice
// replica holds it) until ctx is done. Readiness comes from GET
// /asterisk/ping every PingInterval: ready while it is answered. Commands
// are plain REST requests and need nothing else; their channels' events go
// to the replica that holds the websocket (an originate into the app while
// no websocket of the app is connected is hung up at answer, m, so only
// the owner's link makes calls work at all — as it should).
//
// The leg and conference tables are kept only while a request is in
// flight: without events nothing would ever end them, and the owner's
// driver is the one that tracks the calls.
func (d *Driver) RunPassive(ctx context.Context) error {
	return d.health.HoldPassive("asterisk", func() { d.probeLoop(ctx) })
}

// probeLoop probes every PingInterval until ctx is done.
func (d *Driver) probeLoop(ctx context.Context) {
	d.health.Set(false, "probing (passive: another replica holds the event link)")
	t := time.NewTicker(d.cfg.PingInterval)
	defer t.Stop()
	for {
		d.probe(ctx)
		d.forgetPassive()
		select {
		case <-ctx.Done():
			d.health.Set(false, "stopped")
			return
		case <-t.C:
		}
	}
}

// probe asks Asterisk for a ping and sets the status from the answer.
func (d *Driver) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, min(d.cfg.RequestTimeout, 2*d.cfg.PingInterval))
	defer cancel()
	err := d.rest.do(pctx, http.MethodGet, "/asterisk/ping", nil, nil, nil)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		d.health.Set(false, "passive: ping: "+describe(err))
		return
	}
	d.health.Set(true, "passive: ARI answers pings (another replica holds the event link)")
}

// forgetPassive drops what the driver remembered of requests that are
// done: in passive mode no event will ever update it.
func (d *Driver) forgetPassive() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, l := range d.legs {
		if !l.dialing {
			delete(d.legs, id)
		}
	}
	for id := range d.confs {
		delete(d.confs, id)
	}
}
