package guests

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/engine"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/storage"
)

// CountJoinAttempt counts one join attempt (valid token or not) of a
// client address and refuses it past JoinRateLimit per JoinRateWindow
// (429 rate_limited, with when to retry). The counters are in the
// database, so the limit holds across replicas.
func (gu *Guests) CountJoinAttempt(ctx context.Context, client string) error {
	// A sliding window kept as buckets of joinRateBucket: the attempts of
	// the buckets that overlap the last JoinRateWindow count, so no window
	// of that length, wherever it starts, lets more than JoinRateLimit
	// through (a fixed window let twice as many through across its edge).
	now := gu.now().UTC()
	b := int64(joinRateBucket / time.Second)
	w := int64(JoinRateWindow / time.Second)
	bucket := now.Unix() / b * b
	since := bucket - w
	key := client
	if len(key) > 64 {
		key = core.HashSecret(key)
	}
	n, oldest, err := gu.store.CountJoinAttempt(ctx, key, bucket, since, since)
	if err != nil {
		return err
	}
	if n > JoinRateLimit {
		// Free again once the oldest counted bucket has left the window.
		after := time.Unix(oldest+w+b, 0).Sub(now)
		if after < time.Second {
			after = time.Second
		}
		gu.log.Info("join attempts rate-limited", "client", client, "attempts", n)
		return &RetryAfterError{After: after, Err: &core.Error{Kind: core.KindRateLimited, Code: "rate_limited",
			Message: fmt.Sprintf("too many attempts to join from your address; try again in %d seconds", int((after+time.Second-1)/time.Second))}}
	}
	return nil
}

// usableLink finds the link of a token and its conversation, answering
// errJoinLinkInvalid for anything that is not a usable link.
func (gu *Guests) usableLink(ctx context.Context, token string) (*storage.JoinLink, *storage.Conversation, error) {
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenInput {
		return nil, nil, errJoinLinkInvalid()
	}
	h := core.HashSecret(token)
	l, err := gu.store.JoinLinkByTokenHash(ctx, h)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, errJoinLinkInvalid()
	}
	if err != nil {
		return nil, nil, err
	}
	if subtle.ConstantTimeCompare([]byte(h), []byte(l.TokenHash)) != 1 || linkState(l, time.Now().UTC()) != LinkActive {
		return nil, nil, errJoinLinkInvalid()
	}
	conv, err := gu.store.GetConversation(ctx, l.ConversationID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && conv.EndedAt != nil) {
		return nil, nil, errJoinLinkInvalid()
	}
	if err != nil {
		return nil, nil, err
	}
	return l, conv, nil
}

// JoinLinkInfo is what the guest page shows before joining.
type JoinLinkInfo struct {
	ConversationID   string    `json:"conversation_id"`
	Subject          string    `json:"subject"`
	InvitedBy        string    `json:"invited_by"`
	RequireAdmission bool      `json:"require_admission"`
	ExpiresAt        time.Time `json:"expires_at"`
}

// GetJoinLinkInfo describes a usable link to whoever holds its token.
func (gu *Guests) GetJoinLinkInfo(ctx context.Context, token string) (JoinLinkInfo, error) {
	l, conv, err := gu.usableLink(ctx, token)
	if err != nil {
		return JoinLinkInfo{}, err
	}
	info := JoinLinkInfo{ConversationID: conv.ID, Subject: conv.Subject, RequireAdmission: l.RequireAdmission, ExpiresAt: l.ExpiresAt}
	if u, err := gu.store.GetUser(ctx, l.CreatedBy); err == nil {
		info.InvitedBy = u.DisplayName
	}
	return info, nil
}

// GuestJoin is what a guest gives on the join page.
type GuestJoin struct {
	DisplayName string `json:"display_name"`
	Number      string `json:"number"`
}

