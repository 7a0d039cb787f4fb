package controller

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// silentConfirmPBX answers every dial and then says only what the test
// makes it say (Emit): a PBX whose end event for a confirming call is
// lost. Its snapshot holds every dialed call, answered and out of the
// mix, as a real PBX would while the prompt plays.
type silentConfirmPBX struct {
	recordingPBX
	mu       sync.Mutex
	h        pbx.Handler
	requests []pbx.DialRequest
}

func (p *silentConfirmPBX) Run(ctx context.Context, h pbx.Handler) error {
	p.mu.Lock()
	p.h = h
	p.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (p *silentConfirmPBX) Dial(ctx context.Context, r pbx.DialRequest) error {
	p.mu.Lock()
	p.requests = append(p.requests, r)
	p.mu.Unlock()
	return p.recordingPBX.Dial(ctx, r)
}

func (p *silentConfirmPBX) Snapshot(context.Context) (pbx.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := pbx.Snapshot{At: time.Now()}
	for _, r := range p.requests {
		s.Legs = append(s.Legs, pbx.LegSnapshot{LegID: r.LegID, ConferenceID: r.ConferenceID, Answered: true})
	}
	return s, nil
}

func (p *silentConfirmPBX) Emit(e pbx.Event) {
	p.mu.Lock()
	h := p.h
	p.mu.Unlock()
	h.HandleEvent(e)
}

// A confirming leg whose PBX never reports the end (the event was lost)
// does not wait for the key for ever: past the confirm timeout and its
// grace the watchdog hangs it up and it ends unconfirmed, saying why. The
// dial asked the PBX for the key with the configured timeout split over
// the two prompts.
func TestConfirmWatchdog_GivenConfirmingLegAndASilentPBX_ThenItIsHungUpAndEndsUnconfirmed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := storage.Open(ctx, filepath.Join(t.TempDir(), "c.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv := &silentConfirmPBX{}
	unlimited := PolicyConfig{MaxLiveLegsPerUser: Unlimited, MaxLiveLegsPerGuest: Unlimited,
		MaxLiveLegsPerConversation: Unlimited, MaxLiveLegs: Unlimited, DialsPerUser: Unlimited, DialsPerGuest: Unlimited,
		DialsPerConversation: Unlimited, GuestDialsPerConversation: Unlimited, DialsTotal: Unlimited}
	c := New(Config{Region: "US", Policy: unlimited,
		Confirm: ConfirmConfig{Mode: ConfirmAll, Key: "5", Timeout: 2 * time.Second, Grace: time.Second}},
		st, NewHub(), []*Node{{Name: "pbx", Weight: 1, Driver: drv}}, nil)
	runDone := make(chan struct{})
	go func() { _ = c.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()
	waitUntil(t, "the node's lease", 5*time.Second, func() bool { return c.Owner("pbx") })

	admin := Actor{Admin: true, Name: "test"}
	alice, err := c.CreateUser(ctx, admin, NewUser{DisplayName: "Alice", Email: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := c.CreateUser(ctx, admin, NewUser{DisplayName: "Bob", Email: "bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	a := Actor{UserID: alice.ID, Name: "Alice"}
	conv, err := c.CreateConversation(ctx, a, NewConversation{Kind: "im", Participants: []string{bob.ID}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.JoinAudio(ctx, a, conv.ID, JoinRequest{Number: "+12025550190"})
	if err != nil {
		t.Fatal(err)
	}
	legID := res.Leg.ID
	drv.mu.Lock()
	req := drv.requests[0]
	drv.mu.Unlock()
	if req.Confirm == nil || *req.Confirm != (pbx.Confirm{Key: "5", Timeout: time.Second, Tries: 2}) {
		t.Fatalf("dial asked for confirm %+v, want key 5, 2 tries of 1 s, the driver's prompt", req.Confirm)
	}

	drv.Emit(pbx.Event{Type: pbx.EventRinging, LegID: legID, ConferenceID: req.ConferenceID, At: time.Now()})
	answered := time.Now()
	drv.Emit(pbx.Event{Type: pbx.EventAnswered, LegID: legID, ConferenceID: req.ConferenceID, At: answered})
	waitUntil(t, "leg confirming", 5*time.Second, func() bool {
		l, err := st.GetLeg(ctx, legID)
		return err == nil && l.State == storage.LegConfirming
	})
	var l *storage.Leg
	waitUntil(t, "leg unconfirmed by the watchdog", 10*time.Second, func() bool {
		l, err = st.GetLeg(ctx, legID)
		return err == nil && l.State == storage.LegUnconfirmed
	})
	if waited := time.Since(answered); waited < 3*time.Second {
		t.Fatalf("the watchdog ended the leg %v after the answer, before the timeout (2 s) and grace (1 s)", waited)
	}
	if !strings.Contains(l.EndReason, "nobody pressed 5") || !strings.Contains(l.EndReason, "voicemail") {
		t.Fatalf("end reason %q does not say the key was never pressed", l.EndReason)
	}
	if l.AnsweredAt == nil || l.ConnectedAt != nil || l.EndedAt == nil {
		t.Fatalf("answered_at %v connected_at %v ended_at %v", l.AnsweredAt, l.ConnectedAt, l.EndedAt)
	}
	waitUntil(t, "the call hung up on the PBX", 5*time.Second, func() bool {
		drv.recordingPBX.mu.Lock()
		defer drv.recordingPBX.mu.Unlock()
		return slices.Contains(drv.hangups, legID)
	})
	// Its conference ended with it: it was the only call.
	conf, err := st.GetConference(ctx, req.ConferenceID)
	if err != nil || conf.State != storage.ConferenceEnded {
		t.Fatalf("conference %+v %v, want ended with its last call", conf, err)
	}
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
