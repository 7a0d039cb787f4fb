package policy

import (
	"fmt"
	"golang.org/x/text/language"
	"golang.org/x/text/language/display"
	"regexp"
	"strings"
	"sync"

	"github.com/convoice/convoice/controller/core"
	"github.com/nyaruka/phonenumbers"
)

// maxNumberInput bounds what we even try to parse: the longest E.164 number
// is 15 digits; with "+", spaces and punctuation 32 is generous.
const maxNumberInput = 32

// Numbers normalises what people type into E.164 (or a configured internal
// extension). Everything that reaches a dial string passes through here.
type Numbers struct {
	Region     string         // default region for numbers without "+", e.g. "US"
	Extensions *regexp.Regexp // internal extensions, e.g. ^[0-9]{3,5}$; nil: none
}

// Normalize returns the E.164 form of input, or the extension itself when
// it matches the extension pattern. field names the request field for the
// error.
func (n Numbers) Normalize(field, input string) (string, error) {
	s := strings.Trim(input, " \t") // a newline or other control character is refused below
	if s == "" {
		return "", core.Invalid(field, "%s: a phone number is required", field)
	}
	if len(s) > maxNumberInput {
		return "", core.Invalid(field, "%s: too long to be a phone number (at most %d characters)", field, maxNumberInput)
	}
	// Only ASCII digits and the punctuation people write numbers with. This
	// refuses letters (vanity numbers are not dialed), Unicode digits that
	// the parser would silently fold into ASCII ones, and every character
	// that means something in a dial string (& @ / , ; | ! etc.).
	for i, r := range s {
		switch {
		case r >= '0' && r <= '9':
		case r == '+' && i == 0:
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		default:
			return "", core.Invalid(field, "%s: %q can't be part of a phone number; type digits only (spaces and dashes are fine), with + and the country code for a number abroad", field, r)
		}
	}
	if n.Extensions != nil && !strings.HasPrefix(s, "+") && n.Extensions.MatchString(s) {
		return s, nil
	}
	region := n.Region
	if region == "" {
		region = "US"
	}
	num, err := phonenumbers.Parse(s, region)
	if err != nil || !phonenumbers.IsValidNumber(num) {
		if strings.HasPrefix(s, "+") {
			return "", core.Invalid(field, "%s: %q is not a phone number that exists; check the country code and the digits after it", field, input)
		}
		return "", core.Invalid(field, "%s: %q is not a %s phone number; for a number in another country, start with + and its country code", field, input, RegionName(region))
	}
	return phonenumbers.Format(num, phonenumbers.E164), nil
}

// Labels a published number may have.
var numberLabels = map[string]bool{"work": true, "mobile": true, "home": true, "other": true}

// CheckLabel validates a published number's label.
func CheckLabel(field, label string) (string, error) {
	l := strings.ToLower(strings.TrimSpace(label))
	if !numberLabels[l] {
		return "", core.Invalid(field, "%s: label %q is not one of work, mobile, home, other", field, label)
	}
	return l, nil
}

// DescribeNumber is for log lines and audit: the number's country and type.
func DescribeNumber(e164 string) string {
	f, ok := e164Facts(e164)
	if !ok {
		return "extension"
	}
	return fmt.Sprintf("%s/%d", f.region, f.typ)
}

// IsMobile reports whether libphonenumber types an E.164 number as
// MOBILE (not FIXED_LINE_OR_MOBILE, the type of every US and Canadian
// number, nor an extension): confirm-to-join's "mobile" mode.
func IsMobile(e164 string) bool {
	f, ok := e164Facts(e164)
	return ok && f.valid && f.typ == phonenumbers.MOBILE
}

// numberFacts is what the dial policy and the audit need to know of an
// E.164 number.
type numberFacts struct {
	parsed bool
	valid  bool // a valid number, written in its E.164 form
	region string
	code   int
	typ    phonenumbers.PhoneNumberType
}

// factsCache remembers numberFacts by number. Working them out (the type
// is a match against every pattern of the country's metadata) took a tenth
// of a millisecond, twice per dial, and people dial the same published
// numbers again and again. The metadata never changes, so an entry never
// goes stale; the cache is simply emptied when it grows past factsCacheMax.
var factsCache = struct {
	sync.Mutex
	m map[string]numberFacts
}{m: map[string]numberFacts{}}

const factsCacheMax = 50_000

// e164Facts parses an E.164 number; ok is false when it does not parse.
func e164Facts(number string) (numberFacts, bool) {
	factsCache.Lock()
	f, hit := factsCache.m[number]
	factsCache.Unlock()
	if hit {
		return f, f.parsed
	}
	num, err := phonenumbers.Parse(number, "")
	if err == nil {
		f = numberFacts{
			parsed: true,
			valid:  phonenumbers.IsValidNumber(num) && phonenumbers.Format(num, phonenumbers.E164) == number,
			region: phonenumbers.GetRegionCodeForNumber(num),
			code:   int(num.GetCountryCode()),
			typ:    phonenumbers.GetNumberType(num),
		}
	}
	factsCache.Lock()
	if len(factsCache.m) >= factsCacheMax {
		clear(factsCache.m)
	}
	factsCache.m[number] = f
	factsCache.Unlock()
	return f, f.parsed
}

// RegionName is a region's name for people ("GG" → "Guernsey"), or the
// code itself when it has none.
func RegionName(region string) string {
	r, err := language.ParseRegion(region)
	if err != nil {
		return region
	}
	if name := display.English.Regions().Name(r); name != "" && name != "World" {
		return name
	}
	return region
}
