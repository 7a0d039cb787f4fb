package engine

// Every change of a leg's or a conference's state is made here, by the leg
// table (package leg: (state, event) → (next state, effects)): the PBX's
// events (HandlePBXEvent), a hang-up we ask for, the ring watchdog, resync
// and a PBX that is gone all become a leg.Event applied by applyLeg; an
// event the table does not allow is counted and ignored. A leg's end ends
// the conference with its last live leg; ending a conference on request
// is here too.

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/leg"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// pbxLegEvents maps the driver's leg events onto the table's.
var pbxLegEvents = map[pbx.EventType]leg.Event{
	pbx.EventRinging:         leg.EvRinging,
	pbx.EventAnswered:        leg.EvAnswered,
	pbx.EventConnected:       leg.EvConnected,
	pbx.EventEnded:           leg.EvEnded,
	pbx.EventTalkingStarted:  leg.EvTalkingStarted,
	pbx.EventTalkingFinished: leg.EvTalkingFinished,
}

// HandlePBXEvent applies one driver event. Events of one leg arrive in
// order and are applied in that order, in the background: the call
// progress is queued to the store (storage.InTxAsync) and this returns
// before it is written, so that a driver's worker goes on with the next
// event instead of waiting for each commit. A duplicate or late event (a
// leg already past that state) changes nothing.
func (en *Engine) HandlePBXEvent(ctx context.Context, node string, e pbx.Event) {
	// Call progress is background work for the store: a click dialing
	// out goes first (storage.LowPriority).
	ctx = storage.LowPriority(ctx)
	en.metrics.PBXEvents.WithLabelValues(node, string(e.Type)).Inc()
	if ev, ok := pbxLegEvents[e.Type]; ok {
		en.applyLegAsync(ctx, e.LegID, ev, legInput{cause: e.Cause, causeText: e.CauseText, reason: e.Reason})
		return
	}
	switch e.Type {
	case pbx.EventLinkUp, pbx.EventLost:
		en.log.Info("pbx link event; reconciling", "node", node, "event", e.Type, "reason", e.Reason)
		go en.Resync(context.WithoutCancel(ctx), node)
	case pbx.EventLinkDown:
		en.log.Warn("pbx event connection lost; its calls keep their last known state until it is back", "node", node, "reason", e.Reason)
	case pbx.EventPBXRestarted:
		en.log.Warn("pbx lost every call (restart)", "node", node, "reason", e.Reason)
		en.endNodeLegs(ctx, node, "pbx restarted")
	}
}

// legInput is what comes with a leg event: the PBX's cause and its text
// (an end), and our reason (an end, a hang-up).
type legInput struct {
	cause     int
	causeText string
	reason    string
}

// legStep is what a transaction of applyLeg leaves to do once it is
// durable.
type legStep struct {
	hangUp bool // ask the PBX to hang the call up
	// ended is the conference that ended with this leg, or, for a leg of
	// an ended conference that answered anyway, that conference: its room
	// is destroyed (again) on the PBX.
	ended *storage.Conference
	// counts is what the transition adds to the metrics.
	counts legCounts
}

// legCounts is what a transition adds to the metrics (LegEnds,
// LegEventsIgnored, OriginateToAnswer). It is counted by afterLeg, once
// the transaction is durable, not as the transaction runs: a batch that
// fails (call progress on PostgreSQL, a resync's applyLegs) runs its
// changes again one by one, and they were counted twice.
type legCounts struct {
	ignored  leg.Event // the table refused this event in state
	state    string    // the leg's state before an ignored event
	endedIn  string    // the state the leg ended in
	answered bool      // first answer: toAnswer on node
	node     string
	toAnswer time.Duration
}

// count adds c to the metrics.
func (en *Engine) count(c legCounts) {
	if c.ignored != "" {
		en.metrics.LegEventsIgnored.WithLabelValues(c.state, string(c.ignored)).Inc()
	}
	if c.endedIn != "" {
		en.metrics.LegEnds.WithLabelValues(c.endedIn).Inc()
	}
	if c.answered {
		en.metrics.OriginateToAnswer.WithLabelValues(c.node).Observe(c.toAnswer.Seconds())
	}
}

// applyLeg applies ev to a leg by the table, in one transaction, and then
// does what the transition asks of the PBX.
func (en *Engine) applyLeg(ctx context.Context, legID string, ev leg.Event, in legInput) {
	var st legStep
	err := en.store.InTx(ctx, func(tx *storage.Store) error {
		var err error
		st, err = en.applyLegTx(ctx, tx, legID, ev, in)
		return err
	})
	en.afterLeg(ctx, legID, ev, err, st)
}

