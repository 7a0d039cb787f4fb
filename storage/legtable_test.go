package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/convoice/convoice/leg"
	"github.com/convoice/convoice/storage/pgtest"
)

func TestMigration5_IndexesTheTablesLiveStates(t *testing.T) {
	if got := sqlList(leg.Live()); got != liveStatesOfMigration5 {
		t.Fatalf("the leg table's live states are %s, migration 5 indexed %s: add a migration that recreates "+
			"ux_leg_live_user, ux_leg_live_guest and migration 23's ix_leg_live_* (PostgreSQL) with the new set", got, liveStatesOfMigration5)
	}
}

func openLegTest(t *testing.T, dsn string) *Store {
	t.Helper()
	if dsn == "" {
		dsn = pgtest.DSN(t, filepath.Join(t.TempDir(), "legs.db"))
	}
	s, err := Open(context.Background(), dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// seedConference makes a user, a conversation and an active conference.
func seedConference(t testing.TB, s *Store, tag string) (*User, *Conference) {
	t.Helper()
	ctx := context.Background()
	id := tag + time.Now().Format("150405.000000000")
	u := &User{ID: "u-" + id, DisplayName: "A", Email: id + "@x.com", Role: RoleUser}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	c := &Conversation{ID: "c-" + id, Kind: KindIM, CreatorID: u.ID}
	if err := s.CreateConversation(ctx, c, []Participant{{ConversationID: c.ID, UserID: u.ID, Role: RoleOrganizer}}); err != nil {
		t.Fatal(err)
	}
	conf := &Conference{ID: "cf-" + id, ConversationID: c.ID, State: ConferenceActive, CreatedBy: u.ID, Node: "n-" + id}
	if err := s.CreateConference(ctx, conf); err != nil {
		t.Fatal(err)
	}
	return u, conf
}

// Every query of live legs answers the table's live states, the ring
// watchdog's the states the ring timeout applies to, and a confirming leg
// counts as a person's live call.
func TestLiveLegQueries_FollowTheLegTable(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	_, conf := seedConference(t, s, "q")
	old := time.Now().UTC().Add(-time.Hour)
	byID := map[string]string{}
	for _, st := range leg.States {
		l := &Leg{ID: conf.ID + "-" + st, ConferenceID: conf.ID, ConversationID: conf.ConversationID, Node: conf.Node,
			Number: "+12025550100", State: st, CreatedAt: old, UpdatedAt: old}
		if err := s.CreateLeg(ctx, l); err != nil {
			t.Fatalf("create %s leg: %v", st, err)
		}
		byID[l.ID] = st
	}
	states := func(ls []Leg) []string {
		var out []string
		for _, l := range ls {
			out = append(out, byID[l.ID])
		}
		slices.Sort(out)
		return out
	}
	sorted := func(ss []string) []string { ss = slices.Clone(ss); slices.Sort(ss); return ss }
	live, err := s.LiveLegs(ctx, conf.ID)
	if err != nil || !slices.Equal(states(live), sorted(leg.Live())) {
		t.Errorf("LiveLegs: %v %v, want %v", states(live), err, leg.Live())
	}
	all, err := s.AllLiveLegs(ctx, conf.Node)
	if err != nil || !slices.Equal(states(all), sorted(leg.Live())) {
		t.Errorf("AllLiveLegs: %v %v, want %v", states(all), err, leg.Live())
	}
	counts, err := s.CountLiveLegs(ctx)
	if err != nil || counts[conf.Node] != len(leg.Live()) {
		t.Errorf("CountLiveLegs: %v %v, want %d", counts[conf.Node], err, len(leg.Live()))
	}
	n, err := s.CountLiveLegsIn(ctx, DialScope{ConversationID: conf.ConversationID})
	if err != nil || int(n) != len(leg.Live()) {
		t.Errorf("CountLiveLegsIn: %d %v, want %d", n, err, len(leg.Live()))
	}
	byConf, err := s.CountLiveLegsByConference(ctx)
	if err != nil || byConf[conf.ID] != len(leg.Live()) {
		t.Errorf("CountLiveLegsByConference: %v %v, want %d", byConf[conf.ID], err, len(leg.Live()))
	}
	if has, err := s.HasLiveLeg(ctx, conf.ID); err != nil || !has {
		t.Errorf("HasLiveLeg: %v %v, want true", has, err)
	}
	stale, err := s.StaleRingingLegs(ctx, time.Now().UTC())
	var mine []Leg
	for _, l := range stale {
		if l.ConferenceID == conf.ID {
			mine = append(mine, l)
		}
	}
	if err != nil || !slices.Equal(states(mine), sorted(leg.Accepting(leg.EvRingTimeout))) {
		t.Errorf("StaleRingingLegs: %v %v, want %v", states(mine), err, leg.Accepting(leg.EvRingTimeout))
	}
	for _, st := range leg.States {
		if LegLive(st) != slices.Contains(leg.Live(), st) {
			t.Errorf("LegLive(%s) = %v", st, LegLive(st))
		}
	}
}

func TestLegs_AConfirmingLegIsThePersonsLiveCallAndAnsweredAtIsKept(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	u, conf := seedConference(t, s, "c")
	now := time.Now().UTC().Truncate(time.Millisecond)
	first := &Leg{ID: conf.ID + "-1", ConferenceID: conf.ID, ConversationID: conf.ConversationID, UserID: &u.ID,
		Number: "+12025550100", State: LegConfirming, CreatedAt: now, UpdatedAt: now, AnsweredAt: &now}
	if err := s.CreateLeg(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := &Leg{ID: conf.ID + "-2", ConferenceID: conf.ID, ConversationID: conf.ConversationID, UserID: &u.ID,
		Number: "+12025550100", State: LegDialing, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateLeg(ctx, second); !errors.Is(err, ErrConflict) {
		t.Fatalf("a second live leg beside a confirming one: %v, want ErrConflict", err)
	}
	got, err := s.LiveLegOfUser(ctx, conf.ID, u.ID)
	if err != nil || got.ID != first.ID || got.AnsweredAt == nil || !got.AnsweredAt.Equal(now) {
		t.Fatalf("LiveLegOfUser: %+v %v, want the confirming leg with answered_at %v", got, err, now)
	}
	later := now.Add(time.Second)
	got.State, got.EndedAt = LegUnconfirmed, &later
	if err := s.SaveLeg(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLeg(ctx, second); err != nil {
		t.Fatalf("a new leg once the confirming one ended unconfirmed: %v", err)
	}
	back, err := s.GetLeg(ctx, first.ID)
	if err != nil || back.State != LegUnconfirmed || back.AnsweredAt == nil || !back.AnsweredAt.Equal(now) {
		t.Fatalf("saved leg: %+v %v", back, err)
	}
}

// A database made before the table (migrations up to 4) gets answered_at
// and the new live set.
func TestMigration5_UpgradesAVersion4Database(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v4.db")
	all := migrations
	migrations = slices.DeleteFunc(slices.Clone(all), func(m migration) bool { return m.version >= 5 })
	s4, err := Open(ctx, path, Options{})
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s4.SchemaVersion(ctx); v != 4 {
		t.Fatalf("schema version %d, want 4", v)
	}
	// The legs table of migration 1 as it was released, without answered_at.
	if err := s4.DB().Exec(`ALTER TABLE legs DROP COLUMN answered_at`).Error; err != nil {
		t.Fatal(err)
	}
	s4.Close()
	s := openLegTest(t, path)
	if v, _ := s.SchemaVersion(ctx); v < 5 {
		t.Fatalf("schema version %d after reopening, want 5", v)
	}
	if !s.DB().Migrator().HasColumn(&Leg{}, "AnsweredAt") {
		t.Fatal("no answered_at column after migration 5")
	}
	u, conf := seedConference(t, s, "m")
	now := time.Now().UTC()
	for i, st := range []string{LegConfirming, LegRinging} {
		err := s.CreateLeg(ctx, &Leg{ID: conf.ID + "-" + st, ConferenceID: conf.ID, ConversationID: conf.ConversationID,
			UserID: &u.ID, Number: "+12025550100", State: st, CreatedAt: now, UpdatedAt: now})
		if i == 1 && !errors.Is(err, ErrConflict) {
			t.Fatalf("second live leg beside a confirming one after the upgrade: %v, want ErrConflict", err)
		}
	}
}

// A conference whose legs all ended has no live leg and no count; a hang-up
// we asked for is pending only on a live leg, on its node, changed before
// the given time.
func TestLiveLegQueries_EndedLegsAndPendingHangups(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	_, conf := seedConference(t, s, "p")
	old := time.Now().UTC().Add(-time.Hour)
	mk := func(id, state string, hungUp bool) *Leg {
		l := &Leg{ID: conf.ID + "-" + id, ConferenceID: conf.ID, ConversationID: conf.ConversationID, Node: conf.Node,
			Number: "+12025550100", State: state, HangupRequested: hungUp, CreatedAt: old, UpdatedAt: old}
		if err := s.CreateLeg(ctx, l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	mk("ended", leg.Ended, true)
	if has, err := s.HasLiveLeg(ctx, conf.ID); err != nil || has {
		t.Errorf("HasLiveLeg with only an ended leg: %v %v, want false", has, err)
	}
	if byConf, err := s.CountLiveLegsByConference(ctx); err != nil || byConf[conf.ID] != 0 {
		t.Errorf("CountLiveLegsByConference with only an ended leg: %v %v, want 0", byConf[conf.ID], err)
	}
	if p, err := s.HangupsPending(ctx, conf.Node, time.Now()); err != nil || p {
		t.Errorf("HangupsPending with only an ended leg: %v %v, want false", p, err)
	}
	mk("live", leg.Connected, false)
	if p, err := s.HangupsPending(ctx, conf.Node, time.Now()); err != nil || p {
		t.Errorf("HangupsPending with no hang-up asked: %v %v, want false", p, err)
	}
	mk("hungup", leg.Connected, true)
	if p, err := s.HangupsPending(ctx, conf.Node, time.Now()); err != nil || !p {
		t.Errorf("HangupsPending: %v %v, want true", p, err)
	}
	if p, err := s.HangupsPending(ctx, conf.Node, old.Add(-time.Minute)); err != nil || p {
		t.Errorf("HangupsPending for a time before the hang-up: %v %v, want false", p, err)
	}
	if p, err := s.HangupsPending(ctx, "another-node", time.Now()); err != nil || p {
		t.Errorf("HangupsPending on another node: %v %v, want false", p, err)
	}
}

// LockLeg loads a leg for change; on PostgreSQL it holds the row locks of
// the leg's conversation and of the leg until the transaction ends, so a
// second transaction that appends to the conversation waits for it (on
// SQLite transactions are one at a time: the writer already orders them).
func TestLockLeg_HoldsTheConversationAndTheLeg(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	_, conf := seedConference(t, s, "lock")
	l := &Leg{ID: conf.ID + "-leg", ConferenceID: conf.ID, ConversationID: conf.ConversationID, Node: conf.Node,
		Number: "+12025550100", State: LegDialing, CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()}
	if err := s.CreateLeg(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockLeg(ctx, "no-such-leg"); err != ErrNotFound {
		t.Fatalf("lock of an unknown leg: %v, want ErrNotFound", err)
	}
	locked := make(chan struct{})
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.InTx(ctx, func(tx *Store) error {
			got, err := tx.LockLeg(ctx, l.ID)
			if err != nil {
				return err
			}
			if got.ID != l.ID || got.ConversationID != conf.ConversationID || got.State != LegDialing {
				return fmt.Errorf("LockLeg gave %+v", got)
			}
			close(locked)
			<-release
			got.State = LegRinging
			return tx.SaveLeg(ctx, got)
		})
	}()
	if s.Dialect() != "postgres" {
		<-locked
		close(release)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		return
	}
	<-locked
	appended := make(chan error, 1)
	go func() {
		_, err := s.AppendEvent(ctx, conf.ConversationID, "test.appended", "{}")
		appended <- err
	}()
	select {
	case err := <-appended:
		t.Fatalf("an append to the conversation did not wait for the leg's lock holder (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	got, err := s.GetLeg(ctx, l.ID)
	if err != nil || got.State != LegRinging {
		t.Fatalf("after the holder committed: %+v %v", got, err)
	}
}

// The dial's lock: the conversation's row and its active conference's,
// both held until the transaction ends (another session's NOWAIT lock of
// either fails), the conversation's even when it has no conference yet.
func TestLockConversationConference_HoldsTheConversationAndItsConference(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	_, conf := seedConference(t, s, "lockcc")
	bare := &Conversation{ID: conf.ConversationID + "-bare", Kind: KindIM, CreatorID: conf.CreatedBy}
	if err := s.CreateConversation(ctx, bare, []Participant{{ConversationID: bare.ID, UserID: conf.CreatedBy, Role: RoleOrganizer}}); err != nil {
		t.Fatal(err)
	}
	// Another session tries to lock a row without waiting.
	busy := func(table, id string) bool {
		t.Helper()
		_, err := s.execRaw(ctx, `SELECT id FROM `+table+` WHERE id = ? FOR UPDATE NOWAIT`, id)
		return err != nil
	}
	for _, tc := range []struct {
		conv     string
		wantConf *Conference
	}{{conf.ConversationID, conf}, {bare.ID, nil}} {
		err := s.InTx(ctx, func(tx *Store) error {
			got, err := tx.LockConversationConference(ctx, tc.conv)
			if err != nil {
				return err
			}
			if (got == nil) != (tc.wantConf == nil) || (got != nil && (got.ID != tc.wantConf.ID || got.Node != tc.wantConf.Node ||
				got.State != ConferenceActive || got.ConversationID != tc.conv)) {
				return fmt.Errorf("conversation %s: got conference %+v, want %+v", tc.conv, got, tc.wantConf)
			}
			if s.Dialect() != "postgres" {
				return nil
			}
			if !busy("conversations", tc.conv) {
				return fmt.Errorf("conversation %s was not locked", tc.conv)
			}
			if got != nil && !busy("conferences", got.ID) {
				return fmt.Errorf("conference %s was not locked", got.ID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if s.Dialect() == "postgres" && busy("conversations", tc.conv) {
			t.Fatalf("conversation %s still locked after the transaction", tc.conv)
		}
	}
	if s.Dialect() == "postgres" {
		if _, err := s.LockConversationConference(ctx, "no-such-conversation"); err != ErrNotFound {
			t.Fatalf("an unknown conversation: %v, want ErrNotFound", err)
		}
	}
}

// surroundingsOf is what LockLegWithSurroundings says of a leg, asked of
// the store on SQLite (Known false) as the engine does.
func surroundingsOf(t *testing.T, tx *Store, id string) (*Leg, LegSurroundings) {
	t.Helper()
	l, sur, err := lockWithSurroundings(context.Background(), tx, id)
	if err != nil {
		t.Fatalf("lock leg %s: %v", id, err)
	}
	if tx.Dialect() == "postgres" && !sur.Known {
		t.Fatal("PostgreSQL did not read the surroundings")
	}
	return l, sur
}

// lockWithSurroundings is surroundingsOf for a goroutine other than the
// test's (a change run by a lane): errors are returned.
func lockWithSurroundings(ctx context.Context, tx *Store, id string) (*Leg, LegSurroundings, error) {
	l, sur, err := tx.LockLegWithSurroundings(ctx, id)
	if err != nil || sur.Known {
		return l, sur, err
	}
	conf, err := tx.GetConference(ctx, l.ConferenceID)
	if err != nil {
		return nil, sur, err
	}
	sur.ConferenceState = conf.State
	if sur.OtherConnected, err = tx.OtherLegConnected(ctx, l.ConferenceID, l.ID); err != nil {
		return nil, sur, err
	}
	live, err := tx.LiveLegs(ctx, l.ConferenceID)
	for _, o := range live {
		sur.OtherLive = sur.OtherLive || o.ID != l.ID
	}
	return l, sur, err
}

// A call's progress reads its leg with its surroundings: the conference's
// state, whether another leg has connected and whether another holds a
// phone (on PostgreSQL in the round trip that takes the locks).
func TestLockLegWithSurroundings_ReadsTheConferenceAndItsOtherLegs(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	_, conf := seedConference(t, s, "lockstate")
	now := time.Now().UTC()
	l := &Leg{ID: conf.ID + "-leg", ConferenceID: conf.ID, ConversationID: conf.ConversationID, Node: conf.Node,
		Number: "+12025550100", State: LegRinging, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateLeg(ctx, l); err != nil {
		t.Fatal(err)
	}
	want := func(what string, w LegSurroundings) {
		t.Helper()
		err := s.InTx(ctx, func(tx *Store) error {
			got, sur := surroundingsOf(t, tx, l.ID)
			sur.Known = false
			if got.ID != l.ID || got.State != LegRinging || got.Number != l.Number || got.ConferenceID != conf.ID || sur != w {
				return fmt.Errorf("%s: got leg %+v and %+v, want %+v", what, got, sur, w)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	want("alone", LegSurroundings{ConferenceState: ConferenceActive})
	other := &Leg{ID: conf.ID + "-other", ConferenceID: conf.ID, ConversationID: conf.ConversationID, Node: conf.Node,
		Number: "+12025550101", State: LegConnected, ConnectedAt: &now, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateLeg(ctx, other); err != nil {
		t.Fatal(err)
	}
	want("with a connected leg", LegSurroundings{ConferenceState: ConferenceActive, OtherConnected: true, OtherLive: true})
	other.State = LegEnded
	other.EndedAt = &now
	if err := s.InTx(ctx, func(tx *Store) error { return tx.SaveLeg(ctx, other) }); err != nil {
		t.Fatal(err)
	}
	want("after it ended", LegSurroundings{ConferenceState: ConferenceActive, OtherConnected: true})
	if _, err := s.EndConference(ctx, conf.ID, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	want("the conference ended", LegSurroundings{ConferenceState: ConferenceEnded, OtherConnected: true})
	if _, _, err := s.LockLegWithSurroundings(ctx, "no-such-leg"); err != ErrNotFound {
		t.Fatalf("an unknown leg: %v, want ErrNotFound", err)
	}
}

// whileAnotherEnds runs fn in a transaction that has to wait for the
// conversation's lock while another transaction holds it and ends the
// conference (on SQLite: behind it in the writer).
func whileAnotherEnds(t *testing.T, s *Store, conf *Conference, fn func(tx *Store) error) {
	t.Helper()
	ctx := context.Background()
	locked, release := make(chan struct{}), make(chan struct{})
	ending := make(chan error, 1)
	go func() {
		ending <- s.InTx(ctx, func(tx *Store) error {
			if err := tx.LockConversation(ctx, conf.ConversationID); err != nil {
				return err
			}
			if _, err := tx.EndConference(ctx, conf.ID, "ended meanwhile", time.Now()); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	if s.Dialect() == "postgres" {
		// Release once fn's transaction is waiting for the lock.
		go func() {
			defer close(release)
			for i := 0; i < 500; i++ {
				var n int64
				if err := s.DB().Raw(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n).Error; err == nil && n > 0 {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	} else {
		time.AfterFunc(200*time.Millisecond, func() { close(release) })
	}
	if err := s.InTx(ctx, fn); err != nil {
		t.Fatal(err)
	}
	if err := <-ending; err != nil {
		t.Fatal(err)
	}
}

// A call's progress, or a join, that waits for the conversation while
// another transaction ends the conference sees it ended once it has the
// lock. (A read inside the locking statement sees what was committed when
// the statement started: the conference active. A call answering at that
// moment was then connected to an ended conference instead of being hung
// up.)
func TestLocks_SeeWhatTheTransactionTheyWaitedForDid(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	for _, join := range []bool{false, true} {
		_, conf := seedConference(t, s, fmt.Sprintf("lockwait%v", join))
		now := time.Now().UTC()
		l := &Leg{ID: conf.ID + "-leg", ConferenceID: conf.ID, ConversationID: conf.ConversationID, Node: conf.Node,
			Number: "+12025550100", State: LegRinging, CreatedAt: now, UpdatedAt: now}
		if err := s.CreateLeg(ctx, l); err != nil {
			t.Fatal(err)
		}
		whileAnotherEnds(t, s, conf, func(tx *Store) error {
			if join {
				if got, _, err := tx.LockConversationForJoin(ctx, conf.ConversationID, ""); err != nil || got != nil {
					return fmt.Errorf("a join after waiting for the end: conference %+v, %v; want none", got, err)
				}
				return nil
			}
			if _, sur := surroundingsOf(t, tx, l.ID); sur.ConferenceState != ConferenceEnded {
				return fmt.Errorf("progress after waiting for the end: conference %q", sur.ConferenceState)
			}
			return nil
		})
	}
}
