package controller

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/convoice/convoice/storage"
)

// Join links ("Meet Now → Invite Using Email") and guests.
//
// A participant makes a link; its token (256 random bits) is shown once, in
// the URL of the answer, and stored only as its SHA-256. Whoever opens the
// URL gives a name and a number and becomes a guest of that one
// conversation: a guest session (a second token, also stored only hashed),
// and — unless the link asks for admission — a call placed at once. With
// admission the guest waits in a lobby until a participant admits (then the
// call is placed) or refuses them (never dialed).
//
// Expired, revoked, used-up and unknown tokens give one and the same
// answer; join attempts are counted per client address in the database.

const (
	defaultLinkExpiry = 24 * time.Hour
	maxLinkExpiry     = 30 * 24 * time.Hour
	maxLinkUses       = 10000
	maxGuestName      = 100
	// maxTokenInput bounds a token before it is even hashed (ours are 43
	// characters).
	maxTokenInput = 200

	// JoinRateLimit join attempts (valid or not) per client address per
	// JoinRateWindow.
	JoinRateLimit  = 10
	JoinRateWindow = time.Minute
)

// Guest participant role (conversation views list admitted guests with it).
const RoleGuest = "guest"

// errJoinLinkInvalid is the one answer for a token that is unknown,
// expired, revoked or used up: nothing tells them apart.
func errJoinLinkInvalid() *Error {
	return &Error{Kind: KindNotFound, Code: "join_link_invalid",
		Message: "this join link is not valid: it may have expired, been used up or been withdrawn; ask the organiser for a new one"}
}

// errGuestSessionEnded is the answer to a guest token that is unknown or
// whose session has ended.
func errGuestSessionEnded() *Error {
	return &Error{Kind: KindUnauthorized, Code: "unauthorized", Message: "the guest session is unknown or has ended"}
}

