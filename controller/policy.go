package controller

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nyaruka/phonenumbers"

	"github.com/convoice/convoice/storage"
)

// DialCheck is what the dial policy is asked before any leg is written or
// dialed.
type DialCheck struct {
	Actor          Actor
	ConversationID string
	UserID         *string
	GuestID        *string
	// Number is validated E.164 (or a configured extension).
	Number string
	// Source: "published", "new_number", "redirect" or "guest".
	Source string
}

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

// Unlimited, as a PolicyConfig limit, switches that limit off.
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

// PolicyConfig is the dial policy: what may be dialed, by whom, how often.
// Its zero value is the safe default: the default region only, the
// DefaultBlockedTypes refused, guests held to DefaultGuestTypes and no
// extensions, and every limit at its default. A limit of 0 takes the
// default, Unlimited (-1) switches it off.
type PolicyConfig struct {
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

	// now is the policy's clock (tests move it); nil: time.Now.
	now func() time.Time
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
)

// grantTTL bounds how long an allowed dial whose leg was never written (the
// request failed in between) still counts as a call up.
const grantTTL = 15 * time.Second

// Check validates the configuration's lists (for start-up errors that
// name the culprit).
func (p PolicyConfig) Check() error {
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
		out = append(out, r)
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

// policy is PolicyConfig resolved once, at New.
type policy struct {
	countries, guestCountries countries
	blocked, guestTypes       map[phonenumbers.PhoneNumberType]bool
	allow, deny               []string
	guestExtensions           bool

	maxLegsUser, maxLegsGuest, maxLegsConv, maxLegs              int
	dialsUser, dialsGuest, dialsConv, guestDialsConv, dialsTotal int
	window                                                       time.Duration
	now                                                          func() time.Time
}

func resolvePolicy(p PolicyConfig, region string) *policy {
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
	pol := &policy{
		countries: resolveCountries(allowed), guestCountries: resolveCountries(guestAllowed),
		blocked: set(blocked), guestTypes: set(guestTypes),
		allow: prefixes(p.AllowPrefixes), deny: prefixes(p.DenyPrefixes),
		guestExtensions: p.GuestExtensions,
		maxLegsUser:     limit(p.MaxLiveLegsPerUser, defaultMaxLiveLegsPerUser),
		maxLegsGuest:    limit(p.MaxLiveLegsPerGuest, defaultMaxLiveLegsPerGuest),
		maxLegsConv:     limit(p.MaxLiveLegsPerConversation, defaultMaxLiveLegsPerConversation),
		maxLegs:         limit(p.MaxLiveLegs, defaultMaxLiveLegs),
		dialsUser:       limit(p.DialsPerUser, defaultDialsPerUser),
		dialsGuest:      limit(p.DialsPerGuest, defaultDialsPerGuest),
		dialsConv:       limit(p.DialsPerConversation, defaultDialsPerConversation),
		guestDialsConv:  limit(p.GuestDialsPerConversation, defaultGuestDialsPerConversation),
		dialsTotal:      limit(p.DialsTotal, defaultDialsTotal),
		window:          p.Window,
	}
	if pol.window <= 0 {
		pol.window = time.Minute
	}
	pol.now = p.now
	if pol.now == nil {
		pol.now = time.Now
	}
	return pol
}

// limited: some limit is on.
func (p *policy) limited() bool {
	for _, l := range []int{p.maxLegsUser, p.maxLegsGuest, p.maxLegsConv, p.maxLegs,
		p.dialsUser, p.dialsGuest, p.dialsConv, p.guestDialsConv, p.dialsTotal} {
		if l > 0 {
			return true
		}
	}
	return false
}

func hasPrefix(list []string, number string) (string, bool) {
	for _, p := range list {
		if strings.HasPrefix(number, p) {
			return p, true
		}
	}
	return "", false
}

// refusal is a policy decision against a dial: the rule, words for the
// caller, and the detail kept in the audit log.
type refusal struct {
	rule, message, detail string
}

func (r *refusal) err() *Error {
	kind := KindForbidden
	if r.rule == RuleRateLimited {
		kind = KindRateLimited
	}
	return &Error{Kind: kind, Code: r.rule, Message: r.message}
}

// isGuestSource: the strict rules apply to guests and to any source this
// code does not know.
func isGuestSource(source string) bool {
	switch source {
	case "published", "new_number", "redirect":
		return false
	}
	return true
}

// numberRule applies the number rules (deny list, country, type,
// extensions) to number; nil allows. It trusts nothing about its input:
// whatever it allows is a plain E.164 number or a digits-only extension
// that fully matches the extension pattern.
func (p *policy) numberRule(n Numbers, number string, guest bool) *refusal {
	if pre, ok := hasPrefix(p.deny, number); ok {
		return &refusal{RuleNumberNotAllowed, fmt.Sprintf("%s may not be called (it is on the deny list)", number), "deny " + pre}
	}
	if !strings.HasPrefix(number, "+") {
		if !isExtension(n, number) {
			return &refusal{RuleNumberNotAllowed, "only E.164 numbers and internal extensions can be called", "not e164 or extension"}
		}
		if guest && !p.guestExtensions {
			return &refusal{RuleExtensionNotAllowed, "internal extensions cannot be called from a join link; give a phone number", "extension"}
		}
		return nil
	}
	digits := number[1:]
	if len(digits) < 2 || len(digits) > 15 || strings.Trim(digits, "0123456789") != "" {
		return &refusal{RuleNumberNotAllowed, "only E.164 numbers and internal extensions can be called", "not e164"}
	}
	f, ok := e164Facts(number)
	if !ok || !f.valid {
		return &refusal{RuleNumberNotAllowed, "only valid E.164 numbers can be called", "not valid e164"}
	}
	region, code, typ := f.region, f.code, f.typ
	where := region
	if region == "001" || region == "" {
		where = "+" + strconv.Itoa(code) + " (non-geographic)"
	}
	if guest {
		if !p.guestCountries.allows(region, code) {
			return &refusal{RuleCountryNotAllowed, fmt.Sprintf("numbers in %s cannot be called from a join link (allowed: %s)", where, p.guestCountries),
				"country " + where}
		}
		if !p.guestTypes[typ] {
			return &refusal{RuleNumberTypeNotAllowed, fmt.Sprintf("a %s number cannot be called from a join link; give a landline or mobile number", typeWords(typ)),
				"type " + NumberTypeName(typ)}
		}
		return nil
	}
	if !p.countries.allows(region, code) {
		if _, ok := hasPrefix(p.allow, number); !ok {
			return &refusal{RuleCountryNotAllowed, fmt.Sprintf("numbers in %s cannot be called (allowed: %s)", where, p.countries),
				"country " + where}
		}
	}
	if p.blocked[typ] {
		return &refusal{RuleNumberTypeNotAllowed, fmt.Sprintf("%s numbers cannot be called", typeWords(typ)), "type " + NumberTypeName(typ)}
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

// numberKind says what a number is for the audit log: "US
// FIXED_LINE_OR_MOBILE", "extension".
func numberKind(number string) string {
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

// checkDial applies the dial policy; nil allows, and then counts the dial
// against the limits (the grant is released when the leg is written, see
// dialed). Every refusal is audited.
func (c *Controller) checkDial(ctx context.Context, d DialCheck) error {
	guest := isGuestSource(d.Source) || d.GuestID != nil
	p := c.policy
	if r := p.numberRule(c.numbers, d.Number, guest); r != nil {
		c.auditRefusal(ctx, nil, d, r)
		return r.err()
	}
	if !p.limited() {
		return nil // nothing to count: no transaction, no grant
	}
	var ref *refusal
	err := c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.LockDialPolicy(ctx); err != nil {
			return err
		}
		var err error
		ref, err = c.countDial(ctx, tx, p, d, guest)
		if err != nil {
			return err
		}
		if ref != nil {
			return c.auditRefusal(ctx, tx, d, ref)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if ref != nil {
		return ref.err()
	}
	return nil
}

// countDial checks the caps and rates inside the policy lock and, when the
// dial is within them, records its grant.
func (c *Controller) countDial(ctx context.Context, tx *storage.Store, p *policy, d DialCheck, guest bool) (*refusal, error) {
	now := p.now().UTC()
	// Forget grants no limit looks at any more (an index range delete).
	if err := tx.DeleteDialGrantsBefore(ctx, now.Add(-max(p.window, grantTTL)-time.Minute)); err != nil {
		return nil, err
	}
	who := storage.DialScope{}
	whoWord := "you have"
	maxLegs, maxDials := p.maxLegsUser, p.dialsUser
	switch {
	case d.GuestID != nil:
		who.GuestID = *d.GuestID
		maxLegs, maxDials = p.maxLegsGuest, p.dialsGuest
	case d.UserID != nil:
		who.UserID = *d.UserID
	default:
		maxLegs, maxDials = 0, 0 // nobody to count against; the other limits still hold
	}
	conv := storage.DialScope{ConversationID: d.ConversationID}
	// Calls up at once: live legs, plus dials allowed whose leg is not
	// written yet.
	live := func(sc storage.DialScope) (int64, error) {
		n, err := tx.CountLiveLegsIn(ctx, sc)
		if err != nil {
			return 0, err
		}
		m, err := tx.CountDialGrants(ctx, sc, now.Add(-grantTTL), true)
		return n + m, err
	}
	caps := []struct {
		scope storage.DialScope
		max   int
		name  string
		words string
	}{
		{who, maxLegs, "max_live_legs_per_caller", whoWord + " %d calls up already; hang one up first"},
		{conv, p.maxLegsConv, "max_live_legs_per_conversation", "this conversation has %d calls up already"},
		{storage.DialScope{}, p.maxLegs, "max_live_legs", "convoice has %d calls up, its limit; try again when some have ended"},
	}
	for _, cp := range caps {
		if cp.max <= 0 {
			continue
		}
		n, err := live(cp.scope)
		if err != nil {
			return nil, err
		}
		if n >= int64(cp.max) {
			return &refusal{RuleTooManyCalls, fmt.Sprintf(cp.words, n), fmt.Sprintf("%s=%d", cp.name, cp.max)}, nil
		}
	}
	since := now.Add(-p.window)
	guests := storage.DialScope{ConversationID: d.ConversationID, AnyGuest: true}
	rates := []struct {
		scope storage.DialScope
		max   int
		name  string
		words string
	}{
		{who, maxDials, "dials_per_caller", "you have placed %d calls in the last %s"},
		{conv, p.dialsConv, "dials_per_conversation", "this conversation has placed %d calls in the last %s"},
		{storage.DialScope{}, p.dialsTotal, "dials_total", "convoice has placed %d calls in the last %s, its limit"},
	}
	if guest {
		rates = append(rates, struct {
			scope storage.DialScope
			max   int
			name  string
			words string
		}{guests, p.guestDialsConv, "guest_dials_per_conversation", "guests of this conversation have placed %d calls in the last %s"})
	}
	for _, r := range rates {
		if r.max <= 0 {
			continue
		}
		n, err := tx.CountDialGrants(ctx, r.scope, since, false)
		if err != nil {
			return nil, err
		}
		if n >= int64(r.max) {
			wait := p.window
			if oldest, err := tx.OldestDialGrant(ctx, r.scope, since); err == nil && !oldest.IsZero() {
				wait = oldest.Add(p.window).Sub(now)
			}
			return &refusal{RuleRateLimited,
				fmt.Sprintf(r.words+"; try again in %s", n, p.window, wait.Round(time.Second)+time.Second),
				fmt.Sprintf("%s=%d/%s", r.name, r.max, p.window)}, nil
		}
	}
	g := &storage.DialGrant{ID: NewID(), At: now, ConversationID: d.ConversationID, Number: d.Number,
		UserID: who.UserID, GuestID: who.GuestID}
	return nil, tx.CreateDialGrant(ctx, g)
}

// dialed is told by dial, right after the leg's transaction, what became
// of an allowed dial: the grant is released either way (a written leg
// counts for itself), and a written leg is audited as a dial-out.
func (c *Controller) dialed(ctx context.Context, a Actor, convID string, t dialTarget, leg *storage.Leg, err error) {
	ctx = context.WithoutCancel(ctx)
	werr := c.store.InTx(ctx, func(tx *storage.Store) error {
		if err != nil || leg == nil {
			return tx.ReleaseDialGrant(ctx, dialScope(convID, t), t.number)
		}
		return c.dialedTx(ctx, tx, a, convID, t, leg)
	})
	if werr != nil {
		c.log.Error("recording a dial-out failed", "conversation", convID, "err", werr)
	}
}

// dialedTx records a leg's dial-out in the transaction that creates the
// leg: the audit entry, and the dial's reservation released (the live leg
// counts from now on). Doing it there keeps a second write transaction out
// of the path between the request and the originate.
func (c *Controller) dialedTx(ctx context.Context, tx *storage.Store, a Actor, convID string, t dialTarget, leg *storage.Leg) error {
	// With every limit off checkDial made no grant: nothing to release.
	if c.policy.limited() {
		if err := tx.ReleaseDialGrant(ctx, dialScope(convID, t), t.number); err != nil {
			return err
		}
	}
	return c.AuditTx(ctx, tx, AuditEntry{Actor: a, GuestID: deref(t.guestID), Action: ActionDial, ConversationID: convID,
		TargetID: leg.ID, Number: t.number, Source: t.source, Detail: numberKind(t.number)})
}

func dialScope(convID string, t dialTarget) storage.DialScope {
	sc := storage.DialScope{ConversationID: convID}
	if t.guestID != nil {
		sc.GuestID = *t.guestID
	} else if t.userID != nil {
		sc.UserID = *t.userID
	}
	return sc
}

// auditRefusal records a refused dial (in tx when given).
func (c *Controller) auditRefusal(ctx context.Context, tx *storage.Store, d DialCheck, r *refusal) error {
	e := AuditEntry{Actor: d.Actor, GuestID: deref(d.GuestID), Action: ActionDialRefused, ConversationID: d.ConversationID,
		Number: d.Number, Source: d.Source, Rule: r.rule, Detail: r.detail}
	if tx != nil {
		return c.AuditTx(ctx, tx, e)
	}
	c.Audit(ctx, e)
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
