package pbxtest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/convoice/convoice/pbx"
)

// PassiveDriver is a driver that can also run passive.
type PassiveDriver interface {
	pbx.Driver
	pbx.Passive
}

// Replicas is what the passive scenarios need of one kind of PBX: two
// drivers of one node, one holding the event link and one passive.
type Replicas struct {
	// Owner records the events of the driver that holds the event link.
	Owner *Recorder
	// Passive is running RunPassive and ready.
	Passive PassiveDriver
	// Conference, Leg and Number: a room, a leg id valid for this PBX
	// and a number the PBX answers.
	Conference, Leg, Number string
	// Connected, when not nil, checks the PBX once the owner heard the
	// leg connected (e.g. that it sits in its room).
	Connected func(t testing.TB, leg string)
	// MutedOnPBX says whether the PBX has the leg muted.
	MutedOnPBX func(leg string) bool
}

// PassiveCommands: the passive replica says so in its status and refuses
// Run while RunPassive runs; it creates the room, dials, mutes and hangs
// up, and the owner hears every outcome — connected, then ended.
func PassiveCommands(t testing.TB, r Replicas) {
	t.Helper()
	p := r.Passive
	if st := p.Status(); !strings.Contains(st.Detail, "passive") {
		t.Errorf("passive status detail = %q", st.Detail)
	}
	if err := p.Run(context.Background(), r.Owner); err == nil {
		t.Fatal("Run while RunPassive runs: want an error")
	}
	ctx := Ctx(t)
	if err := p.CreateConference(ctx, r.Conference); err != nil {
		t.Fatalf("CreateConference through the passive driver: %v", err)
	}
	if err := p.Dial(ctx, pbx.DialRequest{LegID: r.Leg, ConferenceID: r.Conference, Number: r.Number,
		CallerIDName: "Convoice Test", CallerIDNumber: "+12025550100"}); err != nil {
		t.Fatalf("Dial through the passive driver: %v", err)
	}
	r.Owner.WaitEvent(t, r.Leg, pbx.EventConnected)
	if r.Connected != nil {
		r.Connected(t, r.Leg)
	}
	if err := p.SetMute(ctx, r.Conference, r.Leg, true); err != nil {
		t.Fatalf("mute through the passive driver: %v", err)
	}
	if !r.MutedOnPBX(r.Leg) {
		t.Fatalf("leg %s not muted on the PBX", r.Leg)
	}
	if err := p.Hangup(ctx, r.Leg); err != nil {
		t.Fatalf("hangup through the passive driver: %v", err)
	}
	r.Owner.WaitEvent(t, r.Leg, pbx.EventEnded)
}

// PassiveFollowsNode: a passive driver's readiness follows the node. When
// the node stops answering it is not ready and Dial fails at once with
// pbx.ErrUnavailable; when the node answers again it is ready and serves
// Snapshot.
func PassiveFollowsNode(t testing.TB, p PassiveDriver, setUnresponsive func(bool), leg, conf, number string) {
	t.Helper()
	setUnresponsive(true)
	WaitNotReady(t, p)
	err := p.Dial(Ctx(t), pbx.DialRequest{LegID: leg, ConferenceID: conf, Number: number})
	if !errors.Is(err, pbx.ErrUnavailable) {
		t.Fatalf("dial while the node does not answer: %v, want ErrUnavailable", err)
	}
	setUnresponsive(false)
	WaitReady(t, p)
	if _, err := p.Snapshot(Ctx(t)); err != nil {
		t.Fatalf("snapshot through the passive driver: %v", err)
	}
}
