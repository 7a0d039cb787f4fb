package emuphone

import (
	"testing"
	"time"
)

func TestGivenContractNumbersWhenLookedUpThenTheRecordedCarrier(t *testing.T) {
	fast := Timing{Ring: 10 * time.Millisecond, EarlyMedia: 30 * time.Millisecond,
		DigitAfter: 20 * time.Millisecond, VoicemailHold: 90 * time.Millisecond}
	cases := []struct {
		dial string
		want Phone
	}{
		{"PJSIP/+12025550183@trunk", Phone{Outcome: Answer, EarlyMedia: 30 * time.Millisecond, Cause: 16}},
		{"sofia/gateway/pbx/+12025550187", Phone{Outcome: Unavailable, EarlyMedia: 30 * time.Millisecond, Cause: 19, SIPStatus: 480}},
		{"+12025550111", Phone{Outcome: Answer, Ring: 10 * time.Millisecond, Cause: 16,
			Digits: "1", DigitAfter: 20 * time.Millisecond, DigitLength: 160 * time.Millisecond}},
		{"PJSIP/+12025550190@trunk", Phone{Outcome: AnswerThenHangup, Ring: 10 * time.Millisecond, Hold: 90 * time.Millisecond, Cause: 16}},
		{"+12025550121", Phone{Outcome: Answer, Ring: 10 * time.Millisecond, Cause: 16}},
	}
	for _, c := range cases {
		if got := ForEndpoint(c.dial, fast); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.dial, got, c.want)
		}
	}
	// Unset timings take the recorded values.
	p := ForEndpoint("+12025550183", Timing{})
	if p.EarlyMedia != 3*time.Second {
		t.Errorf("0183 early media by default %v, want 3s", p.EarlyMedia)
	}
	if p := ForNumber("+12025550190", time.Second, time.Second); p.Hold != 40*time.Second || p.Ring != time.Second {
		t.Errorf("0190 via ForNumber: %+v, want ring 1s and BYE 40s after answering", p)
	}
	if ForNumber("+12025550187", 0, 0).Answers() || !ForNumber("+12025550183", 0, 0).Answers() {
		t.Error("Answers: 0187 must not answer, 0183 must")
	}
}
