package pbx

import "strings"

// MaskNumber hides the phone numbers in s (a number, a dial string, an
// endpoint) for logs kept at INFO and above: every run of five or more
// digits keeps its first digit and its last two, the rest become "•"
// ("PJSIP/+12025550123@trunk" → "PJSIP/+1••••••••23@trunk"). Enough to
// tell calls apart and see the country, not enough to call anyone; the
// full number is logged at DEBUG only.
func MaskNumber(s string) string {
	var b strings.Builder
	run := 0
	flush := func(end int) {
		digits := s[end-run : end]
		if run < 5 {
			b.WriteString(digits)
		} else {
			b.WriteString(digits[:1] + strings.Repeat("•", run-3) + digits[run-2:])
		}
		run = 0
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			run++
			continue
		}
		if run > 0 {
			flush(i)
		}
		b.WriteByte(s[i])
	}
	if run > 0 {
		flush(len(s))
	}
	return b.String()
}
