package policy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nyaruka/phonenumbers"
)

// The codes of dial refusals: each names the rule that refused. All are
// 403 but rate_limited (429).
const (
	// RuleNumberNotAllowed: the number is on the deny list, or is not a
	// plain E.164 number or configured extension.
	RuleNumberNotAllowed = "number_not_allowed"
	// RuleCountryNotAllowed: the number's country is not allowed (and no
	// allow-list prefix admits it).
	RuleCountryNotAllowed = "country_not_allowed"
	// RuleNumberTypeNotAllowed: premium rate, shared cost, … (or, for
	// guests, anything but fixed lines and mobiles).
	RuleNumberTypeNotAllowed = "number_type_not_allowed"
	// RuleExtensionNotAllowed: guests cannot dial internal extensions.
	RuleExtensionNotAllowed = "extension_not_allowed"
	// RuleTooManyCalls: a cap on calls up at once (per user, per guest, per
	// conversation, or for the whole service).
	RuleTooManyCalls = "too_many_calls"
	// RuleRateLimited: too many dial-outs in the rate window.
	RuleRateLimited = "rate_limited"
)

// Unlimited, as a Config limit, switches that limit off.
const Unlimited = -1

// DefaultBlockedTypes are the number types nobody may dial unless the
// configuration says otherwise: the ones that bill the caller at a rate set
// by the called party (the money in toll fraud and revenue-share scams),
// numbers that forward anywhere, and everything without a known type.
// TOLL_FREE and VOIP stay dialable for users (a colleague's number may be
// either); guests have their own, shorter list.
var DefaultBlockedTypes = []phonenumbers.PhoneNumberType{
	phonenumbers.PREMIUM_RATE,    // +1 900, UK 09…: the classic
	phonenumbers.SHARED_COST,     // UK 084/087: caller pays part, revenue share
	phonenumbers.PERSONAL_NUMBER, // UK 070, US 5XX: forward anywhere, revenue share
	phonenumbers.UAN,             // universal access numbers: charged, forwarded
	phonenumbers.PAGER,
	phonenumbers.VOICEMAIL, // voicemail access numbers: an attack tool, never a participant
	phonenumbers.UNKNOWN,
}

// DefaultGuestTypes are the only number types a guest (join link) may have
// called: fixed lines and mobiles.
var DefaultGuestTypes = []phonenumbers.PhoneNumberType{
	phonenumbers.FIXED_LINE, phonenumbers.MOBILE, phonenumbers.FIXED_LINE_OR_MOBILE,
}