// RetryAfterError is a refusal that says when to try again (429).
type RetryAfterError struct {
	Err   *Error
	After time.Duration
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

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

// GuestView is a guest as participants (and the guest) see them.
type GuestView struct {
	ID             string     `json:"id"`
	ConversationID string     `json:"conversation_id"`
	JoinLinkID     string     `json:"join_link_id"`
	DisplayName    string     `json:"display_name"`
	Number         string     `json:"number"`
	State          string     `json:"state"`
	CreatedAt      time.Time  `json:"created_at"`
	AdmittedAt     *time.Time `json:"admitted_at,omitempty"`
	LeftAt         *time.Time `json:"left_at,omitempty"`
	EndReason      string     `json:"end_reason,omitempty"`
}

func guestView(g *storage.Guest) GuestView {
	return GuestView{ID: g.ID, ConversationID: g.ConversationID, JoinLinkID: g.JoinLinkID, DisplayName: g.DisplayName,
		Number: g.Number, State: g.State, CreatedAt: g.CreatedAt, AdmittedAt: g.AdmittedAt, LeftAt: g.LeftAt,
		EndReason: g.EndReason}
}

// guestActor is who a guest's requests act as (for the dial policy, the
// audit and log lines): no user.
func guestActor(g *storage.Guest) Actor {
	return Actor{Name: g.DisplayName + " (guest)"}
}

// ---- audit -------------------------------------------------------------------
//
// Each is called inside the transaction that makes the change, after the
// change is written, and is kept only if it commits. Never a token.

// Audit actions of guests (the join-link ones are in audit.go).
const (
	ActionGuestJoin   = "guest.join"
	ActionGuestAdmit  = "guest.admit"
	ActionGuestRefuse = "guest.refuse"
)

func (c *Controller) auditJoinLinkCreated(ctx context.Context, tx *storage.Store, a Actor, l *storage.JoinLink) error {
	detail := "expires " + l.ExpiresAt.UTC().Format(time.RFC3339)
	if l.MaxUses > 0 {
		detail += fmt.Sprintf(", at most %d uses", l.MaxUses)
	}
	if l.RequireAdmission {
		detail += ", guests need admission"
	}
	return c.AuditTx(ctx, tx, AuditEntry{Actor: a, Action: ActionJoinLinkCreate, ConversationID: l.ConversationID,
		TargetID: l.ID, Detail: detail})
}

func (c *Controller) auditJoinLinkRevoked(ctx context.Context, tx *storage.Store, a Actor, l *storage.JoinLink, ended []storage.Guest) error {
	return c.AuditTx(ctx, tx, AuditEntry{Actor: a, Action: ActionJoinLinkRevoke, ConversationID: l.ConversationID,
		TargetID: l.ID, Detail: fmt.Sprintf("%d guest session(s) ended", len(ended))})
}

func (c *Controller) auditGuestJoined(ctx context.Context, tx *storage.Store, l *storage.JoinLink, g *storage.Guest) error {
	return c.AuditTx(ctx, tx, AuditEntry{Actor: guestActor(g), GuestID: g.ID, Action: ActionGuestJoin,
		ConversationID: g.ConversationID, TargetID: l.ID, Number: g.Number, Source: "guest", Detail: "state " + g.State})
}

func (c *Controller) auditGuestAdmission(ctx context.Context, tx *storage.Store, a Actor, g *storage.Guest) error {
	action := ActionGuestAdmit
	if g.State == storage.GuestRefused {
		action = ActionGuestRefuse
	}
	return c.AuditTx(ctx, tx, AuditEntry{Actor: a, Action: action, ConversationID: g.ConversationID, TargetID: g.ID,
		Detail: g.DisplayName})
}

// ---- links -----------------------------------------------------------------

// CreateJoinLink makes a join link for a conversation the caller is in.
// baseURL is the public base URL the link is under (…/join/<token>).
func (c *Controller) CreateJoinLink(ctx context.Context, a Actor, convID string, in NewJoinLink, baseURL string) (CreatedJoinLink, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err != nil {
		return CreatedJoinLink{}, err
	}
	if conv.EndedAt != nil {
		return CreatedJoinLink{}, conflict("conversation_ended", "the conversation has ended")
	}
	expiry := defaultLinkExpiry
	if in.ExpiresInS != nil {
		s := *in.ExpiresInS
		if s < 1 || time.Duration(s)*time.Second > maxLinkExpiry {
			return CreatedJoinLink{}, invalid("expires_in_s", "expires_in_s: from 1 second to %d (30 days)", int(maxLinkExpiry/time.Second))
		}
		expiry = time.Duration(s) * time.Second
	}
	maxUses := 0
	if in.MaxUses != nil {
		if *in.MaxUses < 1 || *in.MaxUses > maxLinkUses {
			return CreatedJoinLink{}, invalid("max_uses", "max_uses: from 1 to %d (leave it out for no limit)", maxLinkUses)
		}
		maxUses = *in.MaxUses
	}
	u, err := c.store.GetUser(ctx, a.UserID)
	if err != nil {
		return CreatedJoinLink{}, err
	}
	token := NewSecret()
	now := time.Now().UTC()
	l := &storage.JoinLink{ID: NewID(), ConversationID: conv.ID, CreatedBy: a.UserID, TokenHash: HashSecret(token),
		ExpiresAt: now.Add(expiry), MaxUses: maxUses, RequireAdmission: in.RequireAdmission, CreatedAt: now}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		if err := tx.CreateJoinLink(ctx, l); err != nil {
			return err
		}
		if err := appendEvent(ctx, tx, conv.ID, "join_link.created", joinLinkView(l)); err != nil {
			return err
		}
		return c.auditJoinLinkCreated(ctx, tx, a, l)
	})
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
		subj = "Join \u201c" + truncate(subject, 100) + "\u201d by phone"
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
func (c *Controller) ListJoinLinks(ctx context.Context, a Actor, convID string) ([]JoinLinkView, error) {
	if _, _, err := c.member(ctx, a, convID); err != nil {
		return nil, err
	}
	ls, err := c.store.JoinLinks(ctx, convID)
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
func (c *Controller) RevokeJoinLink(ctx context.Context, a Actor, linkID string) error {
	l, err := c.store.GetJoinLink(ctx, linkID)
	if errors.Is(err, storage.ErrNotFound) {
		return notFoundErr("join link")
	}
	if err != nil {
		return err
	}
	if _, _, err := c.member(ctx, a, l.ConversationID); err != nil {
		return notFoundErr("join link")
	}
	var hangups []*storage.Leg
	now := time.Now().UTC()
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		revoked, err := tx.RevokeJoinLink(ctx, l.ID, now)
		if err != nil {
			return err
		}
		if revoked {
			l.RevokedAt = &now
			if err := appendEvent(ctx, tx, l.ConversationID, "join_link.revoked", joinLinkView(l)); err != nil {
				return err
			}
		}
		gs, err := tx.LiveGuestsOfLink(ctx, l.ID)
		if err != nil {
			return err
		}
		for i := range gs {
			leg, err := c.endGuestTx(ctx, tx, &gs[i], storage.GuestEnded, "the join link was withdrawn")
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
		return c.auditJoinLinkRevoked(ctx, tx, a, l, gs)
	})
	if err != nil {
		return err
	}
	c.hangupGuestLegs(ctx, hangups)
	return nil
}

