package freeswitch

import (
	"context"
	"fmt"

	"github.com/fiorix/go-eventsocket/eventsocket"

	"github.com/convoice/convoice/pbx/link"
)

// RunPassive keeps a command-only event-socket connection (subscribed to
// nothing: another convoice replica holds the node's event connection)
// until ctx is done, reconnecting with backoff as Run does; its status
// follows "api status", asked every PingInterval. No leg table is kept —
// no event would ever update it; the owner's driver tracks the calls, and
// SetMute looks the member id up in the room's list.
func (d *Driver) RunPassive(ctx context.Context) error {
	return d.health.HoldPassive("freeswitch", func() {
		link.Keeper{State: d.health, Connecting: "connecting (passive: another replica holds the event connection)",
			Log: d.log.With("addr", d.cfg.Addr), Failed: "passive event-socket connection failed; retrying",
			Describe: describe}.Keep(ctx, d.passiveSession)
	})
}

// passiveSession is one life of the command-only connection; up says
// whether it got to serving commands.
func (d *Driver) passiveSession(ctx context.Context, _ int) (up bool, err error) {
	defer func() {
		if err != nil && ctx.Err() == nil {
			d.health.Set(false, "passive: "+describe(err))
		}
	}()
	c, err := dial(ctx, d.cfg.Addr, d.cfg.Password, d.cfg.RequestTimeout)
	if err != nil {
		return false, err
	}
	c.start(func(*eventsocket.Event) {}, func(string) {})
	defer c.close()
	if _, err := c.request(ctx, "api status"); err != nil {
		return false, err
	}
	d.conn.Store(c)
	defer d.conn.CompareAndSwap(c, nil)
	d.health.Set(true, "passive: connected to "+d.cfg.Addr+" (another replica holds the event connection)")
	if err := d.keepAlive(ctx, c, d.forgetPassive); err != nil {
		return true, fmt.Errorf("connection lost: %w", err)
	}
	return true, nil
}

// forgetPassive drops the leg table: in passive mode no event will ever
// end its entries.
func (d *Driver) forgetPassive() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.legs)
}
