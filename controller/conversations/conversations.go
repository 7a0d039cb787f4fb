package conversations

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/engine"
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

// RoleGuest is the role of a guest in a conversation view: a guest who
// joined with a join link and was admitted (see guests).
const RoleGuest = "guest"

// Conversations is the IM side: conversations, their participants, the
// presenter, messages and the stored event log.
type Conversations struct {
	store  *storage.Store
	engine *engine.Engine
}

// New makes the conversations over store; leaving one hangs up the
// leaver's call through eng.
func New(store *storage.Store, eng *engine.Engine) *Conversations {
	return &Conversations{store: store, engine: eng}
}

// CheckMember checks that the actor is a present participant of the
// conversation (event streams); anyone else gets the unknown answer.
func (cv *Conversations) CheckMember(ctx context.Context, a core.Actor, convID string) error {
	_, _, err := core.Member(ctx, cv.store, a, convID)
	return err
}

// CreateConversation starts an IM or sharing conversation with the caller
// as organiser.
func (cv *Conversations) CreateConversation(ctx context.Context, a core.Actor, in NewConversation) (ConversationView, error) {
	if err := core.RequireUser(a); err != nil {
		return ConversationView{}, err
	}
	if in.Kind != storage.KindIM && in.Kind != storage.KindSharing {
		return ConversationView{}, core.Invalid("kind", "kind: must be \"im\" or \"sharing\"")
	}
	subject := strings.TrimSpace(in.Subject)
	if utf8.RuneCountInString(subject) > maxSubject {
		return ConversationView{}, core.Invalid("subject", "subject: at most %d characters", maxSubject)
	}
	ids := core.Dedupe(in.Participants)
	if len(ids) > maxParticipants {
		return ConversationView{}, core.Invalid("participants", "participants: at most %d", maxParticipants)
	}
	others := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != a.UserID {
			others = append(others, id)
		}
	}
	us, err := cv.store.GetUsers(ctx, others)
	if err != nil {
		return ConversationView{}, err
	}
	if len(us) != len(others) {
		return ConversationView{}, core.Invalid("participants", "participants: %s", core.MissingIDs(others, us))
	}
	now := time.Now().UTC()
	conv := &storage.Conversation{ID: core.NewID(), Kind: in.Kind, Subject: subject, CreatorID: a.UserID, CreatedAt: now}
	if in.Kind == storage.KindSharing {
		me := a.UserID
		conv.PresenterID = &me
	}
	parts := []storage.Participant{{ConversationID: conv.ID, UserID: a.UserID, Role: storage.RoleOrganizer, JoinedAt: now}}
	for _, id := range others {
		parts = append(parts, storage.Participant{ConversationID: conv.ID, UserID: id, Role: storage.RoleParticipant, JoinedAt: now})
	}
	err = cv.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.CreateConversation(ctx, conv, parts); err != nil {
			return err
		}
		v, err := cv.conversationView(ctx, tx, conv)
		if err != nil {
			return err
		}
		return core.AppendEvent(ctx, tx, conv.ID, "conversation.created", v)
	})
	if err != nil {
		return ConversationView{}, err
	}
	return cv.conversationView(ctx, cv.store, conv)
}

func (cv *Conversations) conversationView(ctx context.Context, st *storage.Store, conv *storage.Conversation) (ConversationView, error) {
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
		v.Audio = &core.ConferenceRef{ID: conf.ID, State: conf.State}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return ConversationView{}, err
	}
	return v, nil
}

// GetConversation returns one conversation the caller is in.
func (cv *Conversations) GetConversation(ctx context.Context, a core.Actor, convID string) (ConversationView, error) {
	conv, _, err := core.Member(ctx, cv.store, a, convID)
	if err != nil {
		return ConversationView{}, err
	}
	return cv.conversationView(ctx, cv.store, conv)
}

