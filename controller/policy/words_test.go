package policy

import (
	"strings"
	"testing"
)

// Refusals and number errors are in words a person understands: the
// country by its name and code (a UK-looking mobile that is Guernsey's
// reads "Guernsey (+44)", not "GG"), no "region US assumed" for a number
// typed with +, and a hint of what to do.
func TestWords_RefusalsNameTheCountryAndSayWhatToDo(t *testing.T) {
	p := Resolve(Config{AllowedCountries: []string{"US", "GB"}}, "US")
	r := p.NumberRule(Numbers{Region: "US"}, "+447781123456", false)
	if r == nil {
		t.Fatal("a Guernsey number was allowed with US and GB only")
	}
	for _, want := range []string{"Guernsey (+44)", "United Kingdom", "United States", "administrator"} {
		if !strings.Contains(r.Message, want) {
			t.Errorf("refusal %q does not say %q", r.Message, want)
		}
	}
	if strings.Contains(r.Message, " GG") {
		t.Errorf("refusal %q uses the region code", r.Message)
	}

	n := Numbers{Region: "US"}
	for input, want := range map[string][]string{
		"+1 202 555":   {"check the country code"},
		"202 555":      {"United States phone number", "start with + and its country code"},
		"202-555-01a0": {"'a'", "digits only"},
	} {
		_, err := n.Normalize("number", input)
		if err == nil {
			t.Fatalf("%q accepted", input)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %q does not say %q", input, err, w)
			}
		}
		if strings.Contains(err.Error(), "assumed") || strings.Contains(err.Error(), "region") {
			t.Errorf("%q: %q speaks of regions", input, err)
		}
	}
}
