package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/storage"
)

// JoinRequest is "Join Conference Now Using": one of the caller's published
// numbers by label, or a new number.
type JoinRequest struct {
	Published string `json:"published,omitempty"`
	Number    string `json:"number,omitempty"`
}

// dialTarget is who a new leg calls and on whose behalf.
type dialTarget struct {
	legID        string // pre-chosen id (an invitation links to it), or "" for a new one
	userID       *string
	guestID      *string
	invitationID *string
	number       string
	// source says where the number came from, for the dial policy and the
	// audit: "published" (the user's own published number), "new_number"
	// (typed in Join Conference), "redirect", or "guest" (a join link).
	source string
}

// resolveNumber turns a request's "published" label or "number" into a
// dialable number for user u.
func (c *Controller) resolveNumber(u *storage.User, published, number string, field string) (string, error) {
	published = strings.TrimSpace(published)
	hasNumber := strings.TrimSpace(number) != ""
	switch {
	case published != "" && hasNumber:
		return "", invalid("published", "give either published (a label of your numbers) or number, not both")
	case hasNumber:
		return c.numbers.Normalize(field, number)
	case published != "":
		label := strings.ToLower(published)
		for _, n := range u.Numbers {
			if n.Label == label {
				return n.Number, nil
			}
		}
		return "", invalid("published", "published: you have no %q number; yours are: %s", published, labelsOf(u))
	default:
		for _, n := range u.Numbers {
			if n.IsDefault {
				return n.Number, nil
			}
		}
		return "", invalid(field, "%s: you have no published number; give a number", field)
	}
}

// numberSource names where a dialed number came from: typed (as kind) or
// one of the user's published numbers.
func numberSource(typed, kind string) string {
	if strings.TrimSpace(typed) != "" {
		return kind
	}
	return "published"
}

func labelsOf(u *storage.User) string {
	if len(u.Numbers) == 0 {
		return "none"
	}
	ls := make([]string, 0, len(u.Numbers))
	for _, n := range u.Numbers {
		ls = append(ls, n.Label)
	}
	return strings.Join(ls, ", ")
}

// JoinAudio is "Join Conference Now Using": it starts the conversation's
// conference if needed (inviting every other participant), and has the PBX
// call the caller.
func (c *Controller) JoinAudio(ctx context.Context, a Actor, convID string, req JoinRequest) (JoinResult, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err != nil {
		return JoinResult{}, err
	}
	if conv.EndedAt != nil {
		return JoinResult{}, conflict("conversation_ended", "the conversation has ended")
	}
	u, err := c.store.GetUser(ctx, a.UserID)
	if err != nil {
		return JoinResult{}, err
	}
	number, err := c.resolveNumber(u, req.Published, req.Number, "number")
	if err != nil {
		return JoinResult{}, err
	}
	uid := a.UserID
	return c.dial(ctx, conv, a, dialTarget{userID: &uid, number: number, source: numberSource(req.Number, "new_number")}, nil)
}

