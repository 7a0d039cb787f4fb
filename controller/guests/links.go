package guests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/storage"
)

// NewJoinLink is what a participant gives to make a join link.
type NewJoinLink struct {
	// ExpiresInS: seconds from now (default 24 h, at most 30 days).
	ExpiresInS *int `json:"expires_in_s,omitempty"`
	// MaxUses: how many guests may join with it (default unlimited).
	MaxUses *int `json:"max_uses,omitempty"`
	// RequireAdmission: guests wait in a lobby until a participant admits
	// them; nothing is dialed before.
	RequireAdmission bool `json:"require_admission,omitempty"`
}

// Join link states (derived).
const (
	LinkActive  = "active"
	LinkExpired = "expired"
	LinkUsedUp  = "used_up"
	LinkRevoked = "revoked"
)

// JoinLinkView is a join link as its conversation's participants see it;
// the token is not in it (it is not stored).
type JoinLinkView struct {
	ID               string     `json:"id"`
	ConversationID   string     `json:"conversation_id"`
	CreatedBy        string     `json:"created_by"`
	CreatedAt        time.Time  `json:"created_at"`
	ExpiresAt        time.Time  `json:"expires_at"`
	MaxUses          *int       `json:"max_uses"`
	Uses             int        `json:"uses"`
	RequireAdmission bool       `json:"require_admission"`
	State            string     `json:"state"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
}

// CreatedJoinLink answers the creation: the view plus the URL (shown only
// here) and a ready e-mail.
type CreatedJoinLink struct {
	JoinLinkView
	URL     string `json:"url"`
	Subject string `json:"subject"`
	Body    string `json:"body"`
	Mailto  string `json:"mailto"`
}

// errRefused rolls back a transaction that found a limit reached (the
// refusal itself is in a variable of the caller).
var errRefused = errors.New("refused by a join-link limit")

func linkState(l *storage.JoinLink, now time.Time) string {
	switch {
	case l.RevokedAt != nil:
		return LinkRevoked
	case !now.Before(l.ExpiresAt):
		return LinkExpired
	case l.MaxUses > 0 && l.Uses >= l.MaxUses:
		return LinkUsedUp
	}
	return LinkActive
}

func joinLinkView(l *storage.JoinLink) JoinLinkView {
	v := JoinLinkView{ID: l.ID, ConversationID: l.ConversationID, CreatedBy: l.CreatedBy, CreatedAt: l.CreatedAt,
		ExpiresAt: l.ExpiresAt, Uses: l.Uses, RequireAdmission: l.RequireAdmission,
		State: linkState(l, time.Now().UTC()), RevokedAt: l.RevokedAt}
	if l.MaxUses > 0 {
		n := l.MaxUses
		v.MaxUses = &n
	}
	return v
}

// CreateJoinLink makes a join link for a conversation the caller is in.
// baseURL is the public base URL the link is under (…/join/<token>).
func (gu *Guests) CreateJoinLink(ctx context.Context, a core.Actor, convID string, in NewJoinLink, baseURL string) (CreatedJoinLink, error) {
	conv, _, err := core.Member(ctx, gu.store, a, convID)
	if err != nil {
		return CreatedJoinLink{}, err
	}
	if conv.EndedAt != nil {
		return CreatedJoinLink{}, core.Conflict("conversation_ended", "the conversation has ended")
	}
	expiry := defaultLinkExpiry
	if in.ExpiresInS != nil {
		s := *in.ExpiresInS
		if s < 1 || time.Duration(s)*time.Second > maxLinkExpiry {
			return CreatedJoinLink{}, core.Invalid("expires_in_s", "expires_in_s: from 1 second to %d (30 days)", int(maxLinkExpiry/time.Second))
		}
		expiry = time.Duration(s) * time.Second
	}
	maxUses := 0
	if in.MaxUses != nil {
		if *in.MaxUses < 1 || *in.MaxUses > maxLinkUses {
			return CreatedJoinLink{}, core.Invalid("max_uses", "max_uses: from 1 to %d (leave it out for no limit)", maxLinkUses)
		}
		maxUses = *in.MaxUses
	}
	u, err := gu.store.GetUser(ctx, a.UserID)
	if err != nil {
		return CreatedJoinLink{}, err
	}
	token := core.NewSecret()
	now := time.Now().UTC()
	l := &storage.JoinLink{ID: core.NewID(), ConversationID: conv.ID, CreatedBy: a.UserID, TokenHash: core.HashSecret(token),
		ExpiresAt: now.Add(expiry), MaxUses: maxUses, RequireAdmission: in.RequireAdmission, CreatedAt: now}
	var refused *limitRefusal
	err = gu.store.InTx(ctx, func(tx *storage.Store) error {
		if max := gu.engine.Policy().MaxLinksUser; max > 0 {
			// One maker's links are counted one creation at a time.
			if err := tx.LockScopes(ctx, "join_links:"+a.UserID); err != nil {
				return err
			}
			n, err := tx.CountUsableJoinLinks(ctx, a.UserID, now)
			if err != nil {
				return err
			}
			if n >= int64(max) {
				refused = &limitRefusal{action: ActionJoinLinkRefused, rule: fmt.Sprintf("max_join_links_per_user=%d", max),
					message: fmt.Sprintf("you have %d usable join links, the most one person may have (max_join_links_per_user); revoke one first", n)}
				return errRefused
			}
		}
		if err := tx.CreateJoinLink(ctx, l); err != nil {
			return err
		}
		if err := core.AppendEvent(ctx, tx, conv.ID, "join_link.created", joinLinkView(l)); err != nil {
			return err
		}
		return gu.auditJoinLinkCreated(ctx, tx, a, l)
	})
	if refused != nil {
		return CreatedJoinLink{}, gu.refuse(ctx, a, "", conv.ID, "", refused)
	}
	if err != nil {
		return CreatedJoinLink{}, err
	}
	out := CreatedJoinLink{JoinLinkView: joinLinkView(l), URL: strings.TrimRight(baseURL, "/") + "/join/" + token}
	out.Subject, out.Body = invitationMail(u.DisplayName, conv.Subject, out.URL, l)
	out.Mailto = mailtoURL(out.Subject, out.Body)
	return out, nil
}

// invitationMail words the "Invite Using Email" message.
func invitationMail(from, subject, url string, l *storage.JoinLink) (string, string) {
	var subj, what string
	if subject != "" {
		subj = "Join \u201c" + core.Truncate(subject, 100) + "\u201d by phone"
		what = "the conversation \u201c" + subject + "\u201d"
	} else {
		subj = "Join a conversation by phone"
		what = "a conversation"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s invites you to join %s.\n\n", from, what)
	b.WriteString("Open this link, give your name and the phone number to call you on, and you will be called into the conversation's audio conference:\n\n")
	b.WriteString(url + "\n\n")
	fmt.Fprintf(&b, "The link works until %s", l.ExpiresAt.UTC().Format("Mon, 2 Jan 2006 15:04 MST"))
	if l.MaxUses == 1 {
		b.WriteString(", for one person")
	} else if l.MaxUses > 1 {
		fmt.Fprintf(&b, ", for up to %d people", l.MaxUses)
	}
	b.WriteString(".\n")
	if l.RequireAdmission {
		b.WriteString("The organiser lets each guest in before the call is placed.\n")
	}
	b.WriteString("Please do not forward it: anyone with the link can join.\n")
	return subj, b.String()
}

// mailtoURL builds a mailto: URL with subject and body (RFC 6068): every
// octet but the unreserved ones percent-encoded, line breaks as CRLF.
func mailtoURL(subject, body string) string {
	body = strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")
	return "mailto:?subject=" + mailtoEscape(subject) + "&body=" + mailtoEscape(body)
}

func mailtoEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case 'A' <= ch && ch <= 'Z', 'a' <= ch && ch <= 'z', '0' <= ch && ch <= '9',
			ch == '-', ch == '.', ch == '_', ch == '~':
			b.WriteByte(ch)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[ch>>4])
			b.WriteByte(hex[ch&15])
		}
	}
	return b.String()
}

// ListJoinLinks lists a conversation's links (revoked and expired ones
// included), newest first.
func (gu *Guests) ListJoinLinks(ctx context.Context, a core.Actor, convID string) ([]JoinLinkView, error) {
	if _, _, err := core.Member(ctx, gu.store, a, convID); err != nil {
		return nil, err
	}
	ls, err := gu.store.JoinLinks(ctx, convID)
	if err != nil {
		return nil, err
	}
	out := make([]JoinLinkView, 0, len(ls))
	for i := range ls {
		out = append(out, joinLinkView(&ls[i]))
	}
	return out, nil
}

// RevokeJoinLink withdraws a link: it stops working at once, and every
// guest who came with it is ended — their session closes and their call is
// hung up. Revoking a revoked link changes nothing.
func (gu *Guests) RevokeJoinLink(ctx context.Context, a core.Actor, linkID string) error {
	l, err := gu.store.GetJoinLink(ctx, linkID)
	if errors.Is(err, storage.ErrNotFound) {
		return core.NotFound("join link")
	}
	if err != nil {
		return err
	}
	if _, _, err := core.Member(ctx, gu.store, a, l.ConversationID); err != nil {
		return core.NotFound("join link")
	}
	var hangups []*storage.Leg
	now := time.Now().UTC()
	err = gu.store.InTx(ctx, func(tx *storage.Store) error {
		revoked, err := tx.RevokeJoinLink(ctx, l.ID, now)
		if err != nil {
			return err
		}
		if revoked {
			l.RevokedAt = &now
			if err := core.AppendEvent(ctx, tx, l.ConversationID, "join_link.revoked", joinLinkView(l)); err != nil {
				return err
			}
		}
		gs, err := tx.LiveGuestsOfLink(ctx, l.ID)
		if err != nil {
			return err
		}
		for i := range gs {
			leg, err := gu.endGuestTx(ctx, tx, &gs[i], storage.GuestEnded, "the join link was withdrawn")
			if err != nil {
				return err
			}
			if leg != nil {
				hangups = append(hangups, leg)
			}
		}
		if !revoked && len(gs) == 0 {
			return nil
		}
		return gu.auditJoinLinkRevoked(ctx, tx, a, l, gs)
	})
	if err != nil {
		return err
	}
	gu.hangupGuestLegs(ctx, hangups)
	return nil
}
