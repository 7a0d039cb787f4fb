package storage

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/convoice/convoice/leg"
)

// liveStatesSQL is the table's live states as an SQL list, for the raw
// queries: "('dialing', 'ringing', …)".
var liveStatesSQL = sqlList(leg.Live())

func sqlList(states []string) string {
	return "('" + strings.Join(states, "', '") + "')"
}

// ActiveConference returns the conversation's active conference.
func (s *Store) ActiveConference(ctx context.Context, convID string) (*Conference, error) {
	return s.conference(ctx, `conversation_id = ? AND state = 'active'`, convID)
}

// LatestConference returns the conversation's newest conference, active or not.
func (s *Store) LatestConference(ctx context.Context, convID string) (*Conference, error) {
	var c Conference
	err := s.q(ctx).Where("conversation_id = ?", convID).Order("created_at DESC, id").First(&c).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &c, nil
}

// GetConference loads one conference.
func (s *Store) GetConference(ctx context.Context, id string) (*Conference, error) {
	return s.conference(ctx, `id = ?`, id)
}

// CreateConference inserts a conference; ErrConflict when the conversation
// already has an active one.
func (s *Store) CreateConference(ctx context.Context, c *Conference) error {
	return notFound(s.q(ctx).Create(c).Error)
}

// EndConference marks a conference ended; false when it already was.
func (s *Store) EndConference(ctx context.Context, id, reason string, at time.Time) (bool, error) {
	res := s.q(ctx).Model(&Conference{}).Where("id = ? AND state = ?", id, ConferenceActive).
		Updates(map[string]any{"state": ConferenceEnded, "ended_at": at, "end_reason": reason})
	return res.RowsAffected > 0, res.Error
}

// ActiveConferences lists every active conference (resync, start-up).
func (s *Store) ActiveConferences(ctx context.Context) ([]Conference, error) {
	var cs []Conference
	err := s.q(ctx).Where("state = ?", ConferenceActive).Order("created_at").Find(&cs).Error
	return cs, err
}

// CreateLeg inserts a leg. ErrConflict: the person has a live call in the
// conference already.
func (s *Store) CreateLeg(ctx context.Context, l *Leg) error {
	_, err := s.execRaw(ctx, insertLegSQL, legArgs(l)...)
	return notFound(s.translate(err))
}

// CreateLegLater is CreateLeg whose refusal may come later: in a
// PostgreSQL transaction the insert goes out with the transaction's next
// statement (execLater), the one that commits it at the latest, and a live
// call of the person already there fails that statement and the
// transaction with ErrLiveLeg. Elsewhere it is CreateLeg (ErrConflict).
func (s *Store) CreateLegLater(ctx context.Context, l *Leg) error {
	if s.pipe != nil {
		return s.execLater(ctx, insertLegSQL, legArgs(l)...)
	}
	return s.CreateLeg(ctx, l)
}

const insertLegSQL = `INSERT INTO legs (` + legColumns + `) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`

func legArgs(l *Leg) []any {
	return []any{l.ID, l.ConferenceID, l.ConversationID, nstr(l.UserID), nstr(l.GuestID), nstr(l.InvitationID), l.Node, l.Number,
		l.State, l.Cause, l.CauseText, l.EndReason, l.Muted, l.Talking, l.HangupRequested, l.CreatedAt.UTC(),
		ntime(l.RingingAt), ntime(l.ConnectedAt), ntime(l.EndedAt), l.UpdatedAt.UTC(), ntime(l.AnsweredAt)}
}

// GetLeg loads one leg.
func (s *Store) GetLeg(ctx context.Context, id string) (*Leg, error) {
	return s.leg(ctx, `id = ?`, id)
}

// LockLeg loads a leg for change. On PostgreSQL it first takes the row
// lock of the leg's conversation, then the leg's (the lock order of every
// transaction, see LockConversation), in one statement: the locking WITH
// query is run before the outer query's row lock, which is taken on rows
// the join has produced. SQLite transactions are already exclusive.
func (s *Store) LockLeg(ctx context.Context, id string) (*Leg, error) {
	l, _, err := s.lockLeg(ctx, id, false)
	return l, err
}

