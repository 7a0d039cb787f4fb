package core

import (
	"context"
	"errors"
	"strings"

	"github.com/convoice/convoice/storage"
)

// Actor is who makes a request.
type Actor struct {
	UserID string // empty for the config admin token
	Admin  bool
	Name   string
}

// RequireUser refuses the admin token where a person must act.
func RequireUser(a Actor) error {
	if a.UserID == "" {
		return Forbidden("user_only", "this needs a user's token, not the admin token")
	}
	return nil
}

// RequireAdmin refuses everyone but admins.
func RequireAdmin(a Actor) error {
	if !a.Admin {
		return Forbidden("admin_only", "this needs the admin role")
	}
	return nil
}

// Member checks that the actor is a present participant of the
// conversation. Anyone else, and an unknown id, get the same not-found
// answer, so conversations cannot be discovered.
func Member(ctx context.Context, st *storage.Store, a Actor, convID string) (*storage.Conversation, *storage.Participant, error) {
	if a.UserID == "" {
		return nil, nil, NotFound("conversation")
	}
	conv, p, err := st.Membership(ctx, convID, a.UserID)
	if err := present(p, err); err != nil {
		return nil, nil, err
	}
	return conv, p, nil
}

// MemberWithUser is Member that also loads the actor's user with their
// numbers, in the same read (a join needs both).
func MemberWithUser(ctx context.Context, st *storage.Store, a Actor, convID string) (*storage.Conversation, *storage.User, error) {
	if a.UserID == "" {
		return nil, nil, NotFound("conversation")
	}
	conv, p, u, err := st.MembershipWithUser(ctx, convID, a.UserID)
	if err := present(p, err); err != nil {
		return nil, nil, err
	}
	return conv, u, nil
}

// present is Member's answer to a membership read: the same not-found for
// someone never in the conversation and someone who left it.
func present(p *storage.Participant, err error) error {
	if errors.Is(err, storage.ErrNotFound) || (err == nil && p.LeftAt != nil) {
		return NotFound("conversation")
	}
	return err
}

// Dedupe trims a request's list of ids and drops empty and repeated ones.
func Dedupe(ids []string) []string {
	seen := map[string]bool{}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		id = strings.TrimSpace(id)
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

// MissingIDs names the ids of want that got has no user for.
func MissingIDs(want []string, got []storage.User) string {
	have := map[string]bool{}
	for _, u := range got {
		have[u.ID] = true
	}
	var miss []string
	for _, id := range want {
		if !have[id] {
			miss = append(miss, id)
		}
	}
	return "unknown user id(s): " + strings.Join(miss, ", ")
}
