package storage

// The PBX's call progress on PostgreSQL, in batches. Each change of a
// leg's state was a transaction of its own: two round trips (the locks,
// then the writes with the events' statement and COMMIT), a commit and a
// planning of the events' statement per change. What SQLite gets from its
// one writer — many changes per commit — PostgreSQL gets here: a lane
// takes the changes waiting for it and applies them in one transaction
// of two round trips: BEGIN, the locks of all their conversations and
// legs and the read of the legs with their surroundings (legPrefetch);
// then every change's writes, the events of all of them and COMMIT. A
// change that must read more (a second change of one conference in the
// batch, the first call connected inviting the others, the last one
// ending the conference) adds its own round trips.
//
// Locks. A batch locks the conversations of all its legs first, in id
// order, then their legs, and in the events' statement the user streams'
// counters in user id order. Every other transaction locks one
// conversation, or several in id order, before anything else
// (LockConversation), so no batch waits in a cycle.
//
// Order. A leg's changes always go to the same lane, which applies them
// in the order they were queued; changes of different legs have no order
// between them, as before (each was the transaction of its own caller).
//
// Failure. A change that fails (its leg is gone, a statement fails) fails
// its batch: the batch is rolled back and each of its changes is then
// run on its own (InTx), so each gets its own answer, as before. A
// change's function may so run twice: it must leave what it counts for
// its then (the engine counts its transitions in afterLeg).

import (
	"context"
	"hash/maphash"
	"time"
)

const (
	// progressLaneCount is how many batches of call progress a replica
	// applies at once. Few: the point is many changes per transaction.
	progressLaneCount = 2
	// progressBatchMax bounds the changes of one transaction (and the
	// conversations it holds locked).
	progressBatchMax = 32
	// progressQueue is how many changes wait for a lane before InTxLeg
	// waits (back-pressure on the PBX driver's worker).
	progressQueue = 1024
)

// progressItem is one queued change of a leg's state.
type progressItem struct {
	ctx  context.Context
	leg  string
	fn   func(tx *Store) error
	then func(error)
}

type progressLanes struct {
	queues []chan progressItem
	seed   maphash.Seed
	done   chan struct{} // closed when every lane has stopped
	// committed, when set, is told how many changes each of the lanes'
	// transactions committed (OnProgressBatch).
	committed func(changes int)
}

// OnProgressBatch sets the function told how many changes of call
// progress each PostgreSQL transaction of the lanes committed (for the
// metrics; never called on SQLite). Set it before use.
func (s *Store) OnProgressBatch(f func(changes int)) {
	if s.lanes != nil {
		s.lanes.committed = f
	}
}

// lane is the queue legID's changes go to.
func (ls *progressLanes) lane(legID string) chan progressItem {
	return ls.queues[maphash.String(ls.seed, legID)%uint64(len(ls.queues))]
}

// startProgressLanes starts the lanes (PostgreSQL).
func (s *Store) startProgressLanes() {
	ls := &progressLanes{seed: maphash.MakeSeed(), done: make(chan struct{})}
	stopped := make(chan struct{}, progressLaneCount)
	for range progressLaneCount {
		q := make(chan progressItem, progressQueue)
		ls.queues = append(ls.queues, q)
		go func() {
			s.runProgressLane(q)
			stopped <- struct{}{}
		}()
	}
	go func() {
		for range progressLaneCount {
			<-stopped
		}
		close(ls.done)
	}()
	s.lanes = ls
}

// InTxLeg queues fn, a change of leg legID's state, as a write
// transaction, like InTxAsync: then (when not nil) is told its outcome
// once it is durable, on a goroutine that answers transactions (it must
// not block). Changes of one leg queued one after the other are applied
// in that order. On PostgreSQL it is applied in a batch with other legs'
// changes (see above): fn must lock its leg with LockLeg or
// LockLegWithSurroundings before anything else, and write only in its
// leg's conversation. On SQLite it is InTxAsync.
func (s *Store) InTxLeg(ctx context.Context, legID string, fn func(tx *Store) error, then func(error)) {
	if s.lanes == nil || s.pending != nil {
		s.InTxAsync(ctx, fn, then)
		return
	}
	q := s.lanes.lane(legID)
	it := progressItem{ctx: ctx, leg: legID, fn: fn, then: then}
	select {
	case <-s.stopW:
		it.answer(ErrClosed)
		return
	default:
	}
	select {
	case q <- it:
	case <-ctx.Done():
		it.answer(ctx.Err())
	case <-s.stopW:
		it.answer(ErrClosed)
	}
}