// dial records a new leg (starting the conference when there is none) and
// has the PBX place it. before, when set, runs inside the transaction first
// (accepting an invitation, say) and may refuse.
func (c *Controller) dial(ctx context.Context, conv *storage.Conversation, a Actor, t dialTarget,
	before func(tx *storage.Store, conf *storage.Conference) error) (JoinResult, error) {
	if c.draining.Load() {
		return JoinResult{}, unavailable("convoice is shutting down; try again in a moment")
	}
	c.inflight.Add(1)
	defer c.inflight.Done()

	if err := c.checkDial(ctx, DialCheck{Actor: a, ConversationID: conv.ID, UserID: t.userID, GuestID: t.guestID,
		Number: t.number, Source: t.source}); err != nil {
		return JoinResult{}, err
	}
	// Fail fast, before anything is written, when no PBX can take a call
	// (after a node this replica just took over has its event connection).
	if !c.Ready() {
		for _, n := range c.nodes {
			c.awaitSwitch(ctx, n)
		}
	}
	if !c.Ready() {
		return JoinResult{}, unavailable("the PBX is not reachable right now; no call was placed, try again shortly")
	}
	// placed is what dialTx settles before it lets this goroutine place
	// the call (tx.Proceed); invitation is set when the transaction is
	// done, and read only after Durable.
	var (
		placed     dialPlaced
		invitation *storage.Invitation
	)
	now := time.Now().UTC()
	var err error
	// On PostgreSQL two requests (or replicas) may both find no conference
	// and both start one; the partial unique index lets one win, and the
	// other runs its transaction again and joins that conference.
	//
	// The call is placed as soon as the leg is committed, while the disk
	// makes it durable (storage.InTxEarly): the phone's ringing does not
	// wait for an fsync, the answer to the request does (durable below).
	var commit storage.Commit
	for attempt := 0; ; attempt++ {
		commit, err = c.store.InTxEarly(ctx, func(tx *storage.Store) error {
			inv, err := c.dialTx(ctx, tx, conv, a, t, before, now, &placed)
			invitation = inv
			return err
		})
		if !errors.Is(err, errConferenceRace) || attempt == 2 {
			break
		}
	}
	if errors.Is(err, errConferenceRace) {
		err = conflict("audio_starting", "the audio of this conversation is being started by someone else; try again")
	}
	if err != nil {
		c.dialed(ctx, a, conv.ID, t, nil, err) // releases the dial's reservation
		return JoinResult{}, err
	}
	conf, leg := placed.conf, placed.leg
	res, err := c.placeLeg(ctx, conv, conf, leg, placed.newConf)
	if derr := commit.Durable(); derr != nil {
		// The record of the call may be lost: do not leave a call that
		// nothing knows of.
		c.log.Error("dial not durable: hanging the call up", "leg", leg.ID, "err", derr)
		if err == nil {
			c.hangupLost(ctx, conf, leg.ID)
		}
		return JoinResult{}, derr
	}
	if err != nil {
		return JoinResult{}, err
	}
	if invitation != nil {
		iv := invitationView(invitation)
		res.Invitation = &iv
	}
	return res, nil
}

// placeLeg asks the conference's PBX node for the call (creating the
// conference there first when it is new). A refusal ends the leg.
func (c *Controller) placeLeg(ctx context.Context, conv *storage.Conversation, conf *storage.Conference, leg *storage.Leg, newConf bool) (JoinResult, error) {
	node, err := c.nodeOf(conf)
	if err != nil {
		c.failLeg(ctx, leg.ID, 0, "", err.Error())
		return JoinResult{}, err
	}
	c.awaitSwitch(ctx, node)
	if newConf {
		c.metrics.Conferences.Inc()
		pctx, cancel := pbxCtx(ctx)
		err := node.Driver.CreateConference(pctx, conf.ID)
		cancel()
		if err != nil {
			c.log.Warn("create conference on pbx failed", "conference", conf.ID, "node", node.Name, "err", err)
			c.failLeg(ctx, leg.ID, 0, "", "the PBX could not create the conference: "+err.Error())
			return JoinResult{}, c.pbxError(err)
		}
	}
	callerName := c.cfg.CallerIDName
	if conv.Subject != "" {
		callerName = c.cfg.CallerIDName + ": " + truncate(conv.Subject, 40)
	}
	pctx, cancel := pbxCtx(ctx)
	err = node.Driver.Dial(pctx, pbx.DialRequest{LegID: leg.ID, ConferenceID: conf.ID, Number: leg.Number,
		CallerIDName: callerName, CallerIDNumber: c.cfg.CallerIDNumber, RingTimeout: c.cfg.RingTimeout})
	cancel()
	switch {
	case err == nil || errors.Is(err, pbx.ErrExists):
		c.metrics.DialOuts.WithLabelValues(node.Name, "ok").Inc()
	default:
		c.metrics.DialOuts.WithLabelValues(node.Name, "error").Inc()
		c.log.Warn("originate failed", "leg", leg.ID, "node", node.Name, "number_kind", describeNumber(leg.Number), "err", err)
		c.failLeg(ctx, leg.ID, 0, "", "the PBX did not place the call: "+err.Error())
		return JoinResult{}, c.pbxError(err)
	}
	return JoinResult{Conference: ConferenceRef{ID: conf.ID, State: conf.State}, Leg: legView(leg)}, nil
}

