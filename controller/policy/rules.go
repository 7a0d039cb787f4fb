package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/nyaruka/phonenumbers"
)

// Policy is Config resolved once, at start-up: the country lists and
// prefix sets every dial consults, and the limits (0: off) that the engine
// counts dials against.
type Policy struct {
	countries, guestCountries countries
	blocked, guestTypes       map[phonenumbers.PhoneNumberType]bool
	allow, deny               []string
	guestExtensions           bool

	MaxLegsUser, MaxLegsGuest, MaxLegsConv, MaxLegs              int
	DialsUser, DialsGuest, DialsConv, GuestDialsConv, DialsTotal int
	// GuestDialsMaker: dial-outs to the guests of one user's links;
	// MaxLinksUser, MaxGuestsLink: usable links per user, live guests per
	// link; AccountShare: the percentage of DialsTotal and MaxLegs one
	// account may take.
	GuestDialsMaker, MaxLinksUser, MaxGuestsLink, AccountShare int
	Window                                                     time.Duration
	Now                                                        func() time.Time
}

// Resolve resolves a Config; region is the default region of numbers.
func Resolve(p Config, region string) *Policy {
	if region == "" {
		region = "US"
	}
	allowed := p.AllowedCountries
	if allowed == nil {
		allowed = []string{region}
	}
	guestAllowed := p.GuestAllowedCountries
	if guestAllowed == nil {
		guestAllowed = allowed
	}
	blocked := p.BlockedTypes
	if blocked == nil {
		blocked = DefaultBlockedTypes
	}
	guestTypes := p.GuestAllowedTypes
	if guestTypes == nil {
		guestTypes = DefaultGuestTypes
	}
	set := func(ts []phonenumbers.PhoneNumberType) map[phonenumbers.PhoneNumberType]bool {
		m := map[phonenumbers.PhoneNumberType]bool{}
		for _, t := range ts {
			m[t] = true
		}
		return m
	}
	prefixes := func(list []string) []string {
		var out []string
		for _, s := range list {
			if p, err := normalizePrefix(s); err == nil {
				out = append(out, p)
			}
		}
		return out
	}
	limit := func(v, def int) int {
		switch {
		case v == 0:
			return def
		case v < 0:
			return 0 // off
		}
		return v
	}
	pol := &Policy{
		countries: resolveCountries(allowed), guestCountries: resolveCountries(guestAllowed),
		blocked: set(blocked), guestTypes: set(guestTypes),
		allow: prefixes(p.AllowPrefixes), deny: prefixes(p.DenyPrefixes),
		guestExtensions: p.GuestExtensions,
		MaxLegsUser:     limit(p.MaxLiveLegsPerUser, defaultMaxLiveLegsPerUser),
		MaxLegsGuest:    limit(p.MaxLiveLegsPerGuest, defaultMaxLiveLegsPerGuest),
		MaxLegsConv:     limit(p.MaxLiveLegsPerConversation, defaultMaxLiveLegsPerConversation),
		MaxLegs:         limit(p.MaxLiveLegs, defaultMaxLiveLegs),
		DialsUser:       limit(p.DialsPerUser, defaultDialsPerUser),
		DialsGuest:      limit(p.DialsPerGuest, defaultDialsPerGuest),
		DialsConv:       limit(p.DialsPerConversation, defaultDialsPerConversation),
		GuestDialsConv:  limit(p.GuestDialsPerConversation, defaultGuestDialsPerConversation),
		DialsTotal:      limit(p.DialsTotal, defaultDialsTotal),
		GuestDialsMaker: limit(p.GuestDialsPerLinkMaker, defaultGuestDialsPerLinkMaker),
		MaxLinksUser:    limit(p.MaxJoinLinksPerUser, defaultMaxJoinLinksPerUser),
		MaxGuestsLink:   limit(p.MaxGuestsPerLink, defaultMaxGuestsPerLink),
		AccountShare:    limit(p.AccountSharePercent, defaultAccountSharePercent),
		Window:          p.Window,
	}
	if pol.Window <= 0 {
		pol.Window = time.Minute
	}
	pol.Now = p.Now
	if pol.Now == nil {
		pol.Now = time.Now
	}
	return pol
}

// Limited reports whether some limit is on.
func (p *Policy) Limited() bool {
	for _, l := range []int{p.MaxLegsUser, p.MaxLegsGuest, p.MaxLegsConv, p.MaxLegs,
		p.DialsUser, p.DialsGuest, p.DialsConv, p.GuestDialsConv, p.DialsTotal, p.GuestDialsMaker, p.AccountShareOf(p.DialsTotal),
		p.AccountShareOf(p.MaxLegs)} {
		if l > 0 {
			return true
		}
	}
	return false
}

// AccountShareOf is the part of a service-wide limit one account may take
// (0: no such cap, when the limit or the share is off): at least 1.
func (p *Policy) AccountShareOf(limit int) int {
	if limit <= 0 || p.AccountShare <= 0 || p.AccountShare >= 100 {
		return 0
	}
	return max(1, limit*p.AccountShare/100)
}

