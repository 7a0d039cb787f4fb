package pbx

import "testing"

func TestMaskNumber_HidesAllButTheFirstAndLastTwoDigitsOfLongRuns(t *testing.T) {
	for in, want := range map[string]string{
		"PJSIP/+12025550123@trunk":          "PJSIP/+1••••••••23@trunk",
		"sofia/gateway/pbx/+447700900123":   "sofia/gateway/pbx/+4•••••••••23",
		"PJSIP/1007":                        "PJSIP/1007",
		"{origination_uuid=abc}PJSIP/12345": "{origination_uuid=abc}PJSIP/1••45",
		"":                                  "",
	} {
		if got := MaskNumber(in); got != want {
			t.Errorf("MaskNumber(%q) = %q, want %q", in, got, want)
		}
	}
}
