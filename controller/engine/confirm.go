package engine

// Confirm-to-join: which dials ask the PBX to keep an answered phone out
// of the mix until the callee presses a key (pbx.DialRequest.Confirm), and
// the watchdog's bound for legs waiting for that key.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/leg"
	"github.com/convoice/convoice/pbx"
)

// Confirm-to-join modes (CONVOICE_CONFIRM_TO_JOIN).
const (
	// ConfirmOff: every answered phone joins at once.
	ConfirmOff = "off"
	// ConfirmMobile: numbers libphonenumber types as MOBILE, and every
	// number a guest or a redirect gives, must press the key.
	ConfirmMobile = "mobile"
	// ConfirmAll: every dialed phone must press the key.
	ConfirmAll = "all"
)

// Confirm-to-join defaults.
const (
	// DefaultConfirmKey is the key that joins.
	DefaultConfirmKey = "1"
	// DefaultConfirmTimeout is the whole wait for the key: the prompt is
	// played twice (ConfirmTries), each followed by half of it.
	DefaultConfirmTimeout = 10 * time.Second
	// ConfirmTries: the prompt is played once and repeated once.
	ConfirmTries = 2
	// DefaultConfirmGrace is how long past the confirm timeout the watchdog
	// waits for the PBX to end or join a confirming leg: room for the
	// prompts themselves (a few seconds each, longer for a recorded
	// announcement) and for the PBX's events.
	DefaultConfirmGrace = 45 * time.Second
)

// ConfirmConfig is confirm-to-join (Config.Confirm).
type ConfirmConfig struct {
	// Mode is ConfirmOff, ConfirmMobile or ConfirmAll; "" is off (the
	// service's default, mobile, is set by its configuration: cmd).
	Mode string
	// Key is the DTMF key that joins: one of 0-9 or * ("" is "1").
	Key string
	// Timeout is the whole wait for the key, over ConfirmTries prompts
	// (0: DefaultConfirmTimeout).
	Timeout time.Duration
	// Prompt is the sound played, in the PBX's own terms (an ARI media URI
	// for Asterisk, a file or file_string:// for FreeSWITCH); "" is the
	// driver's default ("press <key>" from the stock English sounds).
	Prompt string
	// Grace is how long past Timeout the watchdog waits before it hangs up
	// a leg still confirming with no word from the PBX (0:
	// DefaultConfirmGrace).
	Grace time.Duration
}

// ParseConfirmMode reads a CONVOICE_CONFIRM_TO_JOIN value.
func ParseConfirmMode(s string) (string, error) {
	switch m := strings.ToLower(strings.TrimSpace(s)); m {
	case ConfirmOff, ConfirmMobile, ConfirmAll:
		return m, nil
	}
	return "", fmt.Errorf("%q: want off, mobile or all", s)
}

// CheckConfirmKey validates a confirm key: one of 0-9 or *. "#" is
// refused: FreeSWITCH's play_and_get_digits reads it as the end of the
// input, not as a key.
func CheckConfirmKey(k string) error {
	if len(k) != 1 || !strings.Contains("0123456789*", k) {
		if k == "#" {
			return fmt.Errorf("%q: # ends the input on FreeSWITCH and cannot be the key; want one of 0-9 or *", k)
		}
		return fmt.Errorf("%q: want one key, 0-9 or *", k)
	}
	return nil
}

// CheckConfirmTimeout validates the whole wait for the key: at least 2 s
// (1 s after each of the two prompts), at most 2 min.
func CheckConfirmTimeout(d time.Duration) error {
	if d < 2*time.Second || d > 2*time.Minute {
		return fmt.Errorf("%s: want a duration from 2s to 2m (the whole wait for the key, over both prompts)", d)
	}
	return nil
}

// CheckConfirmPrompt validates a prompt: a media name for the PBX, with
// nothing that could break out of a dial string (FreeSWITCH puts it into
// an inline dialplan).
func CheckConfirmPrompt(p string) error {
	if len(p) > 200 {
		return fmt.Errorf("%d characters: want at most 200", len(p))
	}
	if strings.ContainsAny(p, " \t\r\n;'\"{}`\\") {
		return fmt.Errorf("%q: no spaces, quotes, braces, backslashes or ';' (a media name like sound:conf-getpin or file_string://a.wav!b.wav)", p)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%q: no control characters", p)
		}
	}
	return nil
}

// Check validates c as the configuration gives it.
func (c ConfirmConfig) Check() error {
	if c.Mode != "" {
		if _, err := ParseConfirmMode(c.Mode); err != nil {
			return err
		}
	}
	if c.Key != "" {
		if err := CheckConfirmKey(c.Key); err != nil {
			return err
		}
	}
	if c.Timeout != 0 {
		if err := CheckConfirmTimeout(c.Timeout); err != nil {
			return err
		}
	}
	return CheckConfirmPrompt(c.Prompt)
}

// withDefaults fills c's zero fields.
func (c ConfirmConfig) withDefaults() ConfirmConfig {
	c.Mode = strings.ToLower(strings.TrimSpace(c.Mode))
	if c.Mode == "" {
		c.Mode = ConfirmOff
	}
	if c.Key == "" {
		c.Key = DefaultConfirmKey
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultConfirmTimeout
	}
	if c.Grace <= 0 {
		c.Grace = DefaultConfirmGrace
	}
	return c
}

// confirmFor is the Confirm of a dial of number from source, or nil when
// answering joins at once. With ConfirmMobile it asks for the key of
// MOBILE numbers and of every number a guest or a redirect gave: nobody in
// the directory vouched for those, and a voicemail box answering one of
// them would put a stranger's greeting (or its recording) into the mix.
// FIXED_LINE_OR_MOBILE (every US and Canadian number: libphonenumber
// cannot tell them apart) is not MOBILE: see README, "Confirm-to-join".
func (en *Engine) confirmFor(number, source string) *pbx.Confirm {
	c := en.cfg.Confirm
	switch c.Mode {
	case ConfirmAll:
	case ConfirmMobile:
		if source != "guest" && source != "redirect" && !policy.IsMobile(number) {
			return nil
		}
	default:
		return nil
	}
	return &pbx.Confirm{Key: c.Key, Timeout: c.Timeout / ConfirmTries, Tries: ConfirmTries, Prompt: c.Prompt}
}

// unconfirmedReason is the end reason of a leg that answered and never
// pressed the key: what people read of it.
func (en *Engine) unconfirmedReason() string {
	return "answered but nobody pressed " + en.cfg.Confirm.Key + ": probably voicemail"
}

// confirmWatchdog ends legs that have waited for the key past the confirm
// timeout and its grace with no word from the PBX (whose own timeout
// should have hung them up, or the key joined them): a lost event cannot
// leave a leg confirming for ever. Like the ring watchdog, it leaves the
// legs of a node it does not own or cannot reach alone.
func (en *Engine) confirmWatchdog(ctx context.Context) {
	c := en.cfg.Confirm
	legs, err := en.store.StaleConfirmingLegs(ctx, time.Now().UTC().Add(-(c.Timeout + c.Grace)))
	if err != nil {
		return
	}
	for _, l := range legs {
		if !en.ownsLeg(&l) || !en.nodeReady(l.Node) {
			continue
		}
		en.metrics.WatchdogEnds.Inc()
		en.log.Warn("leg waited for the confirm key past the confirm timeout with no word from the PBX; ending it", "leg", l.ID)
		en.applyLeg(ctx, l.ID, leg.EvConfirmTimeout, legInput{reason: en.unconfirmedReason() +
			" (the PBX never reported the end of the prompt)"})
	}
}
