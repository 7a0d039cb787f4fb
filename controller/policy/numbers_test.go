package policy

import (
	"regexp"
	"strings"
	"testing"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/pbx"
)

func TestNormalize_AcceptsWhatPeopleTypeAndGivesE164(t *testing.T) {
	n := Numbers{Region: "US", Extensions: regexp.MustCompile(`^[0-9]{4}$`)}
	for in, want := range map[string]string{
		"+1 202 555 0101":   "+12025550101",
		"(202) 555-0101":    "+12025550101",
		"202.555.0101":      "+12025550101",
		" +12025550101 ":    "+12025550101",
		"+44 20 7946 0958":  "+442079460958",
		"+33 6 12 34 56 78": "+33612345678", // a French mobile: mobiles work like any other
		"1001":              "1001",         // internal extension
	} {
		got, err := n.Normalize("number", in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestNormalize_RefusesHostileAndWrongInputNamingTheField(t *testing.T) {
	n := Numbers{Region: "US", Extensions: regexp.MustCompile(`^[0-9]{4}$`)}
	for _, in := range []string{
		"", "   ", "12", "+1", "abc", "+1 202 CALL NOW", "1-800-FLOWERS",
		"+12025550101&Local/x@evil", "+12025550101@trunk", "PJSIP/1001", "+12025550101/1",
		"+12025550101,1", "+12025550101;x", "+12025550101|x", "1001@lab", "10 01",
		"+１２０２５５５０１０１", "٠١٢٣٤٥٦٧٨٩", "+1202555010１", "+999 123 456",
		"+" + strings.Repeat("1", 40), strings.Repeat("2", 33), "+1 202 555 01011111",
		"\x00+12025550101", "+12025550101\n", "++12025550101", "+12025550101\x00",
		"1001\r\n", "${DIAL}", "+1 (202) 555-0101 ext. 12",
	} {
		_, err := n.Normalize("number", in)
		e, ok := core.AsError(err)
		if !ok || e.Kind != core.KindInvalid || e.Field != "number" || !strings.Contains(e.Message, "number") {
			t.Errorf("Normalize(%q) = %v; want a 400 naming the field", in, err)
		}
	}
}

func FuzzNormalize_NeverLetsADialStringCharacterThrough(f *testing.F) {
	for _, s := range []string{"+12025550101", "(202) 555-0101", "1001", "+1&x", "+１２", "@/"} {
		f.Add(s)
	}
	n := Numbers{Region: "US", Extensions: regexp.MustCompile(`^[0-9]{4}$`)}
	routes, _ := pbx.ParseRoutes(pbx.DefaultRoutes)
	f.Fuzz(func(t *testing.T, in string) {
		out, err := n.Normalize("number", in)
		if err != nil {
			return
		}
		if !regexp.MustCompile(`^\+?[0-9]{1,15}$`).MatchString(out) {
			t.Fatalf("Normalize(%q) = %q: not a plain number", in, out)
		}
		ds, err := routes.DialString(out)
		if err != nil || ds != "PJSIP/"+out+"@trunk" {
			t.Fatalf("dial string %q, %v", ds, err)
		}
	})
}