func hasPrefix(list []string, number string) (string, bool) {
	for _, p := range list {
		if strings.HasPrefix(number, p) {
			return p, true
		}
	}
	return "", false
}

// Refusal is a policy decision against a dial: the rule, words for the
// caller, and the detail kept in the audit log.
type Refusal struct {
	Rule, Message, Detail string
}

// Err is the refusal as the caller gets it: 403, or 429 for a rate limit.
func (r *Refusal) Err() *core.Error {
	kind := core.KindForbidden
	if r.Rule == RuleRateLimited {
		kind = core.KindRateLimited
	}
	return &core.Error{Kind: kind, Code: r.Rule, Message: r.Message}
}

// IsGuestSource: the strict rules apply to guests and to any source this
// code does not know.
func IsGuestSource(source string) bool {
	switch source {
	case "published", "new_number", "redirect":
		return false
	}
	return true
}

// NumberRule applies the number rules (deny list, country, type,
// extensions) to number; nil allows. It trusts nothing about its input:
// whatever it allows is a plain E.164 number or a digits-only extension
// that fully matches the extension pattern.
func (p *Policy) NumberRule(n Numbers, number string, guest bool) *Refusal {
	if pre, ok := hasPrefix(p.deny, number); ok {
		return &Refusal{RuleNumberNotAllowed, fmt.Sprintf("%s is on this service's list of numbers that can't be called", number), "deny " + pre}
	}
	if !strings.HasPrefix(number, "+") {
		if !isExtension(n, number) {
			return &Refusal{RuleNumberNotAllowed, "this is neither a full international number (+ and country code) nor one of the company's extensions", "not e164 or extension"}
		}
		if guest && !p.guestExtensions {
			return &Refusal{RuleExtensionNotAllowed, "internal extensions cannot be called from a join link; give a phone number", "extension"}
		}
		return nil
	}
	digits := number[1:]
	if len(digits) < 2 || len(digits) > 15 || strings.Trim(digits, "0123456789") != "" {
		return &Refusal{RuleNumberNotAllowed, "this is neither a full international number (+ and country code) nor one of the company's extensions", "not e164"}
	}
	f, ok := e164Facts(number)
	if !ok || !f.valid {
		return &Refusal{RuleNumberNotAllowed, "this is not a phone number that exists; check the country code and the digits", "not valid e164"}
	}
	region, code, typ := f.region, f.code, f.typ
	// Named for people, with the country code: a UK mobile that
	// libphonenumber places in Guernsey reads "Guernsey (+44)", not "GG".
	where := RegionName(region) + " (+" + strconv.Itoa(code) + ")"
	if region == "001" || region == "" {
		where = "the non-geographic +" + strconv.Itoa(code) + " range"
	}
	if guest {
		if !p.guestCountries.allows(region, code) {
			return &Refusal{RuleCountryNotAllowed, fmt.Sprintf("this number is in %s, and a join link can only call numbers in %s; give a number there", where, p.guestCountries),
				"country " + where}
		}
		if !p.guestTypes[typ] {
			return &Refusal{RuleNumberTypeNotAllowed, fmt.Sprintf("this is a %s number, which a join link can't call; give a landline or mobile number", typeWords(typ)),
				"type " + NumberTypeName(typ)}
		}
		return nil
	}
	if !p.countries.allows(region, code) {
		if _, ok := hasPrefix(p.allow, number); !ok {
			return &Refusal{RuleCountryNotAllowed, fmt.Sprintf("this number is in %s; calls can only go to %s here — ask your administrator if you need to reach it", where, p.countries),
				"country " + where}
		}
	}
	if p.blocked[typ] {
		return &Refusal{RuleNumberTypeNotAllowed, fmt.Sprintf("this is a %s number, which can't be called from here — ask your administrator if you need to reach it", typeWords(typ)), "type " + NumberTypeName(typ)}
	}
	return nil
}

// isExtension: ASCII digits only, at most 15, matched whole by the pattern.
func isExtension(n Numbers, s string) bool {
	if n.Extensions == nil || s == "" || len(s) > 15 || strings.Trim(s, "0123456789") != "" {
		return false
	}
	loc := n.Extensions.FindStringIndex(s)
	return loc != nil && loc[0] == 0 && loc[1] == len(s)
}

// NumberKind says what a number is for the audit log: "US
// FIXED_LINE_OR_MOBILE", "extension".
func NumberKind(number string) string {
	if !strings.HasPrefix(number, "+") {
		return "extension"
	}
	f, ok := e164Facts(number)
	if !ok {
		return "unparsable"
	}
	return f.region + " " + NumberTypeName(f.typ)
}

func typeWords(t phonenumbers.PhoneNumberType) string {
	return strings.ToLower(strings.ReplaceAll(NumberTypeName(t), "_", " "))
}