func (it progressItem) answer(err error) {
	if it.then != nil {
		it.then(err)
	}
}

// runProgressLane applies q's changes, as many at a time as are waiting,
// until the store closes; then it applies what is still queued.
func (s *Store) runProgressLane(q chan progressItem) {
	batch := make([]progressItem, 0, progressBatchMax)
	for {
		batch = batch[:0]
		select {
		case it := <-q:
			batch = append(batch, it)
		case <-s.stopW:
			for {
				select {
				case it := <-q:
					s.runProgressBatch([]progressItem{it})
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < progressBatchMax {
			select {
			case it := <-q:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		s.runProgressBatch(batch)
	}
}

// runProgressBatch applies the changes in one transaction, or, when that
// fails, each in its own.
func (s *Store) runProgressBatch(batch []progressItem) {
	if len(batch) > 1 {
		var events []Event
		start := time.Now()
		err := s.progressTx(batch, &events)
		if err == nil {
			if s.commitTime != nil {
				s.commitTime(time.Since(start))
			}
			s.lanes.note(len(batch))
			if len(events) > 0 && s.afterCommit != nil {
				s.afterCommit(events)
			}
			for _, it := range batch {
				it.answer(nil)
			}
			return
		}
		s.log.Debug("a batch of call progress failed; applying its changes one by one", "changes", len(batch), "err", err)
	}
	for _, it := range batch {
		err := s.InTx(it.ctx, it.fn)
		if err == nil {
			s.lanes.note(1)
		}
		it.answer(err)
	}
}

func (ls *progressLanes) note(changes int) {
	if ls.committed != nil {
		ls.committed(changes)
	}
}

// progressTx is a batch's transaction: the conversations locked in id
// order and the legs locked and read (legPrefetch), in one round trip;
// then each change; then its events and COMMIT (pgTx).
func (s *Store) progressTx(batch []progressItem, events *[]Event) error {
	ctx := context.Background()
	legs := make([]string, len(batch))
	for i, it := range batch {
		legs[i] = it.leg
	}
	return s.pgTx(ctx, events, true, func(tx *Store) error {
		if err := tx.execLater(ctx, `SELECT 1 FROM conversations
 WHERE id IN (SELECT conversation_id FROM legs WHERE id = ANY(?::text[])) ORDER BY id FOR UPDATE`, legs); err != nil {
			return err
		}
		pf, err := tx.prefetchLegs(ctx, legs)
		if err != nil {
			return err
		}
		tx.prefetch = pf
		for _, it := range batch {
			if err := pf.runChange(tx.pipe, func() error { return runSafely(it.fn, tx) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// legPrefetch is what a batch's first round trip read of its legs, after
// taking their conversations' locks: each leg, locked, and of each of
// their conferences its state and how many of its legs are live and have
// been connected. A change's LockLeg is answered from it, without a round
// trip, while what it holds is true:
//   - nothing else changes these legs or conferences meanwhile: every
//     transaction that does holds their conversation's lock, which the
//     batch holds;
//   - a change that writes legs it holds (SaveLeg) and records events
//     changes nothing else: the prefetch keeps each leg as saved and its
//     conference's counts up to date, so the next change of the same leg
//     or of another leg of the conference is answered from it too
//     (ringing, then connected; the calls of a meeting that starts);
//   - a change that writes anything else (the others invited, the
//     conference ended) may have changed the conference: from then on its
//     legs are read from the database, which sees the batch's writes.
type legPrefetch struct {
	legs  map[string]Leg // as last saved
	confs map[string]*prefetchedConf
	// stale marks the conferences read from the database from now on.
	stale    map[string]bool
	allStale bool
	// The change running: the conferences it took legs of (from here or
	// the database), and how many statements it was expected to send
	// (its SaveLegs) against what the pipe counted (pgPipe.sent).
	taken       []string
	saves, sent int
}

// prefetchedConf is a conference of the batch's legs.
type prefetchedConf struct {
	state           string
	live, connected int64 // legs live, legs connected at some time
}

// prefetchLegs locks and reads the legs (after what the pipe holds: the
// conversations' locks), in one round trip.
func (s *Store) prefetchLegs(ctx context.Context, ids []string) (*legPrefetch, error) {
	rows, err := s.queryRaw(ctx, `WITH n AS (SELECT conference_id,
   count(*) FILTER (WHERE state IN `+liveStatesSQL+`) AS live, count(*) FILTER (WHERE connected_at IS NOT NULL) AS connected
  FROM legs WHERE conference_id IN (SELECT conference_id FROM legs WHERE id = ANY(?::text[])) GROUP BY conference_id)
 SELECT `+legColumnsOf("legs")+`, f.state, n.live, n.connected
 FROM legs JOIN conferences f ON f.id = legs.conference_id JOIN n ON n.conference_id = legs.conference_id
 WHERE legs.id = ANY(?::text[]) ORDER BY legs.id FOR UPDATE OF legs`, ids, ids)
	if err != nil {
		return nil, err
	}
	pf := &legPrefetch{legs: make(map[string]Leg, len(ids)), confs: map[string]*prefetchedConf{}, stale: map[string]bool{}}
	for rows.Next() {
		var c prefetchedConf
		l, err := scanLeg(withExtra{rows, []any{&c.state, &c.live, &c.connected}})
		if err != nil {
			rows.Close()
			return nil, err
		}
		pf.legs[l.ID] = *l
		pf.confs[l.ConferenceID] = &c
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	return pf, nil
}

// runChange runs a change of the batch, and marks its conference stale
// when the change sent more than its legs' writes.
func (pf *legPrefetch) runChange(p *pgPipe, fn func() error) error {
	pf.taken, pf.saves, pf.sent = pf.taken[:0], 0, p.sent
	err := fn()
	if p.sent-pf.sent != pf.saves {
		if len(pf.taken) == 0 {
			// It wrote without locking a leg first (InTxLeg's contract
			// broken): nothing prefetched can be trusted.
			pf.allStale = true
		}
		for _, conf := range pf.taken {
			pf.stale[conf] = true
		}
	}
	return err
}

// take answers LockLeg(id) from the prefetch when it may (see
// legPrefetch): a copy of the leg, its surroundings when asked for.
func (pf *legPrefetch) take(id string, withSurroundings bool) (*Leg, LegSurroundings, bool) {
	l, ok := pf.legs[id]
	if !ok || pf.allStale || pf.stale[l.ConferenceID] {
		return nil, LegSurroundings{}, false
	}
	pf.taken = append(pf.taken, l.ConferenceID)
	if !withSurroundings {
		return &l, LegSurroundings{}, true
	}
	c := pf.confs[l.ConferenceID]
	sur := LegSurroundings{Known: true, ConferenceState: c.state,
		OtherLive: c.live-countIf(LegLive(l.State)) > 0, OtherConnected: c.connected-countIf(l.ConnectedAt != nil) > 0}
	return &l, sur, true
}

func countIf(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// locked tells the prefetch that a change locked a leg of conf through
// the database: the conference's legs are read from there from now on.
func (pf *legPrefetch) locked(conf string) {
	pf.stale[conf] = true
	pf.taken = append(pf.taken, conf)
}

// saved keeps a leg as a change of the batch saved it, and its
// conference's counts. A leg it does not hold makes its conference stale.
func (pf *legPrefetch) saved(l *Leg) {
	pf.saves++
	conf := l.ConferenceID
	was, ok := pf.legs[l.ID]
	if !ok || pf.stale[conf] {
		pf.stale[conf] = true
		return
	}
	c := pf.confs[conf]
	c.live += countIf(LegLive(l.State)) - countIf(LegLive(was.State))
	c.connected += countIf(l.ConnectedAt != nil) - countIf(was.ConnectedAt != nil)
	pf.legs[l.ID] = *l
}

// withExtra scans a row's leading columns into Scan's destinations and
// the rest into extra.
type withExtra struct {
	r     scanner
	extra []any
}

func (w withExtra) Scan(dst ...any) error { return w.r.Scan(append(dst, w.extra...)...) }
