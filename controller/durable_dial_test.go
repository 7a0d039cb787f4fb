package controller

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// recordingPBX is a driver that accepts everything and records the dials
// and hang-ups it was asked for.
type recordingPBX struct {
	mu      sync.Mutex
	dials   []string
	hangups []string
}

func (*recordingPBX) Kind() string                                   { return "recording" }
func (*recordingPBX) Run(ctx context.Context, _ pbx.Handler) error   { <-ctx.Done(); return ctx.Err() }
func (*recordingPBX) Status() pbx.Status                             { return pbx.Status{Ready: true, Detail: "fake"} }
func (*recordingPBX) CreateConference(context.Context, string) error { return nil }
func (*recordingPBX) SetMute(context.Context, string, string, bool) error {
	return nil
}
func (*recordingPBX) EndConference(context.Context, string) error { return nil }
func (*recordingPBX) Snapshot(context.Context) (pbx.Snapshot, error) {
	return pbx.Snapshot{}, nil
}
func (p *recordingPBX) Dial(_ context.Context, r pbx.DialRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dials = append(p.dials, r.LegID)
	return nil
}
func (p *recordingPBX) Hangup(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hangups = append(p.hangups, id)
	return nil
}

// A dial places its call before the leg's record is on disk (the WAL is
// fsynced behind the writer). When that fsync fails, the request answers
// an error and the call it placed is hung up: no call nothing knows of.
func TestDial_WhoseRecordIsNotDurable_IsHungUpAndAnswersAnError(t *testing.T) {
	ctx := context.Background()
	eio := errors.New("input/output error")
	var diskFails atomic.Bool
	st, err := storage.Open(ctx, filepath.Join(t.TempDir(), "d.db"), storage.Options{
		SyncWAL: func(string) error {
			if diskFails.Load() {
				return eio
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv := &recordingPBX{}
	// Every dial limit off (aliceAndBob): the dial policy then writes
	// nothing, and the one write that fails is the leg's.
	c, a, conv := aliceAndBob(t, st, drv)

	diskFails.Store(true)
	_, err = c.JoinAudio(ctx, a, conv.ID, JoinRequest{Published: "work"})
	if !errors.Is(err, eio) {
		t.Fatalf("join whose record could not be made durable: %v, want the disk's error", err)
	}
	drv.mu.Lock()
	dials, hangups := drv.dials, drv.hangups
	drv.mu.Unlock()
	if len(dials) != 1 {
		t.Fatalf("dials %v: the call is placed before the fsync", dials)
	}
	if len(hangups) != 1 || hangups[0] != dials[0] {
		t.Fatalf("hang-ups %v after the failed fsync of dial %v", hangups, dials)
	}
	// The store refuses to go on (readiness) until restarted.
	if err := st.Ping(ctx); !errors.Is(err, eio) {
		t.Fatalf("store after a failed fsync: %v", err)
	}
}

// aliceAndBob is a controller on st and drv with every dial limit off, and
// a conversation of Alice (published number "work") with Bob: Alice's
// actor and the conversation.
func aliceAndBob(t *testing.T, st *storage.Store, drv pbx.Driver) (*Controller, Actor, ConversationView) {
	t.Helper()
	ctx := context.Background()
	unlimited := PolicyConfig{MaxLiveLegsPerUser: Unlimited, MaxLiveLegsPerGuest: Unlimited,
		MaxLiveLegsPerConversation: Unlimited, MaxLiveLegs: Unlimited, DialsPerUser: Unlimited, DialsPerGuest: Unlimited,
		DialsPerConversation: Unlimited, GuestDialsPerConversation: Unlimited, DialsTotal: Unlimited}
	c := New(Config{Region: "US", Policy: unlimited}, st, NewHub(), []*Node{{Name: "pbx", Weight: 1, Driver: drv}}, nil)
	admin := Actor{Admin: true, Name: "test"}
	alice, err := c.CreateUser(ctx, admin, NewUser{DisplayName: "Alice", Email: "alice@example.com",
		Numbers: []NumberInput{{Label: "work", Number: "+12025550101"}}})
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
	return c, a, conv
}