// ---- guests: joining -------------------------------------------------------

// CountJoinAttempt counts one join attempt (valid token or not) of a
// client address and refuses it past JoinRateLimit per JoinRateWindow
// (429 rate_limited, with when to retry). The counters are in the
// database, so the limit holds across replicas.
func (c *Controller) CountJoinAttempt(ctx context.Context, client string) error {
	now := time.Now().UTC()
	w := int64(JoinRateWindow / time.Second)
	start := now.Unix() / w * w
	key := client
	if len(key) > 64 {
		key = HashSecret(key)
	}
	n, err := c.store.CountJoinAttempt(ctx, key, start, start-w)
	if err != nil {
		return err
	}
	if n > JoinRateLimit {
		after := time.Unix(start+w, 0).Sub(now)
		if after < time.Second {
			after = time.Second
		}
		c.log.Info("join attempts rate-limited", "client", client, "attempts", n)
		return &RetryAfterError{After: after, Err: &Error{Kind: KindRateLimited, Code: "rate_limited",
			Message: fmt.Sprintf("too many attempts to join from your address; try again in %d seconds", int((after+time.Second-1)/time.Second))}}
	}
	return nil
}

// usableLink finds the link of a token and its conversation, answering
// errJoinLinkInvalid for anything that is not a usable link.
func (c *Controller) usableLink(ctx context.Context, token string) (*storage.JoinLink, *storage.Conversation, error) {
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenInput {
		return nil, nil, errJoinLinkInvalid()
	}
	h := HashSecret(token)
	l, err := c.store.JoinLinkByTokenHash(ctx, h)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, errJoinLinkInvalid()
	}
	if err != nil {
		return nil, nil, err
	}
	if subtle.ConstantTimeCompare([]byte(h), []byte(l.TokenHash)) != 1 || linkState(l, time.Now().UTC()) != LinkActive {
		return nil, nil, errJoinLinkInvalid()
	}
	conv, err := c.store.GetConversation(ctx, l.ConversationID)
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
func (c *Controller) GetJoinLinkInfo(ctx context.Context, token string) (JoinLinkInfo, error) {
	l, conv, err := c.usableLink(ctx, token)
	if err != nil {
		return JoinLinkInfo{}, err
	}
	info := JoinLinkInfo{ConversationID: conv.ID, Subject: conv.Subject, RequireAdmission: l.RequireAdmission, ExpiresAt: l.ExpiresAt}
	if u, err := c.store.GetUser(ctx, l.CreatedBy); err == nil {
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
	GuestToken     string    `json:"guest_token"`
	ConversationID string    `json:"conversation_id"`
	Leg            *LegView  `json:"leg"`
	Guest          GuestView `json:"guest"`
}

func checkGuestName(s string) (string, error) {
	name := strings.TrimSpace(s)
	n := utf8.RuneCountInString(name)
	if n == 0 || n > maxGuestName {
		return "", invalid("display_name", "display_name: your name, from 1 to %d characters", maxGuestName)
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			return "", invalid("display_name", "display_name: %q is not allowed in a name", r)
		}
	}
	return name, nil
}

