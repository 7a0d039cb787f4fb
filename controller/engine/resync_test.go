package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/convoice/convoice/leg"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// applyLegs ends many legs in batches through the table, as applyLeg does
// one by one: each leg ends with the reason, a conference whose last leg
// ended ends with it, one that keeps a live leg stays; a leg the store does
// not have (its batch fails) does not keep the others of its batch from
// ending.
func TestApplyLegs_EndsEveryLegInBatchesAndTheConferencesThatEmpty(t *testing.T) {
	ctx := context.Background()
	st, err := storage.Open(ctx, filepath.Join(t.TempDir(), "engine.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	en := New(Config{}, st, nil, nil, nil)

	u := &storage.User{ID: "u1", DisplayName: "A", Email: "a@x.com", Role: storage.RoleUser}
	if err := st.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	old := time.Now().UTC().Add(-time.Hour)
	var legs []storage.Leg
	confs := map[string]int{"emptied": 2*resyncBatch + 1, "kept": 10, "single": 1}
	for name, n := range confs {
		c := &storage.Conversation{ID: "conv-" + name, Kind: storage.KindIM, CreatorID: u.ID}
		if err := st.CreateConversation(ctx, c, []storage.Participant{{ConversationID: c.ID, UserID: u.ID, Role: storage.RoleOrganizer}}); err != nil {
			t.Fatal(err)
		}
		conf := &storage.Conference{ID: name, ConversationID: c.ID, State: storage.ConferenceActive, CreatedBy: u.ID, Node: "n1"}
		if err := st.CreateConference(ctx, conf); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			l := storage.Leg{ID: fmt.Sprintf("%s-%03d", name, i), ConferenceID: conf.ID, ConversationID: c.ID, Node: "n1",
				Number: "+12025550100", State: storage.LegConnected, CreatedAt: old, ConnectedAt: &old, UpdatedAt: old}
			if err := st.CreateLeg(ctx, &l); err != nil {
				t.Fatal(err)
			}
			if name == "kept" && i == 0 {
				continue // stays live: its conference stays active
			}
			legs = append(legs, l)
		}
	}
	legs = append(legs, storage.Leg{ID: "not-in-the-store", ConversationID: "conv-emptied"})

	en.applyLegs(ctx, legs, leg.EvResyncGone, legInput{reason: "gone"})

	// Each end is counted once, those of the failed batch (applied again
	// one by one) too.
	if n := counterValue(t, en.metrics.LegEnds.WithLabelValues(storage.LegEnded)); n != float64(len(legs)-1) {
		t.Errorf("leg ends counted %v times, want %d: once per leg", n, len(legs)-1)
	}

	for _, want := range legs[:len(legs)-1] {
		l, err := st.GetLeg(ctx, want.ID)
		if err != nil || l.State != storage.LegEnded || l.EndReason != "gone" || l.EndedAt == nil {
			t.Fatalf("leg %s after applyLegs: %+v %v; want ended, reason \"gone\"", want.ID, l, err)
		}
	}
	if l, err := st.GetLeg(ctx, "kept-000"); err != nil || l.State != storage.LegConnected {
		t.Fatalf("leg left out: %+v %v; want connected", l, err)
	}
	for name, want := range map[string]string{"emptied": storage.ConferenceEnded, "single": storage.ConferenceEnded, "kept": storage.ConferenceActive} {
		if c, err := st.GetConference(ctx, name); err != nil || c.State != want {
			t.Errorf("conference %s: %+v %v; want %s", name, c, err, want)
		}
	}
}

// The conference is read for an answer only when it can change the
// table's rule: a connected leg's duplicate "connected" does not need it,
// a ringing leg's answer does (it is hung up when its conference ended).
func TestOursMatters(t *testing.T) {
	for _, tc := range []struct {
		state leg.State
		ev    leg.Event
		want  bool
	}{
		{leg.Connected, leg.EvConnected, false},
		{leg.Connected, leg.EvResyncInConference, false},
		{leg.Confirming, leg.EvAnswered, false},
		{leg.Ringing, leg.EvConnected, true},
		{leg.Ringing, leg.EvAnswered, true},
		{leg.Dialing, leg.EvResyncInConference, true},
		{leg.Confirming, leg.EvConnected, true},
	} {
		if got := oursMatters(tc.state, tc.ev); got != tc.want {
			t.Errorf("oursMatters(%s, %s) = %v, want %v", tc.state, tc.ev, got, tc.want)
		}
	}
}

// A catch-up resync asks the PBX for every call: the first comes at once,
// the second at the next tick, and while they fail they back off,
// doubling up to 16 s (never slower than the periodic resync).
func TestCatchUpBackoff_DoublesUpTo16s(t *testing.T) {
	want := map[int64]time.Duration{0: 0, 1: 0, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second,
		5: 16 * time.Second, 6: 16 * time.Second, 1000: 16 * time.Second}
	for failures, d := range want {
		if got := catchUpBackoff(failures); got != d {
			t.Errorf("catchUpBackoff(%d) = %s, want %s", failures, got, d)
		}
		if catchUpBackoff(failures) >= periodicResync {
			t.Errorf("catchUpBackoff(%d) is not shorter than the periodic resync", failures)
		}
	}
}

// snapshotDriver is a node whose Snapshot fails with err, or finds
// nothing; the resync calls nothing else of an empty node.
type snapshotDriver struct {
	pbx.Driver
	err error
}

func (d snapshotDriver) Snapshot(context.Context) (pbx.Snapshot, error) {
	return pbx.Snapshot{At: time.Now()}, d.err
}

// Given two nodes, when one node's resyncs keep failing while the other's
// succeed, then the failing node backs off by its own failures (2, 4, 8 s
// after the second, third and fourth), and the other node's successes do
// not reset it to a catch-up every second.
func TestCatchUp_ANodeBacksOffByItsOwnFailuresWhateverTheOthersDo(t *testing.T) {
	ctx := context.Background()
	st, err := storage.Open(ctx, filepath.Join(t.TempDir(), "engine.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bad := &Node{Name: "bad", Driver: snapshotDriver{err: pbx.ErrUnavailable}}
	good := &Node{Name: "good", Driver: snapshotDriver{}}
	en := New(Config{}, st, nil, []*Node{bad, good}, nil)

	en.storeBehind() // a transition failed
	now := time.Now()
	for i, wantWait := range []time.Duration{0, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		if !bad.catchUp.due(now) || !good.catchUp.due(now) {
			t.Fatalf("round %d: both nodes marked behind should be due at %s", i, now)
		}
		before := time.Now()
		en.Resync(ctx, "bad")
		en.Resync(ctx, "good")
		if good.catchUp.due(now.Add(time.Hour)) {
			t.Fatalf("round %d: the node whose resync succeeded is still marked behind", i)
		}
		if wantWait > 0 && bad.catchUp.due(before.Add(wantWait-time.Millisecond)) {
			t.Fatalf("round %d: the failing node is due again before %s", i, wantWait)
		}
		now = time.Now().Add(wantWait)
		en.storeBehind() // and the good node too, for the next round
	}
	if n := bad.catchUp.fails.Load(); n != 4 {
		t.Fatalf("the failing node counts %d failures in a row, want 4", n)
	}
}
