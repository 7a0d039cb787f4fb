package storage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// seedDialingLeg makes a conference with one dialing leg.
func seedDialingLeg(t *testing.T, s *Store, tag string) *Leg {
	t.Helper()
	_, conf := seedConference(t, s, tag)
	now := time.Now().UTC()
	l := &Leg{ID: conf.ID + "-l", ConferenceID: conf.ID, ConversationID: conf.ConversationID, Node: conf.Node,
		Number: "+12025550100", State: LegDialing, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateLeg(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	return l
}

// In a pipelined PostgreSQL transaction a write sent later (execLater) is
// in place for the next statement, whether that is the pipe's own read or
// gorm's; on SQLite the same calls run one by one.
func TestPGPipe_LaterWritesComeBeforeTheNextRead(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	l := seedDialingLeg(t, s, "pipe")
	err := s.InTx(ctx, func(tx *Store) error {
		l.State = LegRinging
		if err := tx.SaveLeg(ctx, l); err != nil {
			return err
		}
		if got, err := tx.GetLeg(ctx, l.ID); err != nil || got.State != LegRinging {
			t.Errorf("the pipe's read after a later write: %+v %v", got, err)
		}
		l.State = LegConnected
		if err := tx.SaveLeg(ctx, l); err != nil {
			return err
		}
		ls, err := tx.Legs(ctx, l.ConferenceID) // gorm, on the same connection
		if err != nil || len(ls) != 1 || ls[0].State != LegConnected {
			t.Errorf("gorm's read after a later write: %+v %v", ls, err)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetLeg(ctx, l.ID); err != nil || got.State != LegConnected {
		t.Fatalf("after commit: %+v %v", got, err)
	}
}

// A later write that fails fails the statement it went out with and the
// transaction: nothing of the transaction is kept, and the connection goes
// back to the pool outside any transaction (more failures than the pool
// has connections, then a transaction that must work).
func TestPGPipe_AFailedLaterWriteFailsTheWholeTransaction(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	l := seedDialingLeg(t, s, "pipefail")
	errBad := errors.New("not reached")
	for i := 0; i < 25; i++ {
		err := s.InTx(ctx, func(tx *Store) error {
			ringing := *l
			ringing.State = LegRinging
			if err := tx.SaveLeg(ctx, &ringing); err != nil {
				return err
			}
			// number is NOT NULL.
			if err := tx.execLater(ctx, `UPDATE legs SET number = NULL WHERE id = ?`, l.ID); err != nil {
				return err
			}
			if _, err := tx.GetLeg(ctx, l.ID); err != nil {
				return err
			}
			return errBad
		})
		if err == nil || errors.Is(err, errBad) {
			t.Fatalf("transaction %d: %v, want the NOT NULL violation", i, err)
		}
	}
	if got, err := s.GetLeg(ctx, l.ID); err != nil || got.State != LegDialing || got.Number != l.Number {
		t.Fatalf("after the failed transactions: %+v %v", got, err)
	}
	err := s.InTx(ctx, func(tx *Store) error {
		l.State = LegRinging
		return tx.SaveLeg(ctx, l)
	})
	if err != nil {
		t.Fatalf("a transaction after the failed ones: %v", err)
	}
	if got, err := s.GetLeg(ctx, l.ID); err != nil || got.State != LegRinging {
		t.Fatalf("after commit: %+v %v", got, err)
	}
}

// A transaction whose context ends midway rolls back; the pool still works.
func TestPGPipe_ACancelledTransactionKeepsNothing(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	l := seedDialingLeg(t, s, "pipecancel")
	cctx, cancel := context.WithCancel(ctx)
	err := s.InTx(cctx, func(tx *Store) error {
		if _, err := tx.LockLeg(cctx, l.ID); err != nil {
			return err
		}
		ringing := *l
		ringing.State = LegRinging
		if err := tx.SaveLeg(cctx, &ringing); err != nil {
			return err
		}
		cancel()
		_, err := tx.GetLeg(cctx, l.ID)
		return err
	})
	if err == nil {
		t.Fatal("the cancelled transaction committed")
	}
	for i := 0; i < 25; i++ {
		if got, err := s.GetLeg(ctx, l.ID); err != nil || got.State != LegDialing {
			t.Fatalf("read %d after the cancelled transaction: %+v %v", i, got, err)
		}
	}
	if err := s.InTx(ctx, func(tx *Store) error { _, err := tx.LockLeg(ctx, l.ID); return err }); err != nil {
		t.Fatalf("a transaction after the cancelled one: %v", err)
	}
}

// A join's locks come with the joiner's pending invitation (and only
// theirs, only a pending one); a second live call of the same person,
// inserted with CreateLegLater, is refused by the time the transaction
// commits: ErrLiveLeg on PostgreSQL (with the COMMIT), ErrConflict at once
// on SQLite. Nothing of the refused transaction is kept.
func TestLockConversationForJoin_AndALaterLegRefusal(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	creator, conf := seedConference(t, s, "join")
	now := time.Now().UTC()
	l := &Leg{ID: conf.ID + "-l", ConferenceID: conf.ID, ConversationID: conf.ConversationID, UserID: &creator.ID, Node: conf.Node,
		Number: "+12025550100", State: LegDialing, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateLeg(ctx, l); err != nil {
		t.Fatal(err)
	}
	u := &User{ID: l.ConferenceID + "-b", DisplayName: "B", Email: l.ConferenceID + "-b@x.com", Role: RoleUser}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	invs := []Invitation{
		{ID: l.ConferenceID + "-i1", ConferenceID: l.ConferenceID, ConversationID: l.ConversationID, UserID: u.ID, InvitedBy: u.ID,
			State: InvitationDeclined, CreatedAt: now, UpdatedAt: now},
		{ID: l.ConferenceID + "-i2", ConferenceID: l.ConferenceID, ConversationID: l.ConversationID, UserID: u.ID, InvitedBy: u.ID,
			State: InvitationPending, CreatedAt: now, UpdatedAt: now},
	}
	if err := s.CreateInvitations(ctx, invs); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ user, want string }{{u.ID, invs[1].ID}, {"", ""}, {"someone-else", ""}} {
		err := s.InTx(ctx, func(tx *Store) error {
			conf, inv, err := tx.LockConversationForJoin(ctx, l.ConversationID, c.user)
			if err != nil {
				return err
			}
			got := ""
			if inv != nil {
				got = inv.ID
			}
			if conf == nil || conf.ID != l.ConferenceID || got != c.want {
				t.Errorf("user %q: conference %+v, invitation %q; want %s and %q", c.user, conf, got, l.ConferenceID, c.want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// l is the creator's live call: a second one of theirs is refused.
	second := &Leg{ID: l.ID + "-2", ConferenceID: l.ConferenceID, ConversationID: l.ConversationID, UserID: &creator.ID, Node: l.Node,
		Number: "+12025550101", State: LegDialing, CreatedAt: now, UpdatedAt: now}
	err := s.InTx(ctx, func(tx *Store) error {
		if err := tx.CreateLegLater(ctx, second); err != nil {
			return err
		}
		return tx.RecordEvent(ctx, l.ConversationID, "leg.updated", `{}`)
	})
	want := ErrConflict
	if s.dialect == "postgres" {
		want = ErrLiveLeg
	}
	if !errors.Is(err, want) || !errors.Is(err, ErrConflict) {
		t.Fatalf("second live call: %v; want %v", err, want)
	}
	if _, err := s.GetLeg(ctx, second.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused leg was kept: %v", err)
	}
	if evs, err := s.EventsAfter(ctx, l.ConversationID, 0, 10); err != nil || len(evs) != 0 {
		t.Fatalf("the refused transaction's event was kept: %+v %v", evs, err)
	}
}

// When PostgreSQL drops the pool's connections (a restart, a failover, an
// administrator's pg_terminate_backend), a transaction on a dropped
// connection fails, its connection is not given out again, and the pool
// heals: within as many failures as it has connections, transactions
// work again. (On SQLite there is nothing to drop: every one works.)
func TestPGPipe_ThePoolHealsAfterItsConnectionsAreDropped(t *testing.T) {
	s := openLegTest(t, "")
	ctx := context.Background()
	l := seedDialingLeg(t, s, "pipeheal")
	if s.Dialect() == "postgres" {
		// Fill the pool: 20 transactions at once, each holding its
		// connection until all have begun. (SQLite's one writer runs
		// transactions one at a time: this would never end there.)
		var ready, wg sync.WaitGroup
		ready.Add(20)
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.InTx(ctx, func(tx *Store) error {
					_, err := tx.GetLeg(ctx, l.ID)
					ready.Done()
					ready.Wait()
					return err
				})
			}()
		}
		wg.Wait()
		var n int64
		if err := s.DB().Raw(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n < 10 {
			t.Fatalf("terminated %d connections; the pool should have held about 20", n)
		}
	}
	failures := 0
	for i := 0; i < 40; i++ {
		err := s.InTx(ctx, func(tx *Store) error {
			cur, err := tx.LockLeg(ctx, l.ID)
			if err != nil {
				return err
			}
			return tx.SaveLeg(ctx, cur)
		})
		if err != nil {
			failures++
			if i >= 21 {
				t.Fatalf("transaction %d still fails after %d failures: %v", i, failures, err)
			}
		}
	}
	if s.Dialect() != "postgres" && failures > 0 {
		t.Fatalf("%d failures on SQLite", failures)
	}
	t.Logf("%d transactions failed on dropped connections", failures)
}