// pbxError says what a driver error means to the user.
func (c *Controller) pbxError(err error) error {
	switch {
	case errors.Is(err, pbx.ErrRefused):
		return &Error{Kind: KindPBXRefused, Code: "pbx_refused", Message: "the PBX refused the call: " + err.Error(), Err: err}
	case errors.Is(err, pbx.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &Error{Kind: KindUnavailable, Code: "pbx_unavailable", Message: "the PBX is not reachable right now; the call was not placed", Err: err}
	}
	if e, ok := AsError(err); ok {
		return e
	}
	return &Error{Kind: KindPBXRefused, Code: "pbx_error", Message: "the PBX could not place the call: " + err.Error(), Err: err}
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// inviteOthers invites every present participant but the starter.
func (c *Controller) inviteOthers(ctx context.Context, tx *storage.Store, conv *storage.Conversation, conf *storage.Conference, by string, except *string) error {
	ps, err := tx.Participants(ctx, conv.ID)
	if err != nil {
		return err
	}
	// The conference is new, so nobody has an invitation yet: write them
	// all, and their events, with one statement each rather than four
	// statements per person inside the writer's transaction.
	now := time.Now().UTC()
	var invs []storage.Invitation
	var datas []string
	for _, p := range ps {
		if p.LeftAt != nil || (except != nil && p.UserID == *except) {
			continue
		}
		inv := storage.Invitation{ID: NewID(), ConferenceID: conf.ID, ConversationID: conf.ConversationID, UserID: p.UserID,
			InvitedBy: by, State: storage.InvitationPending, CreatedAt: now, UpdatedAt: now}
		b, err := json.Marshal(invitationView(&inv))
		if err != nil {
			return err
		}
		invs = append(invs, inv)
		datas = append(datas, string(b))
	}
	if err := tx.CreateInvitations(ctx, invs); err != nil {
		return err
	}
	_, err = tx.AppendEvents(ctx, conv.ID, "invitation.updated", datas)
	return err
}

// invite creates a pending invitation (or returns the pending one).
func (c *Controller) invite(ctx context.Context, tx *storage.Store, conf *storage.Conference, userID, by string) (*storage.Invitation, error) {
	if inv, err := tx.PendingInvitation(ctx, conf.ID, userID); err == nil {
		return inv, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	now := time.Now().UTC()
	inv := &storage.Invitation{ID: NewID(), ConferenceID: conf.ID, ConversationID: conf.ConversationID, UserID: userID,
		InvitedBy: by, State: storage.InvitationPending, CreatedAt: now, UpdatedAt: now}
	if err := tx.CreateInvitation(ctx, inv); err != nil {
		return nil, err
	}
	return inv, appendEvent(ctx, tx, conf.ConversationID, "invitation.updated", invitationView(inv))
}

func (c *Controller) setInvitationState(ctx context.Context, tx *storage.Store, inv *storage.Invitation, state string) error {
	inv.State = state
	if err := tx.SaveInvitation(ctx, inv); err != nil {
		return err
	}
	return appendEvent(ctx, tx, inv.ConversationID, "invitation.updated", invitationView(inv))
}

// GetAudio returns the conversation's active conference with legs and
// invitations; with last, the newest one even when it has ended.
func (c *Controller) GetAudio(ctx context.Context, a Actor, convID string, last bool) (ConferenceView, error) {
	if _, _, err := c.member(ctx, a, convID); err != nil {
		return ConferenceView{}, err
	}
	conf, err := c.store.ActiveConference(ctx, convID)
	if errors.Is(err, storage.ErrNotFound) && last {
		conf, err = c.store.LatestConference(ctx, convID)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return ConferenceView{}, &Error{Kind: KindNotFound, Code: "no_audio", Message: "this conversation has no audio now; start it with Join Conference"}
	}
	if err != nil {
		return ConferenceView{}, err
	}
	// The conference, its legs and its invitations are separate reads; a
	// commit between them (the last leg ending ends the conference) would
	// show a failed leg in an "active" conference. Re-read the conference
	// after the rest and start again when it moved on.
	for attempt := 0; ; attempt++ {
		v, err := c.fullConferenceView(ctx, conf)
		if err != nil {
			return ConferenceView{}, err
		}
		now, err := c.store.GetConference(ctx, conf.ID)
		if err != nil {
			return ConferenceView{}, err
		}
		if now.State == conf.State || attempt == 3 {
			return v, nil
		}
		conf = now
	}
}

func (c *Controller) fullConferenceView(ctx context.Context, conf *storage.Conference) (ConferenceView, error) {
	v := conferenceView(conf)
	legs, err := c.store.Legs(ctx, conf.ID)
	if err != nil {
		return v, err
	}
	for i := range legs {
		v.Legs = append(v.Legs, legView(&legs[i]))
	}
	invs, err := c.store.Invitations(ctx, conf.ID)
	if err != nil {
		return v, err
	}
	for i := range invs {
		v.Invitations = append(v.Invitations, invitationView(&invs[i]))
	}
	return v, nil
}

// moderatedConversation loads a conversation for a moderation request: a
// participant's, or any for an admin (the admin token belongs to no user
// and is in no conversation). Others get the unknown-id answer.
func (c *Controller) moderatedConversation(ctx context.Context, a Actor, convID string) (*storage.Conversation, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err == nil || !a.Admin {
		return conv, err
	}
	conv, err = c.store.GetConversation(ctx, convID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFoundErr("conversation")
	}
	return conv, err
}

// isModerator: the organiser of the conversation, or an admin.
func isModerator(a Actor, conv *storage.Conversation) bool {
	return a.Admin || conv.CreatorID == a.UserID
}

// EndAudio hangs up every leg and ends the conference; the IM conversation
// goes on. Organiser (or admin) only.
func (c *Controller) EndAudio(ctx context.Context, a Actor, convID string) error {
	conv, err := c.moderatedConversation(ctx, a, convID)
	if err != nil {
		return err
	}
	if !isModerator(a, conv) {
		return forbidden("organizer_only", "only the organiser of the conversation can end the audio for everyone; hang up your own call instead")
	}
	conf, err := c.store.ActiveConference(ctx, convID)
	if errors.Is(err, storage.ErrNotFound) {
		return &Error{Kind: KindNotFound, Code: "no_audio", Message: "this conversation has no audio now"}
	}
	if err != nil {
		return err
	}
	c.Audit(ctx, AuditEntry{Actor: a, Action: ActionAudioEnd, ConversationID: convID, TargetID: conf.ID})
	return c.endConference(ctx, conf, "ended by "+a.Name)
}

// endConference marks the conference ended (cancelling pending invitations
// and flagging live legs as hung up by us), then tells the PBX to hang up
// everything and destroy the room.
func (c *Controller) endConference(ctx context.Context, conf *storage.Conference, reason string) error {
	ended := false
	err := c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.LockConversation(ctx, conf.ConversationID); err != nil {
			return err
		}
		var err error
		ended, err = c.endConferenceTx(ctx, tx, conf, reason)
		if err != nil {
			return err
		}
		legs, err := tx.LiveLegs(ctx, conf.ID)
		if err != nil {
			return err
		}
		for i := range legs {
			legs[i].HangupRequested = true
			if legs[i].EndReason == "" {
				legs[i].EndReason = "audio " + reason
			}
			if err := tx.SaveLeg(ctx, &legs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if ended {
		c.destroyOnPBX(ctx, conf)
	}
	return nil
}

// endConferenceTx ends the conference in tx: state, invitations, event.
func (c *Controller) endConferenceTx(ctx context.Context, tx *storage.Store, conf *storage.Conference, reason string) (bool, error) {
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
			if err := c.setInvitationState(ctx, tx, &invs[i], storage.InvitationCancelled); err != nil {
				return false, err
			}
		}
	}
	conf.State, conf.EndedAt, conf.EndReason = storage.ConferenceEnded, &now, reason
	return true, appendEvent(ctx, tx, conf.ConversationID, "audio.ended", conferenceView(conf))
}

// destroyOnPBX removes the room and every call in it from the PBX. Done
// in the background: the request has its answer; failures are logged and
// the next resync removes what is left.
func (c *Controller) destroyOnPBX(ctx context.Context, conf *storage.Conference) {
	node, err := c.nodeOf(conf)
	if err != nil {
		return
	}
	pctx, cancel := pbxCtx(ctx)
	defer cancel()
	if err := node.Driver.EndConference(pctx, conf.ID); err != nil && !errors.Is(err, pbx.ErrNotFound) {
		c.log.Warn("end conference on pbx failed; resync will retry", "conference", conf.ID, "node", node.Name, "err", err)
	}
}

// MyInvitations lists the caller's pending invitations.
func (c *Controller) MyInvitations(ctx context.Context, a Actor) ([]InvitationView, error) {
	if err := requireUser(a); err != nil {
		return nil, err
	}
	invs, err := c.store.PendingInvitationsOf(ctx, a.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]InvitationView, 0, len(invs))
	for i := range invs {
		out = append(out, invitationView(&invs[i]))
	}
	return out, nil
}

// myInvitation loads an invitation addressed to the caller; anyone else's
// looks unknown.
func (c *Controller) myInvitation(ctx context.Context, a Actor, invID string) (*storage.Invitation, *storage.Conversation, error) {
	inv, err := c.store.GetInvitation(ctx, invID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && inv.UserID != a.UserID) {
		return nil, nil, notFoundErr("invitation")
	}
	if err != nil {
		return nil, nil, err
	}
	conv, _, err := c.member(ctx, a, inv.ConversationID)
	if err != nil {
		return nil, nil, notFoundErr("invitation")
	}
	return inv, conv, nil
}

// checkPending refuses answering an invitation that is no longer pending.
func checkPending(inv *storage.Invitation, conf *storage.Conference) error {
	if conf.State != storage.ConferenceActive {
		return conflict("audio_ended", "the audio conference of this invitation has ended")
	}
	if inv.State != storage.InvitationPending {
		return conflict("invitation_not_pending", "this invitation was already answered (%s)", inv.State)
	}
	return nil
}

// AcceptInvitation dials the invitee's default published number, or the
// published label they pick.
func (c *Controller) AcceptInvitation(ctx context.Context, a Actor, invID, published string) (InvitationResult, error) {
	return c.answerInvitation(ctx, a, invID, storage.InvitationAccepted, published, "")
}

// RedirectInvitation dials the number the invitee gives instead.
func (c *Controller) RedirectInvitation(ctx context.Context, a Actor, invID, number string) (InvitationResult, error) {
	if strings.TrimSpace(number) == "" {
		return InvitationResult{}, invalid("number", "number: give the number to call")
	}
	return c.answerInvitation(ctx, a, invID, storage.InvitationRedirected, "", number)
}

func (c *Controller) answerInvitation(ctx context.Context, a Actor, invID, state, published, number string) (InvitationResult, error) {
	inv, conv, err := c.myInvitation(ctx, a, invID)
	if err != nil {
		return InvitationResult{}, err
	}
	u, err := c.store.GetUser(ctx, a.UserID)
	if err != nil {
		return InvitationResult{}, err
	}
	dialNumber, err := c.resolveNumber(u, published, number, "number")
	if err != nil {
		return InvitationResult{}, err
	}
	uid := a.UserID
	legID := NewID()
	var answered storage.Invitation
	res, err := c.dial(ctx, conv, a, dialTarget{legID: legID, userID: &uid, invitationID: &inv.ID, number: dialNumber, source: numberSource(number, "redirect")},
		func(tx *storage.Store, conf *storage.Conference) error {
			cur, err := tx.GetInvitation(ctx, inv.ID)
			if err != nil {
				return err
			}
			if cur.ConferenceID != conf.ID {
				return conflict("audio_ended", "the audio conference of this invitation has ended")
			}
			if err := checkPending(cur, conf); err != nil {
				return err
			}
			if l, err := tx.LiveLegOfUser(ctx, conf.ID, uid); err == nil {
				return conflict("already_in_audio", "you are already in this conference (%s, %s)", l.Number, l.State)
			}
			cur.LegID = &legID
			if err := c.setInvitationState(ctx, tx, cur, state); err != nil {
				return err
			}
			answered = *cur
			return nil
		})
	if err != nil {
		return InvitationResult{}, err
	}
	lv := res.Leg
	return InvitationResult{Invitation: invitationView(&answered), Leg: &lv}, nil
}

// DeclineInvitation: nothing rings; the invitee stays in the conversation.
func (c *Controller) DeclineInvitation(ctx context.Context, a Actor, invID string) (InvitationResult, error) {
	inv, _, err := c.myInvitation(ctx, a, invID)
	if err != nil {
		return InvitationResult{}, err
	}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.GetInvitation(ctx, inv.ID)
		if err != nil {
			return err
		}
		conf, err := tx.GetConference(ctx, cur.ConferenceID)
		if err != nil {
			return err
		}
		if err := checkPending(cur, conf); err != nil {
			return err
		}
		*inv = *cur
		return c.setInvitationState(ctx, tx, inv, storage.InvitationDeclined)
	})
	if err != nil {
		return InvitationResult{}, err
	}
	return InvitationResult{Invitation: invitationView(inv)}, nil
}

