package pbx

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// DefaultRoutes is the contract's default CONVOICE_DIAL_ROUTES: everything to
// the trunk.
const DefaultRoutes = `.*=PJSIP/{e164}@trunk`

// Route sends numbers matching Pattern to a dial string made from Template.
// Template placeholders: {e164} the number as given ("+12025550123" or an
// extension "1001"), {digits} the same without the leading "+", {ext} the
// number as given (an alias that reads better for extension routes).
type Route struct {
	Pattern  *regexp.Regexp
	Template string
}

// Routes is an ordered list; the first matching pattern wins.
type Routes []Route

// ErrNoRoute: no route matches the number.
var ErrNoRoute = errors.New("no dial route matches the number")

// dialSafe is what a number may contain by the time it reaches a template:
// an optional "+" then ASCII digits. Numbers are validated long before they
// get here; this is the last line of defence so that nothing that could
// change a dial string ("&", "@", "/", ",", letters) ever reaches the PBX.
var dialSafe = regexp.MustCompile(`^\+?[0-9]{1,20}$`)

// ParseRoutes parses "pattern=template;pattern=template". The first "=" of
// each entry separates pattern from template (templates may contain "=" but
// patterns may not). Empty entries are ignored; an empty spec gives
// DefaultRoutes.
func ParseRoutes(spec string) (Routes, error) {
	if strings.TrimSpace(spec) == "" {
		spec = DefaultRoutes
	}
	var rs Routes
	for i, entry := range strings.Split(spec, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		pat, tmpl, ok := strings.Cut(entry, "=")
		if !ok || strings.TrimSpace(pat) == "" || strings.TrimSpace(tmpl) == "" {
			return nil, fmt.Errorf("dial route %d %q: want pattern=template", i+1, entry)
		}
		re, err := regexp.Compile(strings.TrimSpace(pat))
		if err != nil {
			return nil, fmt.Errorf("dial route %d: bad pattern: %w", i+1, err)
		}
		tmpl = strings.TrimSpace(tmpl)
		if !strings.Contains(tmpl, "{e164}") && !strings.Contains(tmpl, "{digits}") && !strings.Contains(tmpl, "{ext}") {
			return nil, fmt.Errorf("dial route %d %q: template has no {e164}, {digits} or {ext}", i+1, tmpl)
		}
		rs = append(rs, Route{Pattern: re, Template: tmpl})
	}
	if len(rs) == 0 {
		return nil, errors.New("no dial routes")
	}
	return rs, nil
}

// DialString returns the dial string for a validated number.
func (rs Routes) DialString(number string) (string, error) {
	if !dialSafe.MatchString(number) {
		return "", fmt.Errorf("number %q is not a plain E.164 number or extension", number)
	}
	for _, r := range rs {
		if r.Pattern.MatchString(number) {
			s := strings.NewReplacer(
				"{e164}", number,
				"{ext}", number,
				"{digits}", strings.TrimPrefix(number, "+"),
			).Replace(r.Template)
			return s, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNoRoute, number)
}

// String gives the spec back in the form ParseRoutes reads.
func (rs Routes) String() string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.Pattern.String() + "=" + r.Template
	}
	return strings.Join(parts, ";")
}