// Config is the dial policy: what may be dialed, by whom, how often.
// Its zero value is the safe default: the default region only, the
// DefaultBlockedTypes refused, guests held to DefaultGuestTypes and no
// extensions, and every limit at its default. A limit of 0 takes the
// default, Unlimited (-1) switches it off.
type Config struct {
	// AllowedCountries are the countries numbers may be in: ISO 3166
	// region codes ("US", "GB"), matched against the region of the number,
	// or calling codes ("+44"), which admit every region sharing the code.
	// nil: the default region only. A region is stricter than its calling
	// code: "US" does not admit +1 876 (Jamaica) or +1 809 (Dominican
	// Republic), which "+1" would.
	AllowedCountries []string
	// BlockedTypes are number types refused for users. nil:
	// DefaultBlockedTypes; an empty, non-nil list blocks none.
	BlockedTypes []phonenumbers.PhoneNumberType
	// AllowPrefixes are E.164 prefixes ("+4420") dialable by users even
	// outside AllowedCountries. Number types are still checked, and guests
	// get no such exception.
	AllowPrefixes []string
	// DenyPrefixes are never dialed, by anyone: E.164 prefixes ("+1900"),
	// or digit prefixes of extensions ("9"). The deny list wins over every
	// other rule.
	DenyPrefixes []string
	// GuestAllowedCountries are the countries of numbers given by guests.
	// nil: AllowedCountries.
	GuestAllowedCountries []string
	// GuestAllowedTypes are the number types guests may give. nil:
	// DefaultGuestTypes.
	GuestAllowedTypes []phonenumbers.PhoneNumberType
	// GuestExtensions lets guests be called on internal extensions.
	GuestExtensions bool

	// Calls up at once (dialing, ringing or connected).
	MaxLiveLegsPerUser         int // across all conversations; default 3
	MaxLiveLegsPerGuest        int // default 1
	MaxLiveLegsPerConversation int // default 100
	MaxLiveLegs                int // the whole service; default 500

	// Dial-outs per Window.
	DialsPerUser              int // default 10
	DialsPerGuest             int // default 3
	DialsPerConversation      int // default 60
	GuestDialsPerConversation int // all guests of one conversation together; default 10
	DialsTotal                int // the whole service; default 600
	// Window is the rate window (default 1 minute).
	Window time.Duration

	// What one account can spend through join links. A guest's dial is
	// charged to the user who made the link as well as to the guest and the
	// conversation: the guests of one user's links together get
	// GuestDialsPerLinkMaker dial-outs per Window (default 30).
	GuestDialsPerLinkMaker int
	// MaxJoinLinksPerUser caps the usable (not revoked, expired or used up)
	// join links one user has made (default 20).
	MaxJoinLinksPerUser int
	// MaxGuestsPerLink caps the guests of one link in the conversation at
	// once, waiting or admitted (default 50).
	MaxGuestsPerLink int
	// AccountSharePercent: one account — a user with the guests of their
	// links — may take at most this share of DialsTotal per Window and of
	// MaxLiveLegs at once, so no account alone reaches a service-wide cap
	// (default 20).
	AccountSharePercent int

	// Now is the policy's clock (tests move it); nil: time.Now.
	Now func() time.Time
}

// Default limits.
const (
	defaultMaxLiveLegsPerUser         = 3
	defaultMaxLiveLegsPerGuest        = 1
	defaultMaxLiveLegsPerConversation = 100
	defaultMaxLiveLegs                = 500
	defaultDialsPerUser               = 10
	defaultDialsPerGuest              = 3
	defaultDialsPerConversation       = 60
	defaultGuestDialsPerConversation  = 10
	defaultDialsTotal                 = 600
	defaultGuestDialsPerLinkMaker     = 30
	defaultMaxJoinLinksPerUser        = 20
	defaultMaxGuestsPerLink           = 50
	defaultAccountSharePercent        = 20
)

