package engine

import (
	"testing"

	"github.com/convoice/convoice/storage"
)

func TestEndStateFor_MapsCausesAsTheContractSays(t *testing.T) {
	ringing := func() *storage.Leg { return &storage.Leg{State: storage.LegRinging} }
	cases := []struct {
		leg   *storage.Leg
		cause int
		want  string
	}{
		{ringing(), 17, storage.LegBusy},
		{ringing(), 18, storage.LegNoAnswer},
		{ringing(), 19, storage.LegNoAnswer},
		{ringing(), 21, storage.LegRejected},
		{ringing(), 1, storage.LegFailed},
		{ringing(), 34, storage.LegFailed},
		{ringing(), 38, storage.LegFailed},
		{ringing(), 0, storage.LegFailed},
		{ringing(), 16, storage.LegFailed},
		{&storage.Leg{State: storage.LegRinging, HangupRequested: true}, 16, storage.LegCancelled},
		{&storage.Leg{State: storage.LegDialing, HangupRequested: true}, 21, storage.LegCancelled},
		{&storage.Leg{State: storage.LegConnected}, 16, storage.LegEnded},
		{&storage.Leg{State: storage.LegConnected}, 17, storage.LegEnded},
		{&storage.Leg{State: storage.LegConnected, HangupRequested: true}, 16, storage.LegEnded},
	}
	for _, tc := range cases {
		if got := endStateFor(tc.leg, tc.cause); got != tc.want {
			t.Errorf("leg %s (hangup requested %v) cause %d → %s, want %s", tc.leg.State, tc.leg.HangupRequested, tc.cause, got, tc.want)
		}
	}
}