// ListConversations lists the caller's current conversations.
func (cv *Conversations) ListConversations(ctx context.Context, a core.Actor) ([]ConversationView, error) {
	if err := core.RequireUser(a); err != nil {
		return nil, err
	}
	cs, err := cv.store.ConversationsOf(ctx, a.UserID, false)
	if err != nil {
		return nil, err
	}
	out := make([]ConversationView, 0, len(cs))
	for i := range cs {
		v, err := cv.conversationView(ctx, cv.store, &cs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// AddParticipants adds users to a conversation the caller is in.
func (cv *Conversations) AddParticipants(ctx context.Context, a core.Actor, convID string, userIDs []string) (ConversationView, error) {
	conv, _, err := core.Member(ctx, cv.store, a, convID)
	if err != nil {
		return ConversationView{}, err
	}
	if conv.EndedAt != nil {
		return ConversationView{}, core.Conflict("conversation_ended", "the conversation has ended")
	}
	ids := core.Dedupe(userIDs)
	if len(ids) == 0 {
		return ConversationView{}, core.Invalid("user_ids", "user_ids: give at least one user id")
	}
	us, err := cv.store.GetUsers(ctx, ids)
	if err != nil {
		return ConversationView{}, err
	}
	if len(us) != len(ids) {
		return ConversationView{}, core.Invalid("user_ids", "user_ids: %s", core.MissingIDs(ids, us))
	}
	err = cv.store.InTx(ctx, func(tx *storage.Store) error {
		_, err := cv.AddParticipantsTx(ctx, tx, conv, us)
		return err
	})
	if err != nil {
		return ConversationView{}, err
	}
	return cv.conversationView(ctx, cv.store, conv)
}

// AddParticipantsTx adds (or brings back) users inside tx and logs
// participant.joined for each newcomer; it returns the newcomers.
func (cv *Conversations) AddParticipantsTx(ctx context.Context, tx *storage.Store, conv *storage.Conversation, us []storage.User) ([]storage.User, error) {
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
		if err := core.AppendEvent(ctx, tx, conv.ID, "participant.joined", ParticipantView{UserID: u.ID,
			DisplayName: u.DisplayName, Role: np.Role, JoinedAt: now}); err != nil {
			return nil, err
		}
		added = append(added, u)
	}
	return added, nil
}

// Leave takes the caller out of a conversation. Their live leg, if any, is
// hung up and their pending invitation cancelled.
func (cv *Conversations) Leave(ctx context.Context, a core.Actor, convID string) error {
	conv, p, err := core.Member(ctx, cv.store, a, convID)
	if err != nil {
		return err
	}
	u, err := cv.store.GetUser(ctx, a.UserID)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	var hangup *storage.Leg
	var conf *storage.Conference
	err = cv.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.MarkParticipantLeft(ctx, conv.ID, a.UserID, now); err != nil {
			return err
		}
		if conv.PresenterID != nil && *conv.PresenterID == a.UserID {
			if err := tx.SetPresenter(ctx, conv.ID, nil); err != nil {
				return err
			}
			if err := core.AppendEvent(ctx, tx, conv.ID, "presenter.changed", map[string]any{"presenter_id": nil}); err != nil {
				return err
			}
		}
		if err := core.AppendEvent(ctx, tx, conv.ID, "participant.left", ParticipantView{UserID: a.UserID,
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
			if err := cv.engine.SetInvitationState(ctx, tx, inv, storage.InvitationCancelled); err != nil {
				return err
			}
		}
		if l, err := tx.LiveLegOfUser(ctx, conf.ID, a.UserID); err == nil {
			if cv.engine.RequestHangup(l, "left the conversation") {
				if err := tx.SaveLeg(ctx, l); err != nil {
					return err
				}
				hangup = l
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if hangup != nil {
		cv.engine.HangupOnPBX(ctx, conf, hangup)
	}
	return nil
}

// SetPresenting starts (on) or stops presenting in a sharing conversation.
func (cv *Conversations) SetPresenting(ctx context.Context, a core.Actor, convID string, on bool) (ConversationView, error) {
	conv, _, err := core.Member(ctx, cv.store, a, convID)
	if err != nil {
		return ConversationView{}, err
	}
	if conv.Kind != storage.KindSharing {
		return ConversationView{}, core.Conflict("not_sharing", "only a desktop-sharing conversation has a presenter")
	}
	var next *string
	if on {
		me := a.UserID
		next = &me
	} else if conv.PresenterID == nil || *conv.PresenterID != a.UserID {
		return ConversationView{}, core.Conflict("not_presenter", "you are not presenting")
	}
	err = cv.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.SetPresenter(ctx, conv.ID, next); err != nil {
			return err
		}
		return core.AppendEvent(ctx, tx, conv.ID, "presenter.changed", map[string]any{"presenter_id": next})
	})
	if err != nil {
		return ConversationView{}, err
	}
	conv.PresenterID = next
	return cv.conversationView(ctx, cv.store, conv)
}