// JoinAsGuest makes the holder of a join-link token a guest of its
// conversation and, unless the link asks for admission, has the PBX call
// them (starting the conference if needed).
func (c *Controller) JoinAsGuest(ctx context.Context, token string, in GuestJoin) (GuestJoinResult, error) {
	// The input first: a bad request is refused the same way whatever the
	// token, so nothing can be learned about a token without using it.
	name, err := checkGuestName(in.DisplayName)
	if err != nil {
		return GuestJoinResult{}, err
	}
	number, err := c.numbers.Normalize("number", in.Number)
	if err != nil {
		return GuestJoinResult{}, err
	}
	l, conv, err := c.usableLink(ctx, token)
	if err != nil {
		return GuestJoinResult{}, err
	}
	session := NewSecret()
	now := time.Now().UTC()
	g := &storage.Guest{ID: NewID(), ConversationID: conv.ID, JoinLinkID: l.ID, DisplayName: name, Number: number,
		State: storage.GuestAdmitted, SessionHash: HashSecret(session), CreatedAt: now, UpdatedAt: now}
	if l.RequireAdmission {
		g.State = storage.GuestLobby
	} else {
		g.AdmittedAt = &now
	}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
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
		if err := c.guestEvent(ctx, tx, g, typ); err != nil {
			return err
		}
		if err := tx.CreateGuest(ctx, g); err != nil {
			return err
		}
		return c.auditGuestJoined(ctx, tx, l, g)
	})
	if err != nil {
		return GuestJoinResult{}, err
	}
	c.log.Info("guest joined", "guest", g.ID, "conversation", conv.ID, "join_link", l.ID, "state", g.State,
		"number_kind", describeNumber(number))
	res := GuestJoinResult{GuestToken: session, ConversationID: conv.ID, Guest: guestView(g)}
	if g.State == storage.GuestLobby {
		return res, nil
	}
	jr, err := c.dialGuest(ctx, conv, g, number)
	if err != nil {
		// Nobody holds this session (the answer is an error): end it and
		// give the use back, so a retry starts clean.
		c.abandonGuest(ctx, g, "the call could not be placed")
		return GuestJoinResult{}, err
	}
	res.Leg = &jr.Leg
	return res, nil
}

// guestEvent appends a guest.* event for g; when g is (being) admitted the
// seqs and message id from which they see the conversation are set, and
// StartSeq when it is their first event.
func (c *Controller) guestEvent(ctx context.Context, tx *storage.Store, g *storage.Guest, typ string) error {
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
func (c *Controller) dialGuest(ctx context.Context, conv *storage.Conversation, g *storage.Guest, number string) (JoinResult, error) {
	gid := g.ID
	return c.dial(ctx, conv, guestActor(g), dialTarget{guestID: &gid, number: number, source: "guest"},
		func(tx *storage.Store, conf *storage.Conference) error {
			cur, err := tx.GetGuestForUpdate(ctx, gid)
			if err != nil {
				return err
			}
			if cur.State != storage.GuestAdmitted {
				return conflict("guest_not_admitted", "the guest is %s, not admitted; nothing was dialed", cur.State)
			}
			if l, err := tx.LiveLegOfGuest(ctx, gid); err == nil {
				return conflict("already_in_audio", "a call to %s is already %s; hang it up first", l.Number, l.State)
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			return nil
		})
}

// abandonGuest ends a guest whose join failed and gives the link's use back.
func (c *Controller) abandonGuest(ctx context.Context, g *storage.Guest, reason string) {
	ctx = context.WithoutCancel(ctx)
	var hangups []*storage.Leg
	err := c.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.GetGuestForUpdate(ctx, g.ID)
		if err != nil {
			return err
		}
		if !storage.GuestLive(cur.State) {
			return nil
		}
		leg, err := c.endGuestTx(ctx, tx, cur, storage.GuestEnded, reason)
		if leg != nil {
			hangups = append(hangups, leg)
		}
		if err != nil {
			return err
		}
		return tx.UnuseJoinLink(ctx, cur.JoinLinkID)
	})
	if err != nil {
		c.log.Error("ending an abandoned guest failed", "guest", g.ID, "err", err)
	}
	c.hangupGuestLegs(ctx, hangups)
}