// GuestJoinResult answers a join: the guest's session token (shown only
// here), and their call (null while they wait in the lobby).
type GuestJoinResult struct {
	GuestToken     string        `json:"guest_token"`
	ConversationID string        `json:"conversation_id"`
	Leg            *core.LegView `json:"leg"`
	Guest          GuestView     `json:"guest"`
}

func checkGuestName(s string) (string, error) { return core.Name("display_name", s) }

// JoinAsGuest makes the holder of a join-link token a guest of its
// conversation and, unless the link asks for admission, has the PBX call
// them (starting the conference if needed).
func (gu *Guests) JoinAsGuest(ctx context.Context, token string, in GuestJoin) (GuestJoinResult, error) {
	// The input first: a bad request is refused the same way whatever the
	// token, so nothing can be learned about a token without using it.
	name, err := checkGuestName(in.DisplayName)
	if err != nil {
		return GuestJoinResult{}, err
	}
	number, err := gu.numbers.Normalize("number", in.Number)
	if err != nil {
		return GuestJoinResult{}, err
	}
	l, conv, err := gu.usableLink(ctx, token)
	if err != nil {
		return GuestJoinResult{}, err
	}
	session := core.NewSecret()
	now := time.Now().UTC()
	g := &storage.Guest{ID: core.NewID(), ConversationID: conv.ID, JoinLinkID: l.ID, DisplayName: name, Number: number,
		State: storage.GuestAdmitted, SessionHash: core.HashSecret(session), CreatedAt: now, UpdatedAt: now}
	if l.RequireAdmission {
		g.State = storage.GuestLobby
	} else {
		g.AdmittedAt = &now
	}
	err = gu.store.InTx(ctx, func(tx *storage.Store) error {
		ok, err := tx.UseJoinLink(ctx, l.ID, now)
		if err != nil {
			return err
		}
		cur, err := tx.GetConversation(ctx, conv.ID)
		if err != nil {
			return err
		}
		if !ok || cur.EndedAt != nil {
			return errJoinLinkInvalid()
		}
		typ := "guest.updated"
		if g.State == storage.GuestLobby {
			typ = "guest.waiting"
		}
		if err := gu.guestEvent(ctx, tx, g, typ); err != nil {
			return err
		}
		if err := tx.CreateGuest(ctx, g); err != nil {
			return err
		}
		return gu.auditGuestJoined(ctx, tx, l, g)
	})
	if err != nil {
		return GuestJoinResult{}, err
	}
	gu.log.Info("guest joined", "guest", g.ID, "conversation", conv.ID, "join_link", l.ID, "state", g.State,
		"number_kind", policy.DescribeNumber(number))
	res := GuestJoinResult{GuestToken: session, ConversationID: conv.ID, Guest: guestView(g)}
	if g.State == storage.GuestLobby {
		return res, nil
	}
	jr, err := gu.dialGuest(ctx, conv, g, number)
	if err != nil {
		// Nobody holds this session (the answer is an error): end it and
		// give the use back, so a retry starts clean.
		gu.abandonGuest(ctx, g, "the call could not be placed")
		return GuestJoinResult{}, err
	}
	res.Leg = &jr.Leg
	return res, nil
}

// guestEvent appends a guest.* event for g; when g is (being) admitted the
// seqs and message id from which they see the conversation are set, and
// StartSeq when it is their first event.
func (gu *Guests) guestEvent(ctx context.Context, tx *storage.Store, g *storage.Guest, typ string) error {
	b, err := json.Marshal(guestView(g))
	if err != nil {
		return err
	}
	ev, err := tx.AppendEvent(ctx, g.ConversationID, typ, string(b))
	if err != nil {
		return err
	}
	if g.StartSeq == 0 {
		g.StartSeq = ev.Seq - 1
	}
	if g.State == storage.GuestAdmitted && g.SinceSeq == 0 {
		g.SinceSeq = ev.Seq - 1
		mid, err := tx.LastMessageID(ctx, g.ConversationID)
		if err != nil {
			return err
		}
		g.SinceMessageID = mid
	}
	return nil
}

