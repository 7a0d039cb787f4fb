package controller

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/convoice/convoice/storage"
)

// NewConversation is what a user gives to start one.
type NewConversation struct {
	Kind         string   `json:"kind"`
	Subject      string   `json:"subject"`
	Participants []string `json:"participants"`
}

const (
	maxSubject      = 500
	maxMessage      = 8000
	maxParticipants = 250
)

// member checks that the actor is a present participant of the
// conversation. Anyone else, and an unknown id, get the same not-found
// answer, so conversations cannot be discovered.
func (c *Controller) member(ctx context.Context, a Actor, convID string) (*storage.Conversation, *storage.Participant, error) {
	if a.UserID == "" {
		return nil, nil, notFoundErr("conversation")
	}
	conv, p, err := c.store.Membership(ctx, convID, a.UserID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && p.LeftAt != nil) {
		return nil, nil, notFoundErr("conversation")
	}
	if err != nil {
		return nil, nil, err
	}
	return conv, p, nil
}

// CheckMember is member for callers outside the package (event streams).
func (c *Controller) CheckMember(ctx context.Context, a Actor, convID string) error {
	_, _, err := c.member(ctx, a, convID)
	return err
}

// CreateConversation starts an IM or sharing conversation with the caller
// as organiser.
func (c *Controller) CreateConversation(ctx context.Context, a Actor, in NewConversation) (ConversationView, error) {
	if err := requireUser(a); err != nil {
		return ConversationView{}, err
	}
	if in.Kind != storage.KindIM && in.Kind != storage.KindSharing {
		return ConversationView{}, invalid("kind", "kind: must be \"im\" or \"sharing\"")
	}
	subject := strings.TrimSpace(in.Subject)
	if utf8.RuneCountInString(subject) > maxSubject {
		return ConversationView{}, invalid("subject", "subject: at most %d characters", maxSubject)
	}
	ids := dedupe(in.Participants)
	if len(ids) > maxParticipants {
		return ConversationView{}, invalid("participants", "participants: at most %d", maxParticipants)
	}
	others := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != a.UserID {
			others = append(others, id)
		}
	}
	us, err := c.store.GetUsers(ctx, others)
	if err != nil {
		return ConversationView{}, err
	}
	if len(us) != len(others) {
		return ConversationView{}, invalid("participants", "participants: %s", missingIDs(others, us))
	}
	now := time.Now().UTC()
	conv := &storage.Conversation{ID: NewID(), Kind: in.Kind, Subject: subject, CreatorID: a.UserID, CreatedAt: now}
	if in.Kind == storage.KindSharing {
		me := a.UserID
		conv.PresenterID = &me
	}
	parts := []storage.Participant{{ConversationID: conv.ID, UserID: a.UserID, Role: storage.RoleOrganizer, JoinedAt: now}}
	for _, id := range others {
		parts = append(parts, storage.Participant{ConversationID: conv.ID, UserID: id, Role: storage.RoleParticipant, JoinedAt: now})
	}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.CreateConversation(ctx, conv, parts); err != nil {
			return err
		}
		v, err := c.conversationView(ctx, tx, conv)
		if err != nil {
			return err
		}
		return appendEvent(ctx, tx, conv.ID, "conversation.created", v)
	})
	if err != nil {
		return ConversationView{}, err
	}
	return c.conversationView(ctx, c.store, conv)
}

func (c *Controller) conversationView(ctx context.Context, st *storage.Store, conv *storage.Conversation) (ConversationView, error) {
	ps, err := st.Participants(ctx, conv.ID)
	if err != nil {
		return ConversationView{}, err
	}
	ids := make([]string, 0, len(ps))
	for _, p := range ps {
		ids = append(ids, p.UserID)
	}
	us, err := st.GetUsers(ctx, ids)
	if err != nil {
		return ConversationView{}, err
	}
	names := map[string]string{}
	for _, u := range us {
		names[u.ID] = u.DisplayName
	}
	v := ConversationView{ID: conv.ID, Kind: conv.Kind, Subject: conv.Subject, CreatorID: conv.CreatorID,
		PresenterID: conv.PresenterID, CreatedAt: conv.CreatedAt, EndedAt: conv.EndedAt,
		Participants: make([]ParticipantView, 0, len(ps))}
	for _, p := range ps {
		v.Participants = append(v.Participants, ParticipantView{UserID: p.UserID, DisplayName: names[p.UserID],
			Role: p.Role, JoinedAt: p.JoinedAt, LeftAt: p.LeftAt})
	}
	// Guests who were admitted (join links) are participants too; those
	// still in the lobby or refused are not (GET …/guests lists them).
	gs, err := st.Guests(ctx, conv.ID)
	if err != nil {
		return ConversationView{}, err
	}
	for _, g := range gs {
		if g.AdmittedAt == nil {
			continue
		}
		v.Participants = append(v.Participants, ParticipantView{GuestID: g.ID, DisplayName: g.DisplayName,
			Role: RoleGuest, JoinedAt: *g.AdmittedAt, LeftAt: g.LeftAt})
	}
	seq, err := st.LastEventSeq(ctx, conv.ID)
	if err != nil {
		return ConversationView{}, err
	}
	v.LastEventID = strconv.FormatInt(seq, 10)
	if conf, err := st.ActiveConference(ctx, conv.ID); err == nil {
		v.Audio = &ConferenceRef{ID: conf.ID, State: conf.State}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return ConversationView{}, err
	}
	return v, nil
}

