package audio

import (
	"context"
	"errors"
	"strings"

	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/conversations"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/engine"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/storage"
)

// Audio is the conferences as people ask for them: joining (which starts
// the conference), its view, ending it, the invitations and their answers,
// inviting someone, and muting or hanging up a leg.
type Audio struct {
	store         *storage.Store
	numbers       policy.Numbers
	engine        *engine.Engine
	conversations *conversations.Conversations
	audit         *audit.Log
}

// New makes the audio requests over the engine; inviting someone adds
// them to the conversation through convs.
func New(store *storage.Store, numbers policy.Numbers, eng *engine.Engine, convs *conversations.Conversations, trail *audit.Log) *Audio {
	return &Audio{store: store, numbers: numbers, engine: eng, conversations: convs, audit: trail}
}

// JoinRequest is "Join Conference Now Using": one of the caller's published
// numbers by label, or a new number.
type JoinRequest struct {
	Published string `json:"published,omitempty"`
	Number    string `json:"number,omitempty"`
}

// resolveNumber turns a request's "published" label or "number" into a
// dialable number for user u.
func (au *Audio) resolveNumber(u *storage.User, published, number string, field string) (string, error) {
	published = strings.TrimSpace(published)
	hasNumber := strings.TrimSpace(number) != ""
	switch {
	case published != "" && hasNumber:
		return "", core.Invalid("published", "give either published (a label of your numbers) or number, not both")
	case hasNumber:
		return au.numbers.Normalize(field, number)
	case published != "":
		label := strings.ToLower(published)
		for _, n := range u.Numbers {
			if n.Label == label {
				return n.Number, nil
			}
		}
		return "", core.Invalid("published", "published: you have no %q number; yours are: %s", published, labelsOf(u))
	default:
		for _, n := range u.Numbers {
			if n.IsDefault {
				return n.Number, nil
			}
		}
		return "", core.Invalid(field, "%s: you have no published number; give a number", field)
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
// conference if needed (every other participant is invited once its first
// call is connected), and has the PBX
// call the caller.
func (au *Audio) JoinAudio(ctx context.Context, a core.Actor, convID string, req JoinRequest) (core.JoinResult, error) {
	conv, u, err := core.MemberWithUser(ctx, au.store, a, convID)
	if err != nil {
		return core.JoinResult{}, err
	}
	if conv.EndedAt != nil {
		return core.JoinResult{}, core.Conflict("conversation_ended", "the conversation has ended")
	}
	number, err := au.resolveNumber(u, req.Published, req.Number, "number")
	if err != nil {
		return core.JoinResult{}, err
	}
	uid := a.UserID
	return au.engine.Dial(ctx, conv, a, engine.Target{UserID: &uid, Number: number, Source: numberSource(req.Number, "new_number")}, nil)
}

// GetAudio returns the conversation's active conference with legs and
// invitations; with last, the newest one even when it has ended.
func (au *Audio) GetAudio(ctx context.Context, a core.Actor, convID string, last bool) (core.ConferenceView, error) {
	if _, _, err := core.Member(ctx, au.store, a, convID); err != nil {
		return core.ConferenceView{}, err
	}
	conf, err := au.store.ActiveConference(ctx, convID)
	if errors.Is(err, storage.ErrNotFound) && last {
		conf, err = au.store.LatestConference(ctx, convID)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return core.ConferenceView{}, &core.Error{Kind: core.KindNotFound, Code: "no_audio", Message: "this conversation has no audio now; start it with Join Conference"}
	}
	if err != nil {
		return core.ConferenceView{}, err
	}
	// The conference, its legs and its invitations are separate reads; a
	// commit between them (the last leg ending ends the conference) would
	// show a failed leg in an "active" conference. Re-read the conference
	// after the rest and start again when it moved on.
	for attempt := 0; ; attempt++ {
		v, err := au.fullConferenceView(ctx, conf)
		if err != nil {
			return core.ConferenceView{}, err
		}
		now, err := au.store.GetConference(ctx, conf.ID)
		if err != nil {
			return core.ConferenceView{}, err
		}
		if now.State == conf.State || attempt == 3 {
			return v, nil
		}
		conf = now
	}
}

func (au *Audio) fullConferenceView(ctx context.Context, conf *storage.Conference) (core.ConferenceView, error) {
	v := core.ConferenceViewOf(conf)
	if conf.State == storage.ConferenceActive {
		v.Control, v.ControlReason = au.engine.Control(conf)
	}
	legs, err := au.store.Legs(ctx, conf.ID)
	if err != nil {
		return v, err
	}
	for i := range legs {
		v.Legs = append(v.Legs, core.LegViewOf(&legs[i]))
	}
	invs, err := au.store.Invitations(ctx, conf.ID)
	if err != nil {
		return v, err
	}
	for i := range invs {
		v.Invitations = append(v.Invitations, core.InvitationViewOf(&invs[i]))
	}
	return v, nil
}

// moderatedConversation loads a conversation for a moderation request: a
// participant's, or any for an admin (the admin token belongs to no user
// and is in no conversation). Others get the unknown-id answer.
func (au *Audio) moderatedConversation(ctx context.Context, a core.Actor, convID string) (*storage.Conversation, error) {
	conv, _, err := core.Member(ctx, au.store, a, convID)
	if err == nil || !a.Admin {
		return conv, err
	}
	conv, err = au.store.GetConversation(ctx, convID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, core.NotFound("conversation")
	}
	return conv, err
}

// isModerator: the organiser of the conversation, or an admin.
func isModerator(a core.Actor, conv *storage.Conversation) bool {
	return a.Admin || conv.CreatorID == a.UserID
}

// EndAudio hangs up every leg and ends the conference; the IM conversation
// goes on. Organiser (or admin) only.
func (au *Audio) EndAudio(ctx context.Context, a core.Actor, convID string) error {
	conv, err := au.moderatedConversation(ctx, a, convID)
	if err != nil {
		return err
	}
	if !isModerator(a, conv) {
		return core.Forbidden("organizer_only", "only the organiser of the conversation can end the audio for everyone; hang up your own call instead")
	}
	conf, err := au.store.ActiveConference(ctx, convID)
	if errors.Is(err, storage.ErrNotFound) {
		return &core.Error{Kind: core.KindNotFound, Code: "no_audio", Message: "this conversation has no audio now"}
	}
	if err != nil {
		return err
	}
	au.audit.Add(ctx, audit.Entry{Actor: a, Action: audit.ActionAudioEnd, ConversationID: convID, TargetID: conf.ID})
	return au.engine.EndConference(ctx, conf, "ended by "+a.Name)
}