// endGuestTx ends a live guest's session in tx (state, event) and flags
// their live leg, if any, as hung up by us; the caller hangs that leg up
// on the PBX after the commit.
func (c *Controller) endGuestTx(ctx context.Context, tx *storage.Store, g *storage.Guest, state, reason string) (*storage.Leg, error) {
	now := time.Now().UTC()
	g.State, g.LeftAt, g.EndReason = state, &now, reason
	if err := c.guestEvent(ctx, tx, g, "guest.updated"); err != nil {
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
	l.HangupRequested = true
	if l.EndReason == "" {
		l.EndReason = reason
	}
	if err := tx.SaveLeg(ctx, l); err != nil {
		return nil, err
	}
	return l, nil
}

func (c *Controller) hangupGuestLegs(ctx context.Context, legs []*storage.Leg) {
	for _, l := range legs {
		conf, err := c.store.GetConference(ctx, l.ConferenceID)
		if err != nil {
			c.log.Warn("hanging up a guest's call: no conference", "leg", l.ID, "err", err)
			continue
		}
		c.hangupOnPBX(ctx, conf, l)
	}
}

// EndGuestsOfConversation ends every guest session of a conversation (call
// it when the conversation ends); their calls are hung up.
func (c *Controller) EndGuestsOfConversation(ctx context.Context, convID, reason string) error {
	var hangups []*storage.Leg
	err := c.store.InTx(ctx, func(tx *storage.Store) error {
		gs, err := tx.LiveGuestsOfConversation(ctx, convID)
		if err != nil {
			return err
		}
		for i := range gs {
			leg, err := c.endGuestTx(ctx, tx, &gs[i], storage.GuestEnded, reason)
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
	c.hangupGuestLegs(ctx, hangups)
	return nil
}

// ---- participants: the lobby -----------------------------------------------

// ListGuests lists a conversation's guests (every state), by arrival.
func (c *Controller) ListGuests(ctx context.Context, a Actor, convID string) ([]GuestView, error) {
	if _, _, err := c.member(ctx, a, convID); err != nil {
		return nil, err
	}
	gs, err := c.store.Guests(ctx, convID)
	if err != nil {
		return nil, err
	}
	out := make([]GuestView, 0, len(gs))
	for i := range gs {
		out = append(out, guestView(&gs[i]))
	}
	return out, nil
}

// AdmitResult answers admit and refuse.
type AdmitResult struct {
	Guest GuestView `json:"guest"`
	Leg   *LegView  `json:"leg"`
}

// lobbyGuest loads a guest of a conversation the caller is in.
func (c *Controller) lobbyGuest(ctx context.Context, a Actor, convID, guestID string) (*storage.Conversation, *storage.Guest, error) {
	conv, _, err := c.member(ctx, a, convID)
	if err != nil {
		return nil, nil, err
	}
	g, err := c.store.GetGuest(ctx, guestID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && g.ConversationID != conv.ID) {
		return nil, nil, notFoundErr("guest")
	}
	if err != nil {
		return nil, nil, err
	}
	return conv, g, nil
}

// AdmitGuest lets a guest in from the lobby and has the PBX call them. The
// guest stays admitted when the call cannot be placed (they can ask to be
// called again).
func (c *Controller) AdmitGuest(ctx context.Context, a Actor, convID, guestID string) (AdmitResult, error) {
	conv, g, err := c.lobbyGuest(ctx, a, convID, guestID)
	if err != nil {
		return AdmitResult{}, err
	}
	if conv.EndedAt != nil {
		return AdmitResult{}, conflict("conversation_ended", "the conversation has ended")
	}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.GetGuestForUpdate(ctx, g.ID)
		if err != nil {
			return err
		}
		if cur.State != storage.GuestLobby {
			return conflict("guest_not_waiting", "the guest is %s, not waiting to be admitted", cur.State)
		}
		now := time.Now().UTC()
		cur.State, cur.AdmittedAt = storage.GuestAdmitted, &now
		if err := c.guestEvent(ctx, tx, cur, "guest.updated"); err != nil {
			return err
		}
		if err := tx.SaveGuest(ctx, cur); err != nil {
			return err
		}
		*g = *cur
		return c.auditGuestAdmission(ctx, tx, a, cur)
	})
	if err != nil {
		return AdmitResult{}, err
	}
	jr, err := c.dialGuest(ctx, conv, g, g.Number)
	if err != nil {
		return AdmitResult{}, err
	}
	return AdmitResult{Guest: guestView(g), Leg: &jr.Leg}, nil
}

// RefuseGuest turns a guest in the lobby away: nothing is ever dialed for
// them and their session ends.
func (c *Controller) RefuseGuest(ctx context.Context, a Actor, convID, guestID string) (AdmitResult, error) {
	_, g, err := c.lobbyGuest(ctx, a, convID, guestID)
	if err != nil {
		return AdmitResult{}, err
	}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.GetGuestForUpdate(ctx, g.ID)
		if err != nil {
			return err
		}
		if cur.State != storage.GuestLobby {
			return conflict("guest_not_waiting", "the guest is %s, not waiting to be admitted", cur.State)
		}
		if _, err := c.endGuestTx(ctx, tx, cur, storage.GuestRefused, "refused by "+a.Name); err != nil {
			return err
		}
		*g = *cur
		return c.auditGuestAdmission(ctx, tx, a, cur)
	})
	if err != nil {
		return AdmitResult{}, err
	}
	return AdmitResult{Guest: guestView(g)}, nil
}

