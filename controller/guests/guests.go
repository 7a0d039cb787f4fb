package guests

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/convoice/convoice/controller/audit"
	"github.com/convoice/convoice/controller/conversations"
	"github.com/convoice/convoice/controller/core"
	"github.com/convoice/convoice/controller/engine"
	"github.com/convoice/convoice/controller/policy"
	"github.com/convoice/convoice/storage"
)

const (
	defaultLinkExpiry = 24 * time.Hour
	maxLinkExpiry     = 30 * 24 * time.Hour
	maxLinkUses       = 10000
	// maxTokenInput bounds a token before it is even hashed (ours are 43
	// characters).
	maxTokenInput = 200

	// JoinRateLimit join attempts (valid or not) per client address per
	// JoinRateWindow.
	JoinRateLimit  = 10
	JoinRateWindow = time.Minute
	// joinRateBucket is the sliding window's resolution (CountJoinAttempt).
	joinRateBucket = 5 * time.Second
)

// Guests is the join links and the guests who come with them.
type Guests struct {
	store         *storage.Store
	log           *slog.Logger
	numbers       policy.Numbers
	engine        *engine.Engine
	conversations *conversations.Conversations
	audit         *audit.Log
	now           func() time.Time // the clock of the join-attempt window
}

// New makes the guests' side over the engine (their calls) and convs
// (the messages they read and post).
func New(store *storage.Store, lg *slog.Logger, numbers policy.Numbers, eng *engine.Engine, convs *conversations.Conversations, trail *audit.Log) *Guests {
	return &Guests{store: store, log: lg, numbers: numbers, engine: eng, conversations: convs, audit: trail, now: time.Now}
}

// errJoinLinkInvalid is the one answer for a token that is unknown,
// expired, revoked or used up: nothing tells them apart.
func errJoinLinkInvalid() *core.Error {
	return &core.Error{Kind: core.KindNotFound, Code: "join_link_invalid",
		Message: "this join link is not valid: it may have expired, been used up or been withdrawn; ask the organiser for a new one"}
}

// errGuestSessionEnded is the answer to a guest token that is unknown or
// whose session has ended.
func errGuestSessionEnded() *core.Error {
	return &core.Error{Kind: core.KindUnauthorized, Code: "unauthorized", Message: "the guest session is unknown or has ended"}
}

// RetryAfterError is a refusal that says when to try again (429).
type RetryAfterError struct {
	Err   *core.Error
	After time.Duration
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

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
func guestActor(g *storage.Guest) core.Actor {
	return core.Actor{Name: g.DisplayName + " (guest)"}
}

// The audit of links and guests. Each is called inside the transaction
// that makes the change, after the change is written, and is kept only if
// it commits. Never a token.

// Audit actions of guests (the join-link ones are in package audit).
const (
	ActionGuestJoin   = "guest.join"
	ActionGuestAdmit  = "guest.admit"
	ActionGuestRefuse = "guest.refuse"
)

func (gu *Guests) auditJoinLinkCreated(ctx context.Context, tx *storage.Store, a core.Actor, l *storage.JoinLink) error {
	detail := "expires " + l.ExpiresAt.UTC().Format(time.RFC3339)
	if l.MaxUses > 0 {
		detail += fmt.Sprintf(", at most %d uses", l.MaxUses)
	}
	if l.RequireAdmission {
		detail += ", guests need admission"
	}
	return gu.audit.AddTx(ctx, tx, audit.Entry{Actor: a, Action: audit.ActionJoinLinkCreate, ConversationID: l.ConversationID,
		TargetID: l.ID, Detail: detail})
}

func (gu *Guests) auditJoinLinkRevoked(ctx context.Context, tx *storage.Store, a core.Actor, l *storage.JoinLink, ended []storage.Guest) error {
	return gu.audit.AddTx(ctx, tx, audit.Entry{Actor: a, Action: audit.ActionJoinLinkRevoke, ConversationID: l.ConversationID,
		TargetID: l.ID, Detail: fmt.Sprintf("%d guest session(s) ended", len(ended))})
}

func (gu *Guests) auditGuestJoined(ctx context.Context, tx *storage.Store, l *storage.JoinLink, g *storage.Guest) error {
	return gu.audit.AddTx(ctx, tx, audit.Entry{Actor: guestActor(g), GuestID: g.ID, Action: ActionGuestJoin,
		ConversationID: g.ConversationID, TargetID: l.ID, Number: g.Number, Source: "guest", Detail: "state " + g.State})
}

func (gu *Guests) auditGuestAdmission(ctx context.Context, tx *storage.Store, a core.Actor, g *storage.Guest) error {
	action := ActionGuestAdmit
	if g.State == storage.GuestRefused {
		action = ActionGuestRefuse
	}
	return gu.audit.AddTx(ctx, tx, audit.Entry{Actor: a, Action: action, ConversationID: g.ConversationID, TargetID: g.ID,
		Detail: g.DisplayName})
}