// applyLegAsync is applyLeg queued, for the PBX's call progress: the
// driver's worker for the channel goes on with its next event, which is
// applied after this one (storage.InTxLeg; on PostgreSQL in a batch with
// other legs' progress).
func (en *Engine) applyLegAsync(ctx context.Context, legID string, ev leg.Event, in legInput) {
	if legID == "" {
		return
	}
	st := new(legStep)
	en.store.InTxLeg(ctx, legID, func(tx *storage.Store) error {
		var err error
		*st, err = en.applyLegTx(ctx, tx, legID, ev, in)
		return err
	}, func(err error) {
		// On a goroutine of its own: this runs where the store answers
		// transactions, and afterLeg may call the PBX.
		go en.afterLeg(context.WithoutCancel(ctx), legID, ev, err, *st)
	})
}

// applyLegTx is the transaction of applyLeg: the leg's row, the event on
// the conversation's log, and the conference's end with its last leg.
func (en *Engine) applyLegTx(ctx context.Context, tx *storage.Store, legID string, ev leg.Event, in legInput) (legStep, error) {
	// An event that concerns the leg alone (leg.Local: ringing, talking)
	// reads nothing of the rest of its conference: on PostgreSQL one
	// statement fewer on a dial's way.
	var (
		l   *storage.Leg
		sur storage.LegSurroundings
		err error
	)
	if leg.Local(ev) {
		l, err = tx.LockLeg(ctx, legID)
	} else {
		l, sur, err = tx.LockLegWithSurroundings(ctx, legID)
	}
	if err != nil {
		return legStep{}, err
	}
	confState := sur.ConferenceState
	ev, in = en.rangOut(l, ev, in)
	// A leg is "ours" when convoice is ending it: a hang-up was asked
	// for, or its conference has ended (a ringing leg that another
	// replica placed may answer after the end). The conference itself is
	// read only when it has ended (or its state is unknown: SQLite).
	ours := l.HangupRequested
	var conf *storage.Conference
	if !ours && (ev == leg.EvAnswered || ev == leg.EvConnected || ev == leg.EvResyncInConference) && oursMatters(l.State, ev) {
		if confState == "" || confState == storage.ConferenceEnded {
			if conf, err = tx.GetConference(ctx, l.ConferenceID); err != nil {
				return legStep{}, err
			}
			confState = conf.State
		}
		ours = confState == storage.ConferenceEnded
	}
	was := l.State
	changed, st, ok := en.stepLeg(l, ev, ours, in)
	if !ok {
		return st, nil // counted as ignored, nothing else to do
	}
	if st.hangUp && conf != nil && conf.State == storage.ConferenceEnded {
		en.log.Warn("a call of an ended conference answered: hanging it up", "leg", l.ID, "conference", conf.ID, "event", ev)
		st.ended = conf
	}
	if !changed {
		return st, nil
	}
	if err := tx.SaveLeg(ctx, l); err != nil {
		return legStep{}, err
	}
	if err := core.AppendEvent(ctx, tx, l.ConversationID, "leg.updated", core.LegViewOf(l)); err != nil {
		return legStep{}, err
	}
	if storage.LegLive(l.State) {
		if was != storage.LegConnected && l.State == storage.LegConnected {
			if sur.Known && sur.OtherConnected {
				return st, nil // not the first: the others were invited then
			}
			return st, en.inviteOnFirstConnect(ctx, tx, l)
		}
		return st, nil
	}
	st.counts.endedIn = l.State
	// The leg itself is not live any more: a live leg is another one.
	if sur.Known {
		if sur.OtherLive {
			return st, nil
		}
	} else if live, err := tx.HasLiveLeg(ctx, l.ConferenceID); err != nil || live {
		return st, err
	}
	if conf == nil {
		if conf, err = tx.GetConference(ctx, l.ConferenceID); err != nil {
			return legStep{}, err
		}
	}
	ok, err = en.endConferenceTx(ctx, tx, conf, "the last call ended")
	if ok {
		st.ended = conf
	}
	return st, err
}

// oursMatters reports whether the table's answer for ev in state depends
// on whether convoice is ending the leg, or may hang it up: only then is
// the conference read. A connected leg's duplicate "connected" (a driver
// adopting the calls it finds after a restart reports 10,000 at once) is
// answered without it.
func oursMatters(state leg.State, ev leg.Event) bool {
	r, ok := leg.Step(state, ev, false)
	ro, oko := leg.Step(state, ev, true)
	return ok != oko || r != ro || r.Effects&leg.HangUp != 0
}