// GetConversation returns one conversation the caller is in.
func (c *Controller) GetConversation(ctx context.Context, a Actor, convID string) (ConversationView, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err != nil {
		return ConversationView{}, err
	}
	return c.conversationView(ctx, c.store, conv)
}

// ListConversations lists the caller's current conversations.
func (c *Controller) ListConversations(ctx context.Context, a Actor) ([]ConversationView, error) {
	if err := requireUser(a); err != nil {
		return nil, err
	}
	cs, err := c.store.ConversationsOf(ctx, a.UserID, false)
	if err != nil {
		return nil, err
	}
	out := make([]ConversationView, 0, len(cs))
	for i := range cs {
		v, err := c.conversationView(ctx, c.store, &cs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// AddParticipants adds users to a conversation the caller is in.
func (c *Controller) AddParticipants(ctx context.Context, a Actor, convID string, userIDs []string) (ConversationView, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err != nil {
		return ConversationView{}, err
	}
	if conv.EndedAt != nil {
		return ConversationView{}, conflict("conversation_ended", "the conversation has ended")
	}
	ids := dedupe(userIDs)
	if len(ids) == 0 {
		return ConversationView{}, invalid("user_ids", "user_ids: give at least one user id")
	}
	us, err := c.store.GetUsers(ctx, ids)
	if err != nil {
		return ConversationView{}, err
	}
	if len(us) != len(ids) {
		return ConversationView{}, invalid("user_ids", "user_ids: %s", missingIDs(ids, us))
	}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		_, err := c.addParticipants(ctx, tx, conv, us)
		return err
	})
	if err != nil {
		return ConversationView{}, err
	}
	return c.conversationView(ctx, c.store, conv)
}

// addParticipants adds (or brings back) users inside tx and logs
// participant.joined for each newcomer; it returns the newcomers.
func (c *Controller) addParticipants(ctx context.Context, tx *storage.Store, conv *storage.Conversation, us []storage.User) ([]storage.User, error) {
	now := time.Now().UTC()
	var added []storage.User
	for _, u := range us {
		p, err := tx.GetParticipant(ctx, conv.ID, u.ID)
		if err == nil && p.LeftAt == nil {
			continue
		}
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		np := &storage.Participant{ConversationID: conv.ID, UserID: u.ID, Role: storage.RoleParticipant, JoinedAt: now}
		if p != nil {
			np.Role = p.Role
		}
		if err := tx.UpsertParticipant(ctx, np); err != nil {
			return nil, err
		}
		if err := appendEvent(ctx, tx, conv.ID, "participant.joined", ParticipantView{UserID: u.ID,
			DisplayName: u.DisplayName, Role: np.Role, JoinedAt: now}); err != nil {
			return nil, err
		}
		added = append(added, u)
	}
	return added, nil
}

// Leave takes the caller out of a conversation. Their live leg, if any, is
// hung up and their pending invitation cancelled.
func (c *Controller) Leave(ctx context.Context, a Actor, convID string) error {
	conv, p, err := c.member(ctx, a, convID)
	if err != nil {
		return err
	}
	u, err := c.store.GetUser(ctx, a.UserID)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	var hangup *storage.Leg
	var conf *storage.Conference
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.MarkParticipantLeft(ctx, conv.ID, a.UserID, now); err != nil {
			return err
		}
		if conv.PresenterID != nil && *conv.PresenterID == a.UserID {
			if err := tx.SetPresenter(ctx, conv.ID, nil); err != nil {
				return err
			}
			if err := appendEvent(ctx, tx, conv.ID, "presenter.changed", map[string]any{"presenter_id": nil}); err != nil {
				return err
			}
		}
		if err := appendEvent(ctx, tx, conv.ID, "participant.left", ParticipantView{UserID: a.UserID,
			DisplayName: u.DisplayName, Role: p.Role, JoinedAt: p.JoinedAt, LeftAt: &now}); err != nil {
			return err
		}
		var err error
		conf, err = tx.ActiveConference(ctx, conv.ID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if inv, err := tx.PendingInvitation(ctx, conf.ID, a.UserID); err == nil {
			if err := c.setInvitationState(ctx, tx, inv, storage.InvitationCancelled); err != nil {
				return err
			}
		}
		if l, err := tx.LiveLegOfUser(ctx, conf.ID, a.UserID); err == nil {
			l.HangupRequested = true
			l.EndReason = "left the conversation"
			if err := tx.SaveLeg(ctx, l); err != nil {
				return err
			}
			hangup = l
		}
		return nil
	})
	if err != nil {
		return err
	}
	if hangup != nil {
		c.hangupOnPBX(ctx, conf, hangup)
	}
	return nil
}

