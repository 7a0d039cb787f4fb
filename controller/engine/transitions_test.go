package engine

import (
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/convoice/convoice/leg"
	"github.com/convoice/convoice/storage"
)

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func testEngine() *Engine { return New(Config{}, nil, nil, nil, nil) }

func TestStepLeg_EndStatesFollowTheContractsCauses(t *testing.T) {
	en := testEngine()
	cases := []struct {
		state string
		ours  bool
		cause int
		want  string
	}{
		{storage.LegRinging, false, 17, storage.LegBusy},
		{storage.LegRinging, false, 18, storage.LegNoAnswer},
		{storage.LegRinging, false, 19, storage.LegNoAnswer},
		{storage.LegRinging, false, 21, storage.LegRejected},
		{storage.LegRinging, false, 1, storage.LegFailed},
		{storage.LegRinging, false, 34, storage.LegFailed},
		{storage.LegRinging, false, 0, storage.LegFailed},
		{storage.LegRinging, false, 16, storage.LegFailed},
		{storage.LegRinging, true, 16, storage.LegCancelled},
		{storage.LegDialing, true, 21, storage.LegCancelled},
		{storage.LegConfirming, false, 16, storage.LegUnconfirmed},
		{storage.LegConfirming, true, 16, storage.LegUnconfirmed},
		{storage.LegConnected, false, 16, storage.LegEnded},
		{storage.LegConnected, false, 17, storage.LegEnded},
		{storage.LegConnected, true, 16, storage.LegEnded},
	}
	for _, tc := range cases {
		l := &storage.Leg{State: tc.state, HangupRequested: tc.ours}
		changed, _, ok := en.stepLeg(l, leg.EvEnded, tc.ours, legInput{cause: tc.cause, causeText: "x"})
		if !ok || !changed || l.State != tc.want || l.EndedAt == nil || l.Cause != tc.cause {
			t.Errorf("leg %s (ours %v) ended with cause %d → %s (changed %v, ok %v), want %s", tc.state, tc.ours, tc.cause, l.State, changed, ok, tc.want)
		}
	}
}

// A connected call that ends with cause 0 (a carrier's BYE without a
// Reason header; ARI says "Unknown") reads as a normal end.
func TestStepLeg_ConnectedEndWithCauseZeroIsANormalEnd(t *testing.T) {
	en := testEngine()
	l := &storage.Leg{State: storage.LegConnected}
	en.stepLeg(l, leg.EvEnded, false, legInput{cause: 0, causeText: "Unknown"})
	if l.State != storage.LegEnded || l.Cause != 0 || l.CauseText != leg.NormalEndText {
		t.Fatalf("connected leg ended with cause 0: %s, %d, %q; want ended, 0, %q", l.State, l.Cause, l.CauseText, leg.NormalEndText)
	}
}

func TestStepLeg_AnEventTheTableRefusesIsCountedAndNotApplied(t *testing.T) {
	en := testEngine()
	for _, tc := range []struct {
		state string
		ev    leg.Event
	}{
		{storage.LegConnected, leg.EvRinging},
		{storage.LegEnded, leg.EvConnected},
		{storage.LegBusy, leg.EvEnded},
		{storage.LegConfirming, leg.EvRingTimeout},
	} {
		l := &storage.Leg{State: tc.state}
		before := *l
		changed, st, ok := en.stepLeg(l, tc.ev, false, legInput{cause: 16, reason: "r"})
		if ok || changed || st.hangUp || *l != before {
			t.Errorf("(%s, %s) was applied: %+v", tc.state, tc.ev, l)
		}
		if want := (legCounts{ignored: tc.ev, state: tc.state}); st.counts != want {
			t.Errorf("(%s, %s) left counts %+v, want %+v", tc.state, tc.ev, st.counts, want)
		}
		// Counted once its transaction is durable (afterLeg), not before.
		if n := counterValue(t, en.metrics.LegEventsIgnored.WithLabelValues(tc.state, string(tc.ev))); n != 0 {
			t.Errorf("(%s, %s) counted %v times inside its transaction, want 0", tc.state, tc.ev, n)
		}
		en.afterLeg(context.Background(), "l", tc.ev, nil, st)
		if n := counterValue(t, en.metrics.LegEventsIgnored.WithLabelValues(tc.state, string(tc.ev))); n != 1 {
			t.Errorf("(%s, %s) counted %v times, want 1", tc.state, tc.ev, n)
		}
	}
}

func TestStepLeg_StampsAndOurs(t *testing.T) {
	en := testEngine()
	l := &storage.Leg{State: storage.LegDialing}
	en.stepLeg(l, leg.EvAnswered, false, legInput{})
	if l.State != storage.LegConfirming || l.AnsweredAt == nil || l.RingingAt == nil || l.ConnectedAt != nil {
		t.Fatalf("answered: %+v", l)
	}
	en.stepLeg(l, leg.EvConnected, false, legInput{})
	if l.State != storage.LegConnected || l.ConnectedAt == nil {
		t.Fatalf("connected after confirming: %+v", l)
	}
	// A leg we are hanging up that answers is hung up again, not joined.
	r := &storage.Leg{State: storage.LegRinging}
	if !en.RequestHangup(r, "hung up by Ann") || !r.HangupRequested || r.EndReason != "hung up by Ann" {
		t.Fatalf("hang-up request: %+v", r)
	}
	_, st, ok := en.stepLeg(r, leg.EvConnected, true, legInput{})
	if !ok || !st.hangUp || r.State != storage.LegRinging || r.ConnectedAt != nil {
		t.Fatalf("a leg we hung up answered: %+v, hang up %v", r, st.hangUp)
	}
	if en.RequestHangup(&storage.Leg{State: storage.LegEnded}, "late") {
		t.Fatal("a hang-up request for an ended leg was applied")
	}
}
