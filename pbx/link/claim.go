package link

import (
	"errors"
	"log/slog"
	"time"

	"github.com/convoice/convoice/pbx"
)

// HoldRun runs body for Run (with handler h) while it holds the driver
// (kind "asterisk" or "freeswitch"). It fails at once without a handler,
// or while Run or RunPassive already runs: the contract lets only one of
// them run at a time.
func (s *State) HoldRun(kind string, h pbx.Handler, body func()) error {
	if h == nil {
		return errors.New(kind + ": Run needs a handler")
	}
	return s.hold(kind, body)
}

// HoldPassive is HoldRun for RunPassive, which needs no handler.
func (s *State) HoldPassive(kind string, body func()) error { return s.hold(kind, body) }

func (s *State) hold(kind string, body func()) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New(kind + ": Run or RunPassive is already running")
	}
	defer s.running.Store(false)
	body()
	return nil
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