// InviteSomeone adds contacts to the conversation and invites them to its
// running conference.
func (c *Controller) InviteSomeone(ctx context.Context, a Actor, convID string, userIDs []string) ([]InvitationView, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err != nil {
		return nil, err
	}
	ids := dedupe(userIDs)
	if len(ids) == 0 {
		return nil, invalid("user_ids", "user_ids: choose at least one person to invite")
	}
	us, err := c.store.GetUsers(ctx, ids)
	if err != nil {
		return nil, err
	}
	if len(us) != len(ids) {
		return nil, invalid("user_ids", "user_ids: %s", missingIDs(ids, us))
	}
	for i, u := range us {
		if u.ID == a.UserID {
			return nil, invalid("user_ids", "user_ids[%d]: you cannot invite yourself", i)
		}
		ok, err := c.store.IsContact(ctx, a.UserID, u.ID)
		if err != nil {
			return nil, err
		}
		if !ok {
			if p, err := c.store.GetParticipant(ctx, conv.ID, u.ID); err != nil || p.LeftAt != nil {
				return nil, invalid("user_ids", "user_ids: %s is not on your contact list", u.DisplayName)
			}
		}
	}
	var out []InvitationView
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		conf, err := tx.ActiveConference(ctx, conv.ID)
		if errors.Is(err, storage.ErrNotFound) {
			return conflict("no_audio", "there is no audio conference running; start one with Join Conference first")
		}
		if err != nil {
			return err
		}
		if _, err := c.addParticipants(ctx, tx, conv, us); err != nil {
			return err
		}
		for _, u := range us {
			if l, err := tx.LiveLegOfUser(ctx, conf.ID, u.ID); err == nil {
				return conflict("already_in_audio", "%s is already in the audio (%s)", u.DisplayName, l.State)
			}
			inv, err := c.invite(ctx, tx, conf, u.ID, a.UserID)
			if err != nil {
				return err
			}
			out = append(out, invitationView(inv))
		}
		return nil
	})
	return out, err
}