// ---- guests: their session -------------------------------------------------

// GuestActor is an authenticated guest session.
type GuestActor struct {
	GuestID        string
	ConversationID string
	Name           string
}

// AuthenticateGuest resolves a guest session token. It is valid while the
// guest is in the lobby or admitted, and their conversation goes on.
func (c *Controller) AuthenticateGuest(ctx context.Context, token string) (GuestActor, error) {
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenInput {
		return GuestActor{}, errGuestSessionEnded()
	}
	h := HashSecret(token)
	g, err := c.store.GuestBySessionHash(ctx, h)
	if errors.Is(err, storage.ErrNotFound) {
		return GuestActor{}, errGuestSessionEnded()
	}
	if err != nil {
		return GuestActor{}, err
	}
	if subtle.ConstantTimeCompare([]byte(h), []byte(g.SessionHash)) != 1 || !storage.GuestLive(g.State) {
		return GuestActor{}, errGuestSessionEnded()
	}
	conv, err := c.store.GetConversation(ctx, g.ConversationID)
	if err != nil {
		return GuestActor{}, err
	}
	if conv.EndedAt != nil {
		if err := c.EndGuestsOfConversation(ctx, conv.ID, "the conversation has ended"); err != nil {
			c.log.Warn("ending the guests of an ended conversation failed", "conversation", conv.ID, "err", err)
		}
		return GuestActor{}, errGuestSessionEnded()
	}
	return GuestActor{GuestID: g.ID, ConversationID: g.ConversationID, Name: g.DisplayName}, nil
}

// liveGuest reloads the guest of a session, which may have ended since it
// was authenticated.
func (c *Controller) liveGuest(ctx context.Context, ga GuestActor) (*storage.Guest, error) {
	g, err := c.store.GetGuest(ctx, ga.GuestID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !storage.GuestLive(g.State)) {
		return nil, errGuestSessionEnded()
	}
	return g, err
}

func requireAdmitted(g *storage.Guest) error {
	if g.State != storage.GuestAdmitted {
		return forbidden("not_admitted", "you are waiting for the organiser to admit you")
	}
	return nil
}

// GuestConversation is what a guest sees of their conversation.
type GuestConversation struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
}

// GuestSessionView is a guest's own view: who they are, where, and their
// call (the newest one; null when none).
type GuestSessionView struct {
	Guest        GuestView         `json:"guest"`
	Conversation GuestConversation `json:"conversation"`
	Leg          *LegView          `json:"leg"`
	// LastEventID: follow GET /guest/events from here to miss nothing.
	LastEventID string `json:"last_event_id"`
}