// dialGuest has the PBX call an admitted guest.
func (gu *Guests) dialGuest(ctx context.Context, conv *storage.Conversation, g *storage.Guest, number string) (core.JoinResult, error) {
	gid := g.ID
	return gu.engine.Dial(ctx, conv, guestActor(g), engine.Target{GuestID: &gid, Number: number, Source: "guest"},
		func(tx *storage.Store, conf *storage.Conference) error {
			cur, err := tx.GetGuestForUpdate(ctx, gid)
			if err != nil {
				return err
			}
			if cur.State != storage.GuestAdmitted {
				return core.Conflict("guest_not_admitted", "the guest is %s, not admitted; nothing was dialed", cur.State)
			}
			if l, err := tx.LiveLegOfGuest(ctx, gid); err == nil {
				return core.Conflict("already_in_audio", "a call to %s is already %s; hang it up first", l.Number, l.State)
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			return nil
		})
}

// abandonGuest ends a guest whose join failed and gives the link's use back.
func (gu *Guests) abandonGuest(ctx context.Context, g *storage.Guest, reason string) {
	ctx = context.WithoutCancel(ctx)
	var hangups []*storage.Leg
	err := gu.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.GetGuestForUpdate(ctx, g.ID)
		if err != nil {
			return err
		}
		if !storage.GuestLive(cur.State) {
			return nil
		}
		leg, err := gu.endGuestTx(ctx, tx, cur, storage.GuestEnded, reason)
		if leg != nil {
			hangups = append(hangups, leg)
		}
		if err != nil {
			return err
		}
		return tx.UnuseJoinLink(ctx, cur.JoinLinkID)
	})
	if err != nil {
		gu.log.Error("ending an abandoned guest failed", "guest", g.ID, "err", err)
	}
	gu.hangupGuestLegs(ctx, hangups)
}

// endGuestTx ends a live guest's session in tx (state, event) and flags
// their live leg, if any, as hung up by us; the caller hangs that leg up
// on the PBX after the commit.
func (gu *Guests) endGuestTx(ctx context.Context, tx *storage.Store, g *storage.Guest, state, reason string) (*storage.Leg, error) {
	now := time.Now().UTC()
	g.State, g.LeftAt, g.EndReason = state, &now, reason
	if err := gu.guestEvent(ctx, tx, g, "guest.updated"); err != nil {
		return nil, err
	}
	if err := tx.SaveGuest(ctx, g); err != nil {
		return nil, err
	}
	l, err := tx.LiveLegOfGuest(ctx, g.ID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !gu.engine.RequestHangup(l, reason) {
		return nil, nil
	}
	if err := tx.SaveLeg(ctx, l); err != nil {
		return nil, err
	}
	return l, nil
}

func (gu *Guests) hangupGuestLegs(ctx context.Context, legs []*storage.Leg) {
	for _, l := range legs {
		conf, err := gu.store.GetConference(ctx, l.ConferenceID)
		if err != nil {
			gu.log.Warn("hanging up a guest's call: no conference", "leg", l.ID, "err", err)
			continue
		}
		gu.engine.HangupOnPBX(ctx, conf, l)
	}
}

// EndGuestsOfConversation ends every guest session of a conversation (call
// it when the conversation ends); their calls are hung up.
func (gu *Guests) EndGuestsOfConversation(ctx context.Context, convID, reason string) error {
	var hangups []*storage.Leg
	err := gu.store.InTx(ctx, func(tx *storage.Store) error {
		gs, err := tx.LiveGuestsOfConversation(ctx, convID)
		if err != nil {
			return err
		}
		for i := range gs {
			leg, err := gu.endGuestTx(ctx, tx, &gs[i], storage.GuestEnded, reason)
			if err != nil {
				return err
			}
			if leg != nil {
				hangups = append(hangups, leg)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	gu.hangupGuestLegs(ctx, hangups)
	return nil
}