// legFor loads a leg the caller may see (a participant of its
// conversation); others get the unknown answer.
func (c *Controller) legFor(ctx context.Context, a Actor, legID string) (*storage.Leg, *storage.Conversation, error) {
	l, err := c.store.GetLeg(ctx, legID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, notFoundErr("leg")
	}
	if err != nil {
		return nil, nil, err
	}
	conv, _, err := c.member(ctx, a, l.ConversationID)
	if err != nil {
		if a.Admin {
			conv, err = c.store.GetConversation(ctx, l.ConversationID)
			if err == nil {
				return l, conv, nil
			}
		}
		return nil, nil, notFoundErr("leg")
	}
	return l, conv, nil
}

func ownsLeg(a Actor, l *storage.Leg) bool {
	return l.UserID != nil && *l.UserID == a.UserID && a.UserID != ""
}

// SetLegMute mutes or unmutes a connected leg: the organiser any leg, a
// participant their own.
func (c *Controller) SetLegMute(ctx context.Context, a Actor, legID string, muted bool) (LegView, error) {
	l, conv, err := c.legFor(ctx, a, legID)
	if err != nil {
		return LegView{}, err
	}
	if !ownsLeg(a, l) && !isModerator(a, conv) {
		return LegView{}, forbidden("organizer_only", "only the organiser can mute someone else")
	}
	if l.State != storage.LegConnected {
		return LegView{}, conflict("leg_not_connected", "the call is %s, not connected; only a connected call can be muted", l.State)
	}
	conf, err := c.store.GetConference(ctx, l.ConferenceID)
	if err != nil {
		return LegView{}, err
	}
	node, err := c.nodeOf(conf)
	if err != nil {
		return LegView{}, err
	}
	pctx, cancel := pbxCtx(ctx)
	err = node.Driver.SetMute(pctx, conf.ID, l.ID, muted)
	cancel()
	switch {
	case errors.Is(err, pbx.ErrNotFound):
		return LegView{}, conflict("leg_not_connected", "the call has just ended")
	case errors.Is(err, pbx.ErrNotReady):
		return LegView{}, conflict("leg_not_connected", "the call is not in the conference yet")
	case err != nil:
		return LegView{}, c.pbxError(err)
	}
	var out LegView
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.LockConversation(ctx, l.ConversationID); err != nil {
			return err
		}
		cur, err := tx.GetLegForUpdate(ctx, l.ID)
		if err != nil {
			return err
		}
		if cur.Muted != muted {
			cur.Muted = muted
			if muted {
				cur.Talking = false
			}
			if err := tx.SaveLeg(ctx, cur); err != nil {
				return err
			}
			if err := appendEvent(ctx, tx, cur.ConversationID, "leg.updated", legView(cur)); err != nil {
				return err
			}
		}
		out = legView(cur)
		return nil
	})
	c.auditLeg(ctx, a, muteAction(muted), l, err)
	return out, err
}

