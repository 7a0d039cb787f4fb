package freeswitch

import (
	"context"
	"fmt"
	"time"

	"github.com/fiorix/go-eventsocket/eventsocket"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/link"
)

var _ pbx.Passive = (*Driver)(nil)

// RunPassive serves commands over an event-socket connection that
// subscribes to nothing (another convoice replica holds the node's event
// connection) until ctx is done. Readiness comes from "api status" every
// PingInterval; a command without an answer closes the connection (see
// request) and RunPassive reconnects with backoff. The leg table is not
// kept: without events nothing would update it, and the owner's driver
// tracks the calls (SetMute looks the member id up in the room's list).
func (d *Driver) RunPassive(ctx context.Context) error {
	release, err := d.health.ClaimPassive("freeswitch")
	if err != nil {
		return err
	}
	defer release()
	d.health.Set(false, "connecting (passive: another replica holds the event connection)")
	backoff := pbx.Backoff{Max: link.MaxBackoff}
	for ctx.Err() == nil {
		if err := d.passiveSession(ctx); err != nil && ctx.Err() == nil {
			d.health.Set(false, "passive: "+describe(err))
			if !backoff.Wait(ctx) {
				break
			}
		} else {
			backoff.Reset()
		}
	}
	d.health.Set(false, "stopped")
	return nil
}

// passiveSession is one life of the command-only connection.
func (d *Driver) passiveSession(ctx context.Context) error {
	c, err := dial(ctx, d.cfg.Addr, d.cfg.Password, d.cfg.RequestTimeout)
	if err != nil {
		return err
	}
	c.start(func(*eventsocket.Event) {}, func(string) {})
	defer c.close()
	if _, err := c.request(ctx, "api status"); err != nil {
		return err
	}
	d.conn.Store(c)
	defer d.conn.CompareAndSwap(c, nil)
	d.health.Set(true, "passive: connected to "+d.cfg.Addr+" (another replica holds the event connection)")
	ping := time.NewTicker(d.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.done:
			return fmt.Errorf("connection lost: %w", c.Err())
		case <-ping.C:
			d.forgetPassive()
			if c.oldestWait() > 0 {
				continue
			}
			_, _ = c.request(ctx, "api status")
		}
	}
}

// forgetPassive drops the leg table: in passive mode no event will ever
// end its entries.
func (d *Driver) forgetPassive() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.legs)
}