// rangOut reads a causeless end of a leg still ringing past its ring
// timeout as the ring timeout it is: the PBX itself gives up ringing then
// (we hand it the timeout with the originate), and an end whose cause was
// lost (events missed behind a partition, a resync) is that timeout, not
// a failure.
func (en *Engine) rangOut(l *storage.Leg, ev leg.Event, in legInput) (leg.Event, legInput) {
	causeless := (ev == leg.EvEnded && in.cause == pbx.CauseUnknown) || ev == leg.EvResyncGone
	if !causeless || !slices.Contains(leg.Accepting(leg.EvRingTimeout), l.State) || time.Since(l.CreatedAt) < en.cfg.RingTimeout {
		return ev, in
	}
	return leg.EvRingTimeout, legInput{cause: pbx.CauseNoAnswer,
		reason: "ring timeout: the call rang out while convoice was not hearing from the PBX"}
}

// stepLeg applies the table's answer for ev to l in memory: false when the
// table does not allow ev in l's state (nothing changes); changed says
// whether l must be saved. What the step adds to the metrics (an ignored
// event, a first answer) is left in st.counts for the caller to count.
func (en *Engine) stepLeg(l *storage.Leg, ev leg.Event, ours bool, in legInput) (changed bool, st legStep, ok bool) {
	r, ok := leg.Step(l.State, ev, ours)
	if !ok {
		en.log.Debug("leg event not allowed in its state: ignored", "leg", l.ID, "state", l.State, "event", ev)
		return false, legStep{counts: legCounts{ignored: ev, state: l.State}}, false
	}
	now := time.Now().UTC()
	stamp := func(t **time.Time) {
		if *t == nil {
			*t, changed = &now, true
		}
	}
	next := leg.NextState(l.State, r, in.cause)
	if next != l.State {
		l.State, changed = next, true
	}
	e := r.Effects
	if e&(leg.StampRinging|leg.StampAnswered|leg.StampConnected) != 0 {
		stamp(&l.RingingAt)
	}
	if e&(leg.StampAnswered|leg.StampConnected) != 0 {
		if l.AnsweredAt == nil {
			st.counts = legCounts{answered: true, node: l.Node, toAnswer: now.Sub(l.CreatedAt)}
		}
		stamp(&l.AnsweredAt)
	}
	if e&leg.StampConnected != 0 {
		stamp(&l.ConnectedAt)
	}
	if e&leg.MarkOurs != 0 {
		if !l.HangupRequested {
			l.HangupRequested, changed = true, true
		}
		if in.reason != "" && l.EndReason == "" {
			l.EndReason, changed = core.Clip(in.reason, maxEndReason), true
		}
	}
	if e&leg.TalkingOn != 0 && !l.Talking && !l.Muted {
		l.Talking, changed = true, true
	}
	if e&leg.TalkingOff != 0 && l.Talking {
		l.Talking, changed = false, true
	}
	if e&leg.End != 0 {
		// Clipped to their columns: PostgreSQL refuses a longer value,
		// and the leg would stay live (a reason can quote a PBX error).
		text := in.causeText
		if ev == leg.EvEnded {
			text = leg.CauseText(next, in.cause, in.causeText)
		}
		l.Cause, l.CauseText, l.EndedAt, l.Talking = in.cause, core.Clip(text, maxCauseText), &now, false
		reason := in.reason
		if (ev == leg.EvEnded && next == leg.Unconfirmed) || (reason == "" && next == leg.Unconfirmed) {
			// The driver hung it up when its confirm timeout ran out
			// ("hung up by convoice", "normal clearing"), or the callee
			// hung up during the prompt: either way nobody pressed the
			// key. Say what that means. (A hang-up we were asked for
			// has its reason already.)
			reason = en.unconfirmedReason()
		}
		if reason != "" && l.EndReason == "" {
			l.EndReason = core.Clip(reason, maxEndReason)
		}
		changed = true
	}
	st.hangUp = e&leg.HangUp != 0
	return changed, st, true
}

// RequestHangup applies "hang-up requested" to l (locked by the caller's
// transaction, which saves it): it is marked as ours with reason, unless
// the table says it is past that (false, counted). The caller then asks
// the PBX (HangupOnPBX) once its transaction is durable.
func (en *Engine) RequestHangup(l *storage.Leg, reason string) bool {
	_, st, ok := en.stepLeg(l, leg.EvHangupRequested, l.HangupRequested, legInput{reason: reason})
	// Counted now: the caller's transaction is one of its own, never run
	// again as part of a failed batch.
	en.count(st.counts)
	return ok
}