// HangupLeg hangs up one leg: anyone their own, the organiser any.
func (c *Controller) HangupLeg(ctx context.Context, a Actor, legID string) error {
	l, conv, err := c.legFor(ctx, a, legID)
	if err != nil {
		return err
	}
	if !ownsLeg(a, l) && !isModerator(a, conv) {
		return forbidden("organizer_only", "only the organiser can hang up someone else; you can hang up your own call")
	}
	if !storage.LegLive(l.State) {
		return conflict("leg_not_live", "the call has already ended (%s)", l.State)
	}
	conf, err := c.store.GetConference(ctx, l.ConferenceID)
	if err != nil {
		return err
	}
	reason := "hung up by " + a.Name
	if ownsLeg(a, l) {
		reason = "hung up by the participant"
	}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.LockConversation(ctx, l.ConversationID); err != nil {
			return err
		}
		cur, err := tx.GetLegForUpdate(ctx, l.ID)
		if err != nil {
			return err
		}
		cur.HangupRequested = true
		cur.EndReason = reason
		*l = *cur
		return tx.SaveLeg(ctx, cur)
	})
	if err != nil {
		return err
	}
	c.hangupOnPBX(ctx, conf, l)
	c.auditLeg(ctx, a, ActionLegHangup, l, nil)
	return nil
}