// GuestSession returns the guest's own view.
func (c *Controller) GuestSession(ctx context.Context, ga GuestActor) (GuestSessionView, error) {
	g, err := c.liveGuest(ctx, ga)
	if err != nil {
		return GuestSessionView{}, err
	}
	conv, err := c.store.GetConversation(ctx, g.ConversationID)
	if err != nil {
		return GuestSessionView{}, err
	}
	seq, err := c.store.LastEventSeq(ctx, conv.ID)
	if err != nil {
		return GuestSessionView{}, err
	}
	v := GuestSessionView{Guest: guestView(g), Conversation: GuestConversation{ID: conv.ID, Kind: conv.Kind, Subject: conv.Subject},
		LastEventID: strconv.FormatInt(seq, 10)}
	if l, err := c.store.LatestLegOfGuest(ctx, g.ID); err == nil {
		lv := legView(l)
		v.Leg = &lv
	} else if !errors.Is(err, storage.ErrNotFound) {
		return GuestSessionView{}, err
	}
	return v, nil
}

// GuestMessages pages through the messages a guest may see: those posted
// since they were admitted.
func (c *Controller) GuestMessages(ctx context.Context, ga GuestActor, q MessageQuery) (MessagePage, error) {
	g, err := c.liveGuest(ctx, ga)
	if err != nil {
		return MessagePage{}, err
	}
	if err := requireAdmitted(g); err != nil {
		return MessagePage{}, err
	}
	return c.messagePage(ctx, g.ConversationID, g.SinceMessageID, q)
}

// GuestPostMessage posts an IM message as the guest. The author name says
// "(guest)" so that nobody passes for a colleague.
func (c *Controller) GuestPostMessage(ctx context.Context, ga GuestActor, text string) (MessageView, error) {
	g, err := c.liveGuest(ctx, ga)
	if err != nil {
		return MessageView{}, err
	}
	if err := requireAdmitted(g); err != nil {
		return MessageView{}, err
	}
	text = strings.TrimRight(text, " \t\r\n")
	if strings.TrimSpace(text) == "" {
		return MessageView{}, invalid("text", "text: the message is empty")
	}
	if utf8.RuneCountInString(text) > maxMessage {
		return MessageView{}, invalid("text", "text: at most %d characters", maxMessage)
	}
	gid := g.ID
	m := &storage.Message{ConversationID: g.ConversationID, GuestID: &gid, AuthorName: g.DisplayName + " (guest)",
		Text: text, CreatedAt: time.Now().UTC()}
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		cur, err := tx.GetGuestForUpdate(ctx, gid)
		if err != nil {
			return err
		}
		if !storage.GuestLive(cur.State) {
			return errGuestSessionEnded()
		}
		if err := tx.CreateMessage(ctx, m); err != nil {
			return err
		}
		return appendEvent(ctx, tx, m.ConversationID, "message.created", messageView(m))
	})
	if err != nil {
		return MessageView{}, err
	}
	return messageView(m), nil
}

// GuestDial has the PBX call the guest (again): on the number they joined
// with, or on number when given.
func (c *Controller) GuestDial(ctx context.Context, ga GuestActor, number string) (JoinResult, error) {
	g, err := c.liveGuest(ctx, ga)
	if err != nil {
		return JoinResult{}, err
	}
	if err := requireAdmitted(g); err != nil {
		return JoinResult{}, err
	}
	dialNumber := g.Number
	if strings.TrimSpace(number) != "" {
		if dialNumber, err = c.numbers.Normalize("number", number); err != nil {
			return JoinResult{}, err
		}
	}
	conv, err := c.store.GetConversation(ctx, g.ConversationID)
	if err != nil {
		return JoinResult{}, err
	}
	return c.dialGuest(ctx, conv, g, dialNumber)
}

// GuestHangup hangs up the guest's live call; they stay in the
// conversation.
func (c *Controller) GuestHangup(ctx context.Context, ga GuestActor) error {
	g, err := c.liveGuest(ctx, ga)
	if err != nil {
		return err
	}
	var leg *storage.Leg
	err = c.store.InTx(ctx, func(tx *storage.Store) error {
		l, err := tx.LiveLegOfGuest(ctx, g.ID)
		if errors.Is(err, storage.ErrNotFound) {
			return conflict("leg_not_live", "you have no call in progress")
		}
		if err != nil {
			return err
		}
		cur, err := tx.GetLegForUpdate(ctx, l.ID)
		if err != nil {
			return err
		}
		cur.HangupRequested = true
		cur.EndReason = "hung up by the guest"
		leg = cur
		return tx.SaveLeg(ctx, cur)
	})
	if err != nil {
		return err
	}
	c.hangupGuestLegs(ctx, []*storage.Leg{leg})
	return nil
}

