package controller

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// snapshotPBX is a driver that keeps what it was asked to place (rooms,
// calls) and shows it in its snapshot, recording hang-ups and room ends.
type snapshotPBX struct {
	mu       sync.Mutex
	rooms    map[string]bool
	legs     map[string]string // leg → room
	dialed   chan string
	hangups  []string
	roomEnds []string
}

func newSnapshotPBX() *snapshotPBX {
	return &snapshotPBX{rooms: map[string]bool{}, legs: map[string]string{}, dialed: make(chan string, 8)}
}

func (*snapshotPBX) Kind() string                                 { return "snapshot" }
func (*snapshotPBX) Run(ctx context.Context, _ pbx.Handler) error { <-ctx.Done(); return ctx.Err() }
func (*snapshotPBX) Status() pbx.Status                           { return pbx.Status{Ready: true, Detail: "fake"} }
func (*snapshotPBX) SetMute(context.Context, string, string, bool) error {
	return nil
}
func (p *snapshotPBX) CreateConference(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rooms[id] = true
	return nil
}
func (p *snapshotPBX) Dial(_ context.Context, r pbx.DialRequest) error {
	p.mu.Lock()
	p.legs[r.LegID] = r.ConferenceID
	p.mu.Unlock()
	p.dialed <- r.LegID
	return nil
}
func (p *snapshotPBX) Hangup(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hangups = append(p.hangups, id)
	delete(p.legs, id)
	return nil
}
func (p *snapshotPBX) EndConference(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.roomEnds = append(p.roomEnds, id)
	delete(p.rooms, id)
	return nil
}
func (p *snapshotPBX) Snapshot(context.Context) (pbx.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s pbx.Snapshot
	for id, room := range p.legs {
		s.Legs = append(s.Legs, pbx.LegSnapshot{LegID: id, ConferenceID: room})
	}
	for id := range p.rooms {
		s.Conferences = append(s.Conferences, id)
	}
	return s, nil
}

// On SQLite a dial places its call once the leg is written, before the
// writer's batch commits (InTxEarly). Given a commit held back (the
// writer's batch window widened), when a resync runs while the call is on
// the PBX and its record not yet visible to other connections, then the
// resync neither hangs the new call up nor destroys its new room.
func TestResync_DuringADialsUncommittedWindow_LeavesTheNewCallAndRoomAlone(t *testing.T) {
	ctx := context.Background()
	var hold atomic.Pointer[chan struct{}]
	holding := make(chan struct{}, 1)
	st, err := storage.Open(ctx, filepath.Join(t.TempDir(), "w.db"), storage.Options{
		BeforeCommit: func() error {
			if ch := hold.Load(); ch != nil {
				select {
				case holding <- struct{}{}:
				default:
				}
				<-*ch
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv := newSnapshotPBX()
	c, a, conv := aliceAndBob(t, st, drv)

	release := make(chan struct{})
	hold.Store(&release)
	type result struct {
		res JoinResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.JoinAudio(ctx, a, conv.ID, JoinRequest{Published: "work"})
		done <- result{res, err}
	}()
	var legID string
	select {
	case legID = <-drv.dialed:
	case <-time.After(10 * time.Second):
		t.Fatal("the dial never reached the PBX")
	}
	select {
	case <-holding:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never reached its commit")
	}
	if _, err := st.GetLeg(ctx, legID); err == nil {
		t.Fatal("the leg is visible before its batch commits: the window this test needs is not there")
	}
	// The call is on the PBX, its record not committed: a resync now.
	c.engine.Resync(ctx, "pbx")

	hold.Store(nil)
	close(release)
	r := <-done
	if r.err != nil || r.res.Leg.ID != legID {
		t.Fatalf("join: %+v, %v", r.res, r.err)
	}
	c.engine.Resync(ctx, "pbx") // and once it is committed
	drv.mu.Lock()
	defer drv.mu.Unlock()
	if slices.Contains(drv.hangups, legID) {
		t.Fatalf("the resync hung up the call it had just placed (hang-ups %v)", drv.hangups)
	}
	if slices.Contains(drv.roomEnds, r.res.Conference.ID) {
		t.Fatalf("the resync destroyed the new conference's room (room ends %v)", drv.roomEnds)
	}
	if len(drv.legs) != 1 {
		t.Fatalf("calls on the PBX: %v", drv.legs)
	}
}