// hangupOnPBX asks the PBX to hang a leg up. When the PBX no longer knows
// the leg, the leg is ended here (its end event will never come).
func (c *Controller) hangupOnPBX(ctx context.Context, conf *storage.Conference, l *storage.Leg) {
	node, err := c.nodeOf(conf)
	if err != nil {
		return
	}
	pctx, cancel := pbxCtx(ctx)
	err = node.Driver.Hangup(pctx, l.ID)
	cancel()
	if errors.Is(err, pbx.ErrNotFound) {
		c.endLeg(ctx, l.ID, 0, "", "already gone from the PBX")
		return
	}
	if err != nil {
		c.log.Warn("hangup on pbx failed; the watchdog and resync will retry", "leg", l.ID, "err", err)
	}
}

// hangupLost hangs up a call whose record the store could not make
// durable; the store refuses writes by then, so only the PBX is told.
func (c *Controller) hangupLost(ctx context.Context, conf *storage.Conference, legID string) {
	node, err := c.nodeOf(conf)
	if err != nil {
		return
	}
	pctx, cancel := pbxCtx(context.WithoutCancel(ctx))
	defer cancel()
	if err := node.Driver.Hangup(pctx, legID); err != nil && !errors.Is(err, pbx.ErrNotFound) {
		c.log.Warn("hanging up a call without a durable record failed", "leg", legID, "err", err)
	}
}