// afterLeg finishes applyLeg once its transaction is durable: logs a
// failure, counts the transition, hangs the call up and destroys an ended
// conference's room when the transition says so.
func (en *Engine) afterLeg(ctx context.Context, legID string, ev leg.Event, err error, st legStep) {
	if err != nil {
		if !errors.Is(err, storage.ErrNotFound) {
			// The PBX has moved on and the store has not: the event is
			// not heard again, so the node is resynced once the store
			// answers (catchUp) rather than at the periodic resync, half
			// a minute on, with an answered call shown ringing and the
			// others not invited meanwhile.
			en.storeBehind()
			en.log.Error("leg transition failed; its node will be resynced", "leg", legID, "event", ev, "err", err)
		}
		return
	}
	en.count(st.counts)
	if st.hangUp {
		en.hangupOnNode(ctx, legID)
	}
	if st.ended != nil {
		en.destroyOnPBX(ctx, st.ended)
	}
}

// Column sizes of legs.cause_text and legs.end_reason (storage.Leg);
// core.Clip cuts on a character boundary.
const (
	maxCauseText = 100
	maxEndReason = 200
)

// failLeg ends a leg that never reached the PBX (or that the PBX
// refused): an end with no cause, so "failed" (or "cancelled" when it was
// hung up meanwhile).
func (en *Engine) failLeg(ctx context.Context, legID, reason string) {
	en.applyLeg(ctx, legID, leg.EvEnded, legInput{reason: reason})
}

// EndConference marks the conference ended (cancelling pending
// invitations and marking every live leg as hung up by us), then hangs up
// every live leg of it by id through its node's driver, and then destroys
// the room. The legs come from the store, not from what this replica's
// driver knows: with several replicas, a leg placed through another one
// and still ringing is not in the room yet, and would otherwise answer
// into a conference that no longer exists (the owner of the node would
// recreate the room for it). A leg that answers anyway is hung up by the
// table (applyLegTx: "ours").
func (en *Engine) EndConference(ctx context.Context, conf *storage.Conference, reason string) error {
	return en.endConference(ctx, conf, reason, false)
}

// endConference is EndConference; with onlyIfEmpty it ends the conference
// only when it has no live leg in the transaction (resync's "no calls
// left": a leg may have joined since it read the store).
func (en *Engine) endConference(ctx context.Context, conf *storage.Conference, reason string, onlyIfEmpty bool) error {
	ended := false
	var hangup []string
	err := en.store.InTx(ctx, func(tx *storage.Store) error {
		hangup = hangup[:0]
		if err := tx.LockConversation(ctx, conf.ConversationID); err != nil {
			return err
		}
		legs, err := tx.LiveLegs(ctx, conf.ID)
		if err != nil || (onlyIfEmpty && len(legs) > 0) {
			return err
		}
		ended, err = en.endConferenceTx(ctx, tx, conf, reason)
		if err != nil {
			return err
		}
		for i := range legs {
			if en.RequestHangup(&legs[i], "audio "+reason) {
				if err := tx.SaveLeg(ctx, &legs[i]); err != nil {
					return err
				}
				hangup = append(hangup, legs[i].ID)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !en.nodeReady(conf.Node) {
		// Call control is unavailable: the requests would only time out.
		// The legs are marked; the resync when the node is back hangs
		// them up and destroys the room (hangupsPending, orphan rooms).
		en.log.Warn("conference ended while its PBX node does not answer: its calls are hung up when it is back",
			"conference", conf.ID, "node", conf.Node, "legs", len(hangup))
		return nil
	}
	// Every leg at once: a stalled PBX costs one request timeout, not one
	// per leg.
	var wg sync.WaitGroup
	for _, id := range hangup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			en.hangupOnNodeOf(ctx, conf, id)
		}()
	}
	wg.Wait()
	if ended {
		en.destroyOnPBX(ctx, conf)
	}
	return nil
}

// endConferenceTx ends the conference in tx: state, invitations, event.
func (en *Engine) endConferenceTx(ctx context.Context, tx *storage.Store, conf *storage.Conference, reason string) (bool, error) {
	now := time.Now().UTC()
	ok, err := tx.EndConference(ctx, conf.ID, reason, now)
	if err != nil || !ok {
		return false, err
	}
	invs, err := tx.Invitations(ctx, conf.ID)
	if err != nil {
		return false, err
	}
	for i := range invs {
		if invs[i].State == storage.InvitationPending {
			if err := en.SetInvitationState(ctx, tx, &invs[i], storage.InvitationCancelled); err != nil {
				return false, err
			}
		}
	}
	conf.State, conf.EndedAt, conf.EndReason = storage.ConferenceEnded, &now, reason
	return true, core.AppendEvent(ctx, tx, conf.ConversationID, "audio.ended", core.ConferenceViewOf(conf))
}