// LegSurroundings is what a call's progress needs to know of the rest of
// its conference. Known is false on SQLite: ask (GetConference,
// OtherLegConnected, HasLiveLeg).
type LegSurroundings struct {
	Known           bool
	ConferenceState string
	// OtherConnected: another leg of the conference has been connected.
	OtherConnected bool
	// OtherLive: another leg of the conference still holds a phone.
	OtherLive bool
}

// LockLegWithSurroundings is LockLeg that also reads, on PostgreSQL, the
// leg's surroundings in the same round trip: a call's progress asks
// whether its conference has ended, whether it is the first call
// connected (the others are invited then) and whether it was the last
// (the conference ends). Two statements: the locks, then the read, which
// so sees whatever committed before the locks were granted (a read inside
// the locking statement would see the conference as it was before a
// transaction it waited for ended it).
func (s *Store) LockLegWithSurroundings(ctx context.Context, id string) (*Leg, LegSurroundings, error) {
	return s.lockLeg(ctx, id, true)
}

// lockLeg is LockLeg, with the surroundings when withSurroundings is set.
func (s *Store) lockLeg(ctx context.Context, id string, withSurroundings bool) (*Leg, LegSurroundings, error) {
	if s.dialect != "postgres" {
		l, err := s.GetLeg(ctx, id)
		return l, LegSurroundings{}, err
	}
	if s.prefetch != nil {
		if l, sur, ok := s.prefetch.take(id, withSurroundings); ok {
			return l, sur, nil
		}
	}
	var l *Leg
	stmts := []pgStmt{{sql: `WITH c AS (SELECT id AS locked_conversation FROM conversations
  WHERE id = (SELECT conversation_id FROM legs WHERE id = ?) FOR UPDATE)
 SELECT ` + legColumnsOf("legs") + ` FROM legs JOIN c ON c.locked_conversation = legs.conversation_id
 WHERE legs.id = ? FOR UPDATE OF legs`, args: []any{id, id}}}
	scans := []func(scanner) error{func(r scanner) (err error) {
		l, err = scanLeg(r)
		return err
	}}
	var sur LegSurroundings
	if withSurroundings {
		sur.Known = true
		stmts = append(stmts, pgStmt{sql: `SELECT f.state,
  EXISTS (SELECT 1 FROM legs o WHERE o.conference_id = f.id AND o.id <> l.id AND o.connected_at IS NOT NULL),
  EXISTS (SELECT 1 FROM legs o WHERE o.conference_id = f.id AND o.id <> l.id AND o.state IN ` + liveStatesSQL + `)
 FROM legs l JOIN conferences f ON f.id = l.conference_id WHERE l.id = ?`, args: []any{id}})
		scans = append(scans, func(r scanner) error {
			return rowErr(r.Scan(&sur.ConferenceState, &sur.OtherConnected, &sur.OtherLive))
		})
	}
	if err := s.queryRowsRaw(ctx, stmts, scans...); err != nil {
		return nil, LegSurroundings{}, err
	}
	if s.prefetch != nil {
		s.prefetch.locked(l.ConferenceID)
	}
	return l, sur, nil
}

// SaveLeg writes every field of a leg (in a PostgreSQL transaction with
// its next statement: execLater).
func (s *Store) SaveLeg(ctx context.Context, l *Leg) error {
	l.UpdatedAt = time.Now().UTC()
	if s.prefetch != nil {
		s.prefetch.saved(l)
	}
	return s.execLater(ctx, `UPDATE legs SET state = ?, cause = ?, cause_text = ?, end_reason = ?, muted = ?, talking = ?,
 hangup_requested = ?, ringing_at = ?, connected_at = ?, ended_at = ?, updated_at = ?, invitation_id = ?, answered_at = ? WHERE id = ?`,
		l.State, l.Cause, l.CauseText, l.EndReason, l.Muted, l.Talking, l.HangupRequested,
		ntime(l.RingingAt), ntime(l.ConnectedAt), ntime(l.EndedAt), l.UpdatedAt, nstr(l.InvitationID), ntime(l.AnsweredAt), l.ID)
}

