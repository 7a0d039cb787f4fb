package link

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/convoice/convoice/pbx"
)

// Session is one life of a driver's connection: connect, resync, link up,
// supervise until the connection ends. connects counts the sessions that
// got to link up before this one (0: the first connection, anything
// else: a reconnect). up says whether this one got there; err says why a
// session that did not get there failed.
type Session func(ctx context.Context, connects int) (up bool, err error)

// Keeper runs sessions one after the other, with backoff between them.
type Keeper struct {
	// State is set to Connecting at the start and "stopped" at the end;
	// the sessions set it in between.
	State *State
	// Connecting is the detail until a session says more; "" means
	// "connecting".
	Connecting string
	// MaxBackoff caps the wait between attempts (see pbx.Backoff); zero
	// means the package's MaxBackoff.
	MaxBackoff time.Duration
	// Log gets one warning per kind of failure (Failed, with "err"), and
	// the repeats at debug level, not one warning every few seconds while
	// the PBX is down.
	Log    *slog.Logger
	Failed string
	// Describe makes a failure readable for the log.
	Describe func(error) string
}

// Keep runs session until ctx is done. The backoff starts over after a
// session that got to link up, so a link that drops after hours of work
// is retried after the shortest wait.
func (k Keeper) Keep(ctx context.Context, session Session) {
	k.State.Set(false, cmp.Or(k.Connecting, "connecting"))
	backoff := pbx.Backoff{Max: cmp.Or(k.MaxBackoff, MaxBackoff)}
	connects := 0
	lastFailure := ""
	for ctx.Err() == nil {
		up, err := session(ctx, connects)
		if up {
			connects++
			backoff.Reset()
			lastFailure = ""
		}
		if ctx.Err() != nil {
			break
		}
		if err != nil && !up {
			if msg := k.Describe(err); msg != lastFailure {
				k.Log.Warn(k.Failed, "err", msg)
				lastFailure = msg
			} else {
				k.Log.Debug(k.Failed, "err", msg)
			}
		}
		if !backoff.Wait(ctx) {
			break
		}
	}
	k.State.Set(false, "stopped")
}
