package link

import (
	"errors"
	"log/slog"
	"time"

	"github.com/convoice/convoice/pbx"
)

// ClaimRun marks the driver (kind "asterisk" or "freeswitch") as running
// its event link for h. It fails without a handler, or while Run or
// RunPassive already runs: the contract lets only one of them run at a
// time. release gives the driver back.
func (s *State) ClaimRun(kind string, h pbx.Handler) (release func(), err error) {
	if h == nil {
		return nil, errors.New(kind + ": Run needs a handler")
	}
	return s.claim(kind)
}

// ClaimPassive is ClaimRun for RunPassive, which needs no handler.
func (s *State) ClaimPassive(kind string) (release func(), err error) { return s.claim(kind) }

func (s *State) claim(kind string) (func(), error) {
	if !s.running.CompareAndSwap(false, true) {
		return nil, errors.New(kind + ": Run or RunPassive is already running")
	}
	return func() { s.running.Store(false) }, nil
}

// Defaults both drivers apply to the settings they share.
const (
	DefaultRingTimeout    = 30 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultPingInterval   = 2 * time.Second
	// MaxBackoff caps the wait between reconnection attempts.
	MaxBackoff = 5 * time.Second
)

// Defaults fills the settings both drivers' configurations have: a zero
// or negative ring timeout, request timeout or ping interval gets its
// default above, a nil logger slog.Default().
func Defaults(ring, request, ping *time.Duration, log **slog.Logger) {
	for _, v := range []struct {
		d   *time.Duration
		def time.Duration
	}{{ring, DefaultRingTimeout}, {request, DefaultRequestTimeout}, {ping, DefaultPingInterval}} {
		if *v.d <= 0 {
			*v.d = v.def
		}
	}
	if *log == nil {
		*log = slog.Default()
	}
}