// Legs lists a conference's legs by creation.
func (s *Store) Legs(ctx context.Context, confID string) ([]Leg, error) {
	var ls []Leg
	err := s.q(ctx).Where("conference_id = ?", confID).Order("created_at, id").Find(&ls).Error
	return ls, err
}

// LiveLegs lists the legs of a conference that still hold a phone.
func (s *Store) LiveLegs(ctx context.Context, confID string) ([]Leg, error) {
	return s.legs(ctx, `conference_id = ? AND state IN `+liveStatesSQL+` ORDER BY created_at, id`, confID)
}

// AllLiveLegs lists every live leg on a node ("" = all nodes). A resync
// reads 10,000 of them at once: raw SQL scanned by hand, not gorm's
// reflection (a third of the time).
func (s *Store) AllLiveLegs(ctx context.Context, node string) ([]Leg, error) {
	if node == "" {
		return s.legs(ctx, `state IN `+liveStatesSQL+` ORDER BY created_at, id`)
	}
	return s.legs(ctx, `state IN `+liveStatesSQL+` AND node = ? ORDER BY created_at, id`, node)
}

// HasLiveLeg reports whether a conference has a leg that still holds a
// phone (LiveLegs without reading them).
func (s *Store) HasLiveLeg(ctx context.Context, confID string) (bool, error) {
	return s.anyLeg(ctx, `conference_id = ? AND state IN `+liveStatesSQL, confID)
}

// OtherLegConnected reports whether a leg of the conference other than
// legID has ever been connected (one indexed probe: the first-connect
// check runs on every answer, and a large conference has many legs).
func (s *Store) OtherLegConnected(ctx context.Context, confID, legID string) (bool, error) {
	return s.anyLeg(ctx, `conference_id = ? AND id <> ? AND connected_at IS NOT NULL`, confID, legID)
}