// Check validates the configuration's lists (for start-up errors that
// name the culprit).
func (p Config) Check() error {
	for name, list := range map[string][]string{"allowed countries": p.AllowedCountries, "guest allowed countries": p.GuestAllowedCountries} {
		for _, c := range list {
			if _, _, err := parseCountry(c); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	for name, list := range map[string][]string{"allow prefixes": p.AllowPrefixes, "deny prefixes": p.DenyPrefixes} {
		for _, pre := range list {
			if _, err := normalizePrefix(pre); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	if p.AccountSharePercent > 100 {
		return fmt.Errorf("account share %d%%: at most 100", p.AccountSharePercent)
	}
	if p.Window < 0 {
		return fmt.Errorf("rate window %s: must be positive", p.Window)
	}
	return nil
}

// ParseCountries reads a comma-separated list of regions and calling codes
// ("US, CA, +44"); "" gives nil (the default).
func ParseCountries(s string) ([]string, error) {
	var out []string
	for _, f := range splitList(s) {
		if _, _, err := parseCountry(f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// ParseNumberTypes reads a comma-separated list of number type names
// (PREMIUM_RATE, shared_cost, …); "none" is the empty list, "" gives nil
// (the default).
func ParseNumberTypes(s string) ([]phonenumbers.PhoneNumberType, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if strings.EqualFold(s, "none") {
		return []phonenumbers.PhoneNumberType{}, nil
	}
	var out []phonenumbers.PhoneNumberType
	for _, f := range splitList(s) {
		t, ok := numberTypeByName[strings.ToUpper(strings.ReplaceAll(f, "-", "_"))]
		if !ok {
			return nil, fmt.Errorf("%q is not a number type (one of %s)", f, strings.Join(NumberTypeNames(), ", "))
		}
		out = append(out, t)
	}
	return out, nil
}

// ParsePrefixes reads a comma-separated list of number prefixes ("+1900,
// +44 9"); "" gives nil.
func ParsePrefixes(s string) ([]string, error) {
	var out []string
	for _, f := range splitList(s) {
		p, err := normalizePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// NumberTypeNames lists the number type names ParseNumberTypes knows.
func NumberTypeNames() []string {
	out := make([]string, 0, len(numberTypeByName))
	for n := range numberTypeByName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// NumberTypeName names a number type as the configuration does.
func NumberTypeName(t phonenumbers.PhoneNumberType) string {
	for n, v := range numberTypeByName {
		if v == t {
			return n
		}
	}
	return "UNKNOWN"
}

var numberTypeByName = map[string]phonenumbers.PhoneNumberType{
	"FIXED_LINE": phonenumbers.FIXED_LINE, "MOBILE": phonenumbers.MOBILE,
	"FIXED_LINE_OR_MOBILE": phonenumbers.FIXED_LINE_OR_MOBILE, "TOLL_FREE": phonenumbers.TOLL_FREE,
	"PREMIUM_RATE": phonenumbers.PREMIUM_RATE, "SHARED_COST": phonenumbers.SHARED_COST,
	"VOIP": phonenumbers.VOIP, "PERSONAL_NUMBER": phonenumbers.PERSONAL_NUMBER,
	"PAGER": phonenumbers.PAGER, "UAN": phonenumbers.UAN, "VOICEMAIL": phonenumbers.VOICEMAIL,
	"UNKNOWN": phonenumbers.UNKNOWN,
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseCountry reads "US" (a region) or "+44" / "44" (a calling code).
func parseCountry(s string) (region string, code int, err error) {
	s = strings.TrimSpace(s)
	digits := strings.TrimPrefix(s, "+")
	if digits != "" && strings.Trim(digits, "0123456789") == "" {
		cc, err := strconv.Atoi(digits)
		if err != nil || cc <= 0 || len(digits) > 3 || phonenumbers.GetRegionCodeForCountryCode(cc) == "ZZ" {
			return "", 0, fmt.Errorf("%q is not a country calling code", s)
		}
		return "", cc, nil
	}
	r := strings.ToUpper(s)
	if len(r) != 2 || phonenumbers.GetCountryCodeForRegion(r) == 0 {
		return "", 0, fmt.Errorf("%q is not a region code (like US or GB) or a calling code (like +44)", s)
	}
	return r, 0, nil
}

// normalizePrefix reads "+44 20" as "+4420", "9" as "9".
func normalizePrefix(s string) (string, error) {
	var b strings.Builder
	for i, r := range strings.TrimSpace(s) {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		default:
			return "", fmt.Errorf("prefix %q: digits with an optional leading + only", s)
		}
	}
	p := b.String()
	if p == "" || p == "+" {
		return "", fmt.Errorf("prefix %q is empty", s)
	}
	return p, nil
}

// countries is a resolved country list.
type countries struct {
	regions map[string]bool
	codes   map[int]bool
}

func resolveCountries(list []string) countries {
	c := countries{regions: map[string]bool{}, codes: map[int]bool{}}
	for _, s := range list {
		// Entries that do not parse are dropped: an allow list only ever
		// shrinks by a mistake (Check reports them at start-up).
		if r, cc, err := parseCountry(s); err == nil {
			if r != "" {
				c.regions[r] = true
			} else {
				c.codes[cc] = true
			}
		}
	}
	return c
}

func (c countries) allows(region string, code int) bool { return c.regions[region] || c.codes[code] }

func (c countries) String() string {
	var out []string
	for r := range c.regions {
		out = append(out, RegionName(r))
	}
	for cc := range c.codes {
		out = append(out, "+"+strconv.Itoa(cc))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