// GuestLeave ends the guest's session: their call is hung up and their
// token stops working.
func (c *Controller) GuestLeave(ctx context.Context, ga GuestActor) error {
	var hangups []*storage.Leg
	err := c.store.InTx(ctx, func(tx *storage.Store) error {
		g, err := tx.GetGuestForUpdate(ctx, ga.GuestID)
		if err != nil {
			return err
		}
		if !storage.GuestLive(g.State) {
			return errGuestSessionEnded()
		}
		leg, err := c.endGuestTx(ctx, tx, g, storage.GuestLeft, "left the conversation")
		if leg != nil {
			hangups = append(hangups, leg)
		}
		return err
	})
	if err != nil {
		return err
	}
	c.hangupGuestLegs(ctx, hangups)
	return nil
}

// ---- guests: their event stream --------------------------------------------

// GuestStream decides, event by event, what of its conversation's stream a
// guest sees: everything about themselves from their arrival; once
// admitted, the conversation's messages, participants, presenter, audio
// and calls from their admission on — with the numbers of other people's
// calls blanked. Never invitations or join links.
type GuestStream struct {
	c     *Controller
	ga    GuestActor
	guest *storage.Guest
}

// GuestStream starts deciding for a guest session.
func (c *Controller) GuestStream(ctx context.Context, ga GuestActor) (*GuestStream, error) {
	g, err := c.liveGuest(ctx, ga)
	if err != nil {
		return nil, err
	}
	return &GuestStream{c: c, ga: ga, guest: g}, nil
}

// StartSeq is where the guest's stream begins (it replays from after it).
func (s *GuestStream) StartSeq() int64 { return s.guest.StartSeq }

// Check says whether the session still holds (polled by the stream).
func (s *GuestStream) Check(ctx context.Context) error {
	_, err := s.c.AuthenticateGuestByID(ctx, s.ga.GuestID)
	return err
}

// AuthenticateGuestByID re-checks a guest session by the guest's id.
func (c *Controller) AuthenticateGuestByID(ctx context.Context, guestID string) (GuestActor, error) {
	g, err := c.store.GetGuest(ctx, guestID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !storage.GuestLive(g.State)) {
		return GuestActor{}, errGuestSessionEnded()
	}
	if err != nil {
		return GuestActor{}, err
	}
	conv, err := c.store.GetConversation(ctx, g.ConversationID)
	if err != nil {
		return GuestActor{}, err
	}
	if conv.EndedAt != nil {
		return GuestActor{}, errGuestSessionEnded()
	}
	return GuestActor{GuestID: g.ID, ConversationID: g.ConversationID, Name: g.DisplayName}, nil
}

// Filter returns the event as the guest may see it (keep false: not at
// all); end is true when the event ends the guest's session (it is the
// last they get).
func (s *GuestStream) Filter(ctx context.Context, ev storage.Event) (out storage.Event, keep, end bool) {
	var data map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &data); err != nil {
		return ev, false, false
	}
	me := s.guest.ID
	sees := s.guest.State == storage.GuestAdmitted && ev.Seq > s.guest.SinceSeq
	switch ev.Type {
	case "guest.waiting", "guest.updated":
		if data["id"] == me {
			if g, err := s.c.store.GetGuest(ctx, me); err == nil {
				s.guest = g
			}
			state, _ := data["state"].(string)
			return ev, true, !storage.GuestLive(state)
		}
		if !sees {
			return ev, false, false
		}
		return redactNumber(ev, data), true, false
	case "leg.updated":
		if data["guest_id"] == me {
			return ev, true, false
		}
		if !sees {
			return ev, false, false
		}
		return redactNumber(ev, data), true, false
	case "message.created", "participant.joined", "participant.left", "presenter.changed", "audio.started", "audio.ended":
		return ev, sees, false
	}
	return ev, false, false
}

func redactNumber(ev storage.Event, data map[string]any) storage.Event {
	if _, ok := data["number"]; !ok {
		return ev
	}
	data["number"] = ""
	b, err := json.Marshal(data)
	if err != nil {
		return ev
	}
	ev.Data = string(b)
	return ev
}