// errConferenceRace: another transaction started the conversation's
// conference first (PostgreSQL); dial runs its transaction again.
var errConferenceRace = errors.New("conference started concurrently")

// dialPlaced is what dialTx settles before the call may be placed.
type dialPlaced struct {
	conf    *storage.Conference
	leg     *storage.Leg
	newConf bool
}

// dialTx is dial's transaction: find (and lock) or start the conference,
// refuse a second live leg, record the leg, invite the others. Once the
// leg is written it fills p and lets the caller place the call
// (tx.Proceed): what follows only records (events, the invitation answered
// by joining, the invitations of a new conference, the audit), and should
// it fail the caller hangs the call up (Commit.Durable).
func (c *Controller) dialTx(ctx context.Context, tx *storage.Store, conv *storage.Conversation, a Actor, t dialTarget,
	before func(tx *storage.Store, conf *storage.Conference) error, now time.Time, p *dialPlaced,
) (invitation *storage.Invitation, err error) {
	// The conversation's lock first (see storage.LockConversation): then
	// its last leg ending cannot end the conference under us.
	if err := tx.LockConversation(ctx, conv.ID); err != nil {
		return nil, err
	}
	conf, err := tx.LockActiveConference(ctx, conv.ID)
	newConf := false
	if errors.Is(err, storage.ErrNotFound) {
		node, perr := c.placeConference(ctx)
		if perr != nil {
			return nil, perr
		}
		conf = &storage.Conference{ID: NewID(), ConversationID: conv.ID, State: storage.ConferenceActive,
			Node: node.Name, CreatedBy: a.UserID, CreatedAt: now}
		if err := tx.CreateConference(ctx, conf); err != nil {
			if errors.Is(err, storage.ErrConflict) {
				return nil, errConferenceRace
			}
			return nil, err
		}
		newConf = true
		if err := appendEvent(ctx, tx, conv.ID, "audio.started", conferenceView(conf)); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if before != nil {
		if err := before(tx, conf); err != nil {
			return nil, err
		}
	}
	if t.userID != nil {
		if l, err := tx.LiveLegOfUser(ctx, conf.ID, *t.userID); err == nil {
			return nil, &Error{Kind: KindConflict, Code: "already_in_audio",
				Message: fmt.Sprintf("a call to %s is already %s in this conference; hang it up first", l.Number, l.State)}
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
	}
	legID := t.legID
	if legID == "" {
		legID = NewID()
	}
	leg := &storage.Leg{ID: legID, ConferenceID: conf.ID, ConversationID: conv.ID, UserID: t.userID,
		GuestID: t.guestID, InvitationID: t.invitationID, Node: conf.Node, Number: t.number,
		State: storage.LegDialing, CreatedAt: now, UpdatedAt: now}
	if err := tx.CreateLeg(ctx, leg); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			// The unique index of live legs: a concurrent request (another
			// replica, a double click on PostgreSQL) placed this person's
			// call first.
			return nil, &Error{Kind: KindConflict, Code: "already_in_audio",
				Message: "a call to you is already being placed in this conference"}
		}
		return nil, err
	}
	*p = dialPlaced{conf: conf, leg: leg, newConf: newConf}
	tx.Proceed()

	if err := appendEvent(ctx, tx, conv.ID, "leg.updated", legView(leg)); err != nil {
		return nil, err
	}
	if t.userID != nil && t.invitationID == nil {
		// Joining directly answers one's own pending invitation.
		if inv, err := tx.PendingInvitation(ctx, conf.ID, *t.userID); err == nil {
			inv.LegID = &leg.ID
			if err := c.setInvitationState(ctx, tx, inv, storage.InvitationAccepted); err != nil {
				return nil, err
			}
			invitation = inv
		}
	}
	if newConf {
		if err := c.inviteOthers(ctx, tx, conv, conf, a.UserID, t.userID); err != nil {
			return nil, err
		}
	}
	if err := c.dialedTx(ctx, tx, a, conv.ID, t, leg); err != nil {
		return nil, err
	}
	return invitation, nil
}