// SetPresenting starts (on) or stops presenting in a sharing conversation.
func (c *Controller) SetPresenting(ctx context.Context, a Actor, convID string, on bool) (ConversationView, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err != nil {
		return ConversationView{}, err
	}
	if conv.Kind != storage.KindSharing {
		return ConversationView{}, conflict("not_sharing", "only a desktop-sharing conversation has a presenter")
	}
	var next *string
	if on {
		me := a.UserID
		next = &me
	} else if conv.PresenterID == nil || *conv.PresenterID != a.UserID {
		return ConversationView{}, conflict("not_presenter", "you are not presenting")
	}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.SetPresenter(ctx, conv.ID, next); err != nil {
			return err
		}
		return appendEvent(ctx, tx, conv.ID, "presenter.changed", map[string]any{"presenter_id": next})
	})
	if err != nil {
		return ConversationView{}, err
	}
	conv.PresenterID = next
	return c.conversationView(ctx, c.store, conv)
}

// PostMessage adds an IM message from the caller.
func (c *Controller) PostMessage(ctx context.Context, a Actor, convID, text string) (MessageView, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err != nil {
		return MessageView{}, err
	}
	if conv.EndedAt != nil {
		return MessageView{}, conflict("conversation_ended", "the conversation has ended")
	}
	text = strings.TrimRight(text, " \t\r\n")
	if strings.TrimSpace(text) == "" {
		return MessageView{}, invalid("text", "text: the message is empty")
	}
	if utf8.RuneCountInString(text) > maxMessage {
		return MessageView{}, invalid("text", "text: at most %d characters", maxMessage)
	}
	u, err := c.store.GetUser(ctx, a.UserID)
	if err != nil {
		return MessageView{}, err
	}
	uid := a.UserID
	m := &storage.Message{ConversationID: conv.ID, UserID: &uid, AuthorName: u.DisplayName, Text: text, CreatedAt: time.Now().UTC()}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.CreateMessage(ctx, m); err != nil {
			return err
		}
		return appendEvent(ctx, tx, conv.ID, "message.created", messageView(m))
	})
	if err != nil {
		return MessageView{}, err
	}
	return messageView(m), nil
}

// MessagePage is one page of messages.
type MessagePage struct {
	Messages   []MessageView `json:"messages"`
	NextCursor string        `json:"next_cursor"`
}

// MessageQuery selects a page of messages: cursor is the next_cursor of the
// previous page ("" for the first), Limit the page size (0: 50), Newest
// pages from the newest message back instead of from the oldest on (a
// long conversation opens on its latest messages).
type MessageQuery struct {
	Cursor string
	Limit  int
	Newest bool
}

// ListMessages pages through a conversation's messages.
func (c *Controller) ListMessages(ctx context.Context, a Actor, convID string, q MessageQuery) (MessagePage, error) {
	if _, _, err := c.member(ctx, a, convID); err != nil {
		return MessagePage{}, err
	}
	return c.messagePage(ctx, convID, 0, q)
}

// messagePage reads one page of a conversation's messages after (or, with
// q.Newest, before) the cursor, never at or before floor (a guest sees
// nothing from before they joined).
func (c *Controller) messagePage(ctx context.Context, convID string, floor int64, q MessageQuery) (MessagePage, error) {
	var cur int64
	if q.Cursor != "" {
		v, err := strconv.ParseInt(q.Cursor, 10, 64)
		if err != nil || v < 0 {
			return MessagePage{}, invalid("cursor", "cursor: %q is not a cursor from this API", q.Cursor)
		}
		cur = v
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 50
	}
	if limit > 500 {
		return MessagePage{}, invalid("limit", "limit: at most 500")
	}
	var ms []storage.Message
	var more bool
	var err error
	if q.Newest {
		ms, more, err = c.store.MessagesBefore(ctx, convID, floor, cur, limit)
	} else {
		ms, more, err = c.store.Messages(ctx, convID, max(floor, cur), limit)
	}
	if err != nil {
		return MessagePage{}, err
	}
	page := MessagePage{Messages: make([]MessageView, 0, len(ms))}
	for i := range ms {
		page.Messages = append(page.Messages, messageView(&ms[i]))
	}
	if more {
		page.NextCursor = strconv.FormatInt(ms[len(ms)-1].ID, 10)
	}
	return page, nil
}

// EventsAfter reads a conversation's stored log after seq (stream replay).
func (c *Controller) EventsAfter(ctx context.Context, convID string, after int64, limit int) ([]storage.Event, error) {
	return c.store.EventsAfter(ctx, convID, after, limit)
}
