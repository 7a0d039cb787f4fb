package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
)

// Who must press the key: with "mobile", numbers libphonenumber types as
// MOBILE and every number a guest or a redirect gives; US and Canadian
// numbers (FIXED_LINE_OR_MOBILE) published or typed by users are not
// asked; "all" asks everyone, "off" (and the zero value) nobody.
func TestConfirmFor_WhoMustPressTheKey(t *testing.T) {
	const (
		us       = "+12025550123" // FIXED_LINE_OR_MOBILE
		ukMobile = "+447400123456"
		ukFixed  = "+442079460000"
	)
	cases := []struct {
		mode, number, source string
		want                 bool
	}{
		{ConfirmMobile, us, "published", false},
		{ConfirmMobile, us, "new_number", false},
		{ConfirmMobile, us, "guest", true},
		{ConfirmMobile, us, "redirect", true},
		{ConfirmMobile, ukMobile, "published", true},
		{ConfirmMobile, ukMobile, "new_number", true},
		{ConfirmMobile, ukFixed, "published", false},
		{ConfirmMobile, ukFixed, "guest", true},
		{ConfirmMobile, "1001", "published", false},
		{ConfirmAll, us, "published", true},
		{ConfirmAll, "1001", "new_number", true},
		{ConfirmOff, ukMobile, "guest", false},
		{"", ukMobile, "guest", false},
	}
	for _, c := range cases {
		en := New(Config{Confirm: ConfirmConfig{Mode: c.mode}}, nil, nil, nil, nil)
		got := en.confirmFor(c.number, c.source)
		if (got != nil) != c.want {
			t.Errorf("mode %q, %s from %s: confirm %+v, want %v", c.mode, c.number, c.source, got, c.want)
		}
		if got != nil && *got != (pbx.Confirm{Key: "1", Timeout: 5 * time.Second, Tries: 2}) {
			t.Errorf("mode %q: confirm %+v, want the defaults: key 1, 2 tries of 5 s (10 s in all), the driver's prompt", c.mode, *got)
		}
	}
	en := New(Config{Confirm: ConfirmConfig{Mode: ConfirmAll, Key: "*", Timeout: 7 * time.Second, Prompt: "sound:conf-getpin"}}, nil, nil, nil, nil)
	if got := en.confirmFor("+12025550123", "published"); *got != (pbx.Confirm{Key: "*", Timeout: 3500 * time.Millisecond, Tries: 2, Prompt: "sound:conf-getpin"}) {
		t.Errorf("configured confirm %+v", *got)
	}
	if r := en.unconfirmedReason(); !strings.Contains(r, "nobody pressed *") || !strings.Contains(r, "voicemail") {
		t.Errorf("unconfirmed reason %q", r)
	}
}

func TestConfirmConfig_CheckRefusesWhatAPBXCannotTake(t *testing.T) {
	bad := []ConfirmConfig{
		{Mode: "sometimes"}, {Key: "#"}, {Key: "12"}, {Key: "a"}, {Timeout: time.Second}, {Timeout: 3 * time.Minute},
		{Prompt: "sound:a b"}, {Prompt: "file_string://a.wav;hangup"}, {Prompt: "x'y"}, {Prompt: "a{b}"}, {Prompt: "a\x01"},
		{Prompt: strings.Repeat("a", 201)},
	}
	for _, c := range bad {
		if err := c.Check(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	good := []ConfirmConfig{
		{}, {Mode: "off"}, {Mode: "MOBILE"}, {Mode: "all", Key: "*", Timeout: 2 * time.Second},
		{Key: "0", Timeout: 2 * time.Minute, Prompt: "sound:conf-getpin"},
		{Prompt: "file_string://voicemail/vm-press.wav!digits/1.wav"}, {Prompt: "tone_stream://%(200,0,800)"},
	}
	for _, c := range good {
		if err := c.Check(); err != nil {
			t.Errorf("%+v refused: %v", c, err)
		}
	}
}