// CountLiveLegsByConference counts the live legs of every conference that
// has any, in one query (a resync's "active conferences with no live leg
// left").
func (s *Store) CountLiveLegsByConference(ctx context.Context) (map[string]int, error) {
	rows, err := s.queryRaw(ctx, `SELECT conference_id, COUNT(*) FROM legs WHERE state IN `+liveStatesSQL+` GROUP BY conference_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

// HangupsPending reports whether a node has a live leg that we hung up
// (hangup_requested) and that was last changed before t: a hang-up the
// PBX may not have taken.
func (s *Store) HangupsPending(ctx context.Context, node string, t time.Time) (bool, error) {
	return s.anyLeg(ctx, `state IN `+liveStatesSQL+` AND node = ? AND hangup_requested = ? AND updated_at < ?`, node, true, t.UTC())
}

// anyLeg reports whether a leg matches where (one indexed probe, no row
// read).
func (s *Store) anyLeg(ctx context.Context, where string, args ...any) (bool, error) {
	row, err := s.queryRowRaw(ctx, `SELECT 1 FROM legs WHERE `+where+` LIMIT 1`, args...)
	if err != nil {
		return false, err
	}
	var one int
	switch err := row.Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// LiveLegOfUser returns the user's live leg in a conference.
func (s *Store) LiveLegOfUser(ctx context.Context, confID, userID string) (*Leg, error) {
	return s.leg(ctx, `conference_id = ? AND user_id = ? AND state IN `+liveStatesSQL+` LIMIT 1`, confID, userID)
}

// CountLiveLegs counts live legs per node (placement).
func (s *Store) CountLiveLegs(ctx context.Context) (map[string]int, error) {
	type row struct {
		Node string
		N    int
	}
	var rows []row
	err := s.q(ctx).Model(&Leg{}).Select("node, COUNT(*) AS n").
		Where("state IN ?", leg.Live()).Group("node").Scan(&rows).Error
	out := map[string]int{}
	for _, r := range rows {
		out[r.Node] = r.N
	}
	return out, err
}

// CreateInvitation inserts an invitation.
func (s *Store) CreateInvitation(ctx context.Context, inv *Invitation) error {
	_, err := s.execRaw(ctx, `INSERT INTO invitations (`+invitationColumns+`) VALUES (?,?,?,?,?,?,?,?,?)`,
		inv.ID, inv.ConferenceID, inv.ConversationID, inv.UserID, inv.InvitedBy, inv.State, nstr(inv.LegID),
		inv.CreatedAt.UTC(), inv.UpdatedAt.UTC())
	return notFound(s.translate(err))
}

// GetInvitation loads one invitation.
func (s *Store) GetInvitation(ctx context.Context, id string) (*Invitation, error) {
	return s.invitation(ctx, `id = ?`, id)
}

// SaveInvitation writes every field of an invitation.
// (In a PostgreSQL transaction with its next statement: execLater.)
func (s *Store) SaveInvitation(ctx context.Context, inv *Invitation) error {
	inv.UpdatedAt = time.Now().UTC()
	return s.execLater(ctx, `UPDATE invitations SET state = ?, leg_id = ?, updated_at = ? WHERE id = ?`,
		inv.State, nstr(inv.LegID), inv.UpdatedAt, inv.ID)
}

// Invitations lists a conference's invitations by creation.
func (s *Store) Invitations(ctx context.Context, confID string) ([]Invitation, error) {
	var is []Invitation
	err := s.q(ctx).Where("conference_id = ?", confID).Order("created_at, id").Find(&is).Error
	return is, err
}

// PendingInvitation returns the user's pending invitation in a conference.
func (s *Store) PendingInvitation(ctx context.Context, confID, userID string) (*Invitation, error) {
	return s.invitation(ctx, `conference_id = ? AND user_id = ? AND state = 'pending' LIMIT 1`, confID, userID)
}

// PendingInvitationsOf lists a user's pending invitations, newest first.
func (s *Store) PendingInvitationsOf(ctx context.Context, userID string) ([]Invitation, error) {
	var is []Invitation
	err := s.q(ctx).Where("user_id = ? AND state = ?", userID, InvitationPending).Order("created_at DESC, id").Find(&is).Error
	return is, err
}

// GetIdempotency returns the stored answer for (scope, key).
func (s *Store) GetIdempotency(ctx context.Context, scope, key string) (*IdempotencyRecord, error) {
	var r IdempotencyRecord
	err := s.q(ctx).First(&r, "scope = ? AND key = ?", scope, key).Error
	if err != nil {
		return nil, notFound(err)
	}
	return &r, nil
}

// PutIdempotency stores the first answer for (scope, key); ErrConflict when
// one is already there.
func (s *Store) PutIdempotency(ctx context.Context, r *IdempotencyRecord) error {
	err := s.q(ctx).Create(r).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return ErrConflict
	}
	return notFound(err)
}

// StaleRingingLegs lists legs that were created before t and are still in
// a state the ring timeout applies to (the table's: dialing, ringing), for
// the ring-timeout watchdog.
func (s *Store) StaleRingingLegs(ctx context.Context, before time.Time) ([]Leg, error) {
	var ls []Leg
	err := s.q(ctx).Where("state IN ? AND created_at < ?", leg.Accepting(leg.EvRingTimeout), before).
		Order("created_at, id").Limit(500).Find(&ls).Error
	return ls, err
}

// StaleConfirmingLegs lists legs that answered before t and still wait
// for the confirm-to-join key (the table's states for confirm_timeout:
// confirming), for the confirm watchdog.
func (s *Store) StaleConfirmingLegs(ctx context.Context, before time.Time) ([]Leg, error) {
	var ls []Leg
	err := s.q(ctx).Where("state IN ? AND answered_at < ?", leg.Accepting(leg.EvConfirmTimeout), before).
		Order("answered_at, id").Limit(500).Find(&ls).Error
	return ls, err
}

// DeleteIdempotencyBefore forgets idempotency records older than t.
func (s *Store) DeleteIdempotencyBefore(ctx context.Context, t time.Time) error {
	return s.q(ctx).Where("created_at < ?", t).Delete(&IdempotencyRecord{}).Error
}

// ReclaimIdempotency takes over a reservation whose attempt died: the
// record of (scope, key) for the same request, still without an answer and
// reserved before staleBefore, is reserved again at now. It reports
// whether this caller got it (exactly one of several racing callers does).
func (s *Store) ReclaimIdempotency(ctx context.Context, scope, key, requestHash string, staleBefore, now time.Time) (bool, error) {
	res := s.q(ctx).Model(&IdempotencyRecord{}).
		Where("scope = ? AND key = ? AND request_hash = ? AND status = 0 AND created_at < ?", scope, key, requestHash, staleBefore).
		Update("created_at", now)
	return res.RowsAffected == 1, res.Error
}

// DeleteIdempotency forgets one record (a request that failed before it
// had an answer worth keeping).
func (s *Store) DeleteIdempotency(ctx context.Context, scope, key string) error {
	return s.q(ctx).Where("scope = ? AND key = ?", scope, key).Delete(&IdempotencyRecord{}).Error
}

// FinishIdempotency stores the answer of a reserved record.
func (s *Store) FinishIdempotency(ctx context.Context, scope, key string, status int, body string) error {
	return s.q(ctx).Model(&IdempotencyRecord{}).Where("scope = ? AND key = ?", scope, key).
		Updates(map[string]any{"status": status, "body": body}).Error
}

// LockConversationConference takes the conversation's lock (see
// LockConversation) and then its active conference's, and returns that
// conference (nil when it has none): on PostgreSQL "the last leg ended,
// end the conference" and "a new leg joins" are then decided one after
// the other even on different replicas (PostgreSQL checks the state again
// once it has the lock); SQLite transactions are one at a time, a plain
// read. On PostgreSQL it is one statement (the join's round trip less
// while the conversation is held): the conference is read by a lateral
// sub-select of the locked conversation, so the conversation is locked
// whether or not a conference is there. ErrNotFound: no such conversation (PostgreSQL only, as
// LockConversation).
func (s *Store) LockConversationConference(ctx context.Context, convID string) (*Conference, error) {
	conf, _, err := s.LockConversationForJoin(ctx, convID, "")
	return conf, err
}

// LockConversationForJoin is LockConversationConference that also returns,
// when userID is set, the user's pending invitation in that conference (nil
// when there is none): a user joining answers it. On PostgreSQL it is read
// in the round trip that takes the locks, in a statement of its own after
// them (see queryRowsRaw).
func (s *Store) LockConversationForJoin(ctx context.Context, convID, userID string) (*Conference, *Invitation, error) {
	var jl JoinLock
	if err := s.LockConversationForJoinLater(ctx, convID, userID, &jl); err != nil {
		return nil, nil, err
	}
	if err := s.Flush(ctx); err != nil {
		return nil, nil, err
	}
	return jl.Conference, jl.Invitation, nil
}

// JoinLock is what LockConversationForJoinLater read: the active
// conference (nil when there is none) and the joining user's pending
// invitation in it (nil when there is none).
type JoinLock struct {
	Conference *Conference
	Invitation *Invitation
}

// LockConversationForJoinLater is LockConversationForJoin queued: in a
// pipelined PostgreSQL transaction the locks and reads go out with the
// transaction's next round trip (Flush, or the next statement that is
// read) and dst is filled once it is answered; the statements queued
// after it go out behind it, so they run with the conversation locked.
// Elsewhere it runs now.
func (s *Store) LockConversationForJoinLater(ctx context.Context, convID, userID string, dst *JoinLock) error {
	*dst = JoinLock{}
	if s.dialect != "postgres" {
		conf, err := s.ActiveConference(ctx, convID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		dst.Conference = conf
		if userID == "" {
			return nil
		}
		inv, err := s.PendingInvitation(ctx, conf.ID, userID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		dst.Invitation = inv
		return err
	}
	stmts := []pgStmt{{sql: `WITH c AS (SELECT id FROM conversations WHERE id = ? FOR UPDATE)
 SELECT x.id, x.conversation_id, x.state, x.node, x.created_by, x.created_at, x.ended_at, x.end_reason FROM c
 LEFT JOIN LATERAL (SELECT ` + conferenceColumns + ` FROM conferences WHERE conversation_id = c.id AND state = 'active' FOR UPDATE) x ON TRUE`,
		args: []any{convID}}}
	scans := []func(scanner) error{func(r scanner) error {
		var id, conv, state, node, by, reason sql.NullString
		var created, ended sql.NullTime
		if err := r.Scan(&id, &conv, &state, &node, &by, &created, &ended, &reason); err != nil {
			return rowErr(err)
		}
		if id.Valid {
			dst.Conference = &Conference{ID: id.String, ConversationID: conv.String, State: state.String, Node: node.String,
				CreatedBy: by.String, CreatedAt: created.Time.UTC(), EndedAt: ptime(ended), EndReason: reason.String}
		}
		return nil
	}}
	if userID != "" {
		stmts = append(stmts, pgStmt{sql: `SELECT ` + invitationColumns + ` FROM invitations WHERE conversation_id = ? AND user_id = ?
 AND state = 'pending' AND conference_id = (SELECT id FROM conferences WHERE conversation_id = ? AND state = 'active') LIMIT 1`,
			args: []any{convID, userID, convID}})
		scans = append(scans, func(r scanner) error {
			inv, err := scanInvitation(r)
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			dst.Invitation = inv
			return err
		})
	}
	if s.pipe == nil {
		return s.queryRowsRaw(ctx, stmts, scans...)
	}
	for i, st := range stmts {
		s.pipe.readLater(rebind(s.dialect, st.sql), st.args, scans[i], nil)
	}
	return nil
}

// Flush sends what a pipelined PostgreSQL transaction holds and reads
// what was queued to be read (LockConversationForJoinLater,
// DecideDialIn): their outcome is known when it returns. Elsewhere it
// does nothing.
func (s *Store) Flush(ctx context.Context) error {
	if s.pipe == nil {
		return nil
	}
	return s.pipe.sync(ctx)
}

// LockConversation takes the conversation's row lock on PostgreSQL. Every
// transaction that changes a conversation's state takes it first: they all
// append to the conversation's event log (which locks that row) and most
// also lock a leg or the conference, so taking the conversation first gives
// one lock order and no deadlock. SQLite transactions are one at a time.
func (s *Store) LockConversation(ctx context.Context, id string) error {
	if s.dialect != "postgres" {
		return nil
	}
	var got string
	row, err := s.queryRowRaw(ctx, `SELECT id FROM conversations WHERE id = ? FOR UPDATE`, id)
	if err != nil {
		return err
	}
	return rowErr(row.Scan(&got))
}

// CreateInvitations inserts several invitations with one statement.
func (s *Store) CreateInvitations(ctx context.Context, invs []Invitation) error {
	if len(invs) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO invitations (` + invitationColumns + `) VALUES `)
	args := make([]any, 0, 9*len(invs))
	for i, inv := range invs {
		if i > 0 {
			q.WriteString(",")
		}
		q.WriteString("(?,?,?,?,?,?,?,?,?)")
		args = append(args, inv.ID, inv.ConferenceID, inv.ConversationID, inv.UserID, inv.InvitedBy, inv.State,
			nstr(inv.LegID), inv.CreatedAt.UTC(), inv.UpdatedAt.UTC())
	}
	_, err := s.execRaw(ctx, q.String(), args...)
	return notFound(s.translate(err))
}
