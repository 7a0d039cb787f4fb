package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/nyaruka/phonenumbers"
)

func TestPolicy_ConfigListsParseAndRefuseNonsense(t *testing.T) {
	if got, err := ParseCountries(" US, gb ;+44 "); err != nil || strings.Join(got, "|") != "US|gb|+44" {
		t.Errorf("ParseCountries: %v %v", got, err)
	}
	for _, bad := range []string{"XX", "USA", "+0", "+999", "+1234", "U$"} {
		if _, err := ParseCountries(bad); err == nil {
			t.Errorf("ParseCountries(%q) accepted", bad)
		}
	}
	if got, err := ParseNumberTypes("premium_rate, Shared-Cost"); err != nil || len(got) != 2 || got[0] != phonenumbers.PREMIUM_RATE || got[1] != phonenumbers.SHARED_COST {
		t.Errorf("ParseNumberTypes: %v %v", got, err)
	}
	if got, err := ParseNumberTypes("none"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("ParseNumberTypes(none) = %#v, %v; want an empty, non-nil list", got, err)
	}
	if _, err := ParseNumberTypes("PREMIUM"); err == nil {
		t.Errorf("ParseNumberTypes accepted PREMIUM")
	}
	if got, err := ParsePrefixes("+1 900, +44 (9)"); err != nil || strings.Join(got, "|") != "+1900|+449" {
		t.Errorf("ParsePrefixes: %v %v", got, err)
	}
	for _, bad := range []string{"+", "+1&", "1900@x", "+44 9 /"} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("ParsePrefixes(%q) accepted", bad)
		}
	}
	if err := (Config{AllowedCountries: []string{"ZZ"}}).Check(); err == nil {
		t.Errorf("Check accepted an unknown region")
	}
	if err := (Config{DenyPrefixes: []string{"+1;x"}}).Check(); err == nil {
		t.Errorf("Check accepted a bad prefix")
	}
}

func TestPolicy_DefaultsAreTheSafeOnes(t *testing.T) {
	p := Resolve(Config{}, "GB")
	if !p.countries.regions["GB"] || len(p.countries.regions) != 1 || len(p.countries.codes) != 0 {
		t.Errorf("default countries %v, want the default region only", p.countries)
	}
	for _, typ := range DefaultBlockedTypes {
		if !p.blocked[typ] {
			t.Errorf("%s not blocked by default", NumberTypeName(typ))
		}
	}
	if len(p.guestTypes) != 3 || p.guestExtensions || len(p.allow) != 0 {
		t.Errorf("guest defaults: types %v, extensions %v, allow %v", p.guestTypes, p.guestExtensions, p.allow)
	}
	if p.MaxLegsUser != defaultMaxLiveLegsPerUser || p.MaxLegs != defaultMaxLiveLegs || p.DialsUser != defaultDialsPerUser ||
		p.DialsTotal != defaultDialsTotal || p.GuestDialsConv != defaultGuestDialsPerConversation || p.Window != time.Minute {
		t.Errorf("default limits %+v", p)
	}
	if off := Resolve(Config{MaxLiveLegsPerUser: Unlimited, MaxLiveLegsPerGuest: Unlimited,
		MaxLiveLegsPerConversation: Unlimited, MaxLiveLegs: Unlimited, DialsPerUser: Unlimited, DialsPerGuest: Unlimited,
		DialsPerConversation: Unlimited, GuestDialsPerConversation: Unlimited, DialsTotal: Unlimited}, "US"); off.MaxLegs != 0 || off.DialsUser != 0 {
		t.Errorf("Unlimited does not switch limits off: %+v", off)
	}
}
