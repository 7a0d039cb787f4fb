package identity

import (
	"context"
	"fmt"
	"slices"

	"github.com/convoice/convoice/storage"
)

// Change is one thing a sync did to one person.
type Change struct {
	Action string // created, updated, deactivated, reactivated
	UserID string
	Email  string
	Detail string
}

func (c Change) String() string {
	s := c.Action + " " + c.Email
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// SyncResult is what one sync did; a person that failed (a number that
// cannot be normalised, …) is in Errors and left as they were.
type SyncResult struct {
	Changes []Change
	Errors  []error
}

// Sync makes the people of source match people, the whole population of
// the source (an LDAP pull): new ones are created, changed ones updated,
// and people of this source who are no longer there are deactivated. A
// person is matched by external id, else by e-mail (a person made by hand
// with the same address is taken over). Running it twice with the same
// people changes nothing the second time.
func (id *Identity) Sync(ctx context.Context, source string, people []Person) (SyncResult, error) {
	var res SyncResult
	known, err := id.store.FindUsers(ctx, storage.UserQuery{Source: source, WithRemoved: true})
	if err != nil {
		return res, err
	}
	byExt := map[string]*storage.User{}
	for i := range known {
		if known[i].ExternalID != "" {
			byExt[known[i].ExternalID] = &known[i]
		}
	}
	seen := map[string]bool{}
	for _, p0 := range people {
		p, nums, err := id.check(p0)
		if err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("%s (%s): %w", p0.Email, p0.ExternalID, err))
			continue
		}
		u := byExt[p.ExternalID]
		if u == nil {
			ex, err := id.store.FindUsers(ctx, storage.UserQuery{Email: p.Email, WithRemoved: true})
			if err != nil {
				return res, err
			}
			if len(ex) > 0 {
				u = &ex[0]
			}
		}
		if u == nil {
			nu, err := id.Create(ctx, source, p)
			if err != nil {
				res.Errors = append(res.Errors, fmt.Errorf("%s: %w", p.Email, err))
				continue
			}
			seen[nu.ID] = true
			res.Changes = append(res.Changes, Change{Action: "created", UserID: nu.ID, Email: nu.Email})
			continue
		}
		seen[u.ID] = true
		what := differences(u, source, p, nums)
		if len(what) == 0 {
			continue
		}
		wasActive := u.DeactivatedAt == nil && u.RemovedAt == nil
		u.RemovedAt = nil
		if _, err := id.apply(ctx, source, u, p, nums); err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("%s: %w", p.Email, err))
			continue
		}
		action := "updated"
		switch {
		case wasActive && !p.Active:
			action = "deactivated"
		case !wasActive && p.Active:
			action = "reactivated"
		}
		res.Changes = append(res.Changes, Change{Action: action, UserID: u.ID, Email: p.Email, Detail: joinWords(what)})
	}
	for i := range known {
		u := &known[i]
		if seen[u.ID] || u.DeactivatedAt != nil || u.RemovedAt != nil {
			continue
		}
		p := Person{ExternalID: u.ExternalID, Email: u.Email, DisplayName: u.DisplayName, Active: false}
		if _, err := id.apply(ctx, source, u, p, nil); err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("%s: %w", u.Email, err))
			continue
		}
		res.Changes = append(res.Changes, Change{Action: "deactivated", UserID: u.ID, Email: u.Email, Detail: "no longer in the directory"})
	}
	return res, nil
}

// differences names what p would change of u.
func differences(u *storage.User, source string, p Person, nums []storage.PublishedNumber) []string {
	var what []string
	if u.DisplayName != p.DisplayName {
		what = append(what, "name")
	}
	if u.Email != p.Email {
		what = append(what, "e-mail")
	}
	if u.Source != source || (p.ExternalID != "" && u.ExternalID != p.ExternalID) {
		what = append(what, "source")
	}
	if (u.DeactivatedAt == nil && u.RemovedAt == nil) != p.Active {
		what = append(what, "active")
	}
	type num struct {
		label, number string
		def           bool
	}
	var have, want []num
	for _, n := range u.Numbers {
		have = append(have, num{n.Label, n.Number, n.IsDefault})
	}
	for _, n := range nums {
		want = append(want, num{n.Label, n.Number, n.IsDefault})
	}
	if !slices.Equal(have, want) {
		what = append(what, "numbers")
	}
	return what
}

func joinWords(ws []string) string {
	s := ""
	for i, w := range ws {
		if i > 0 {
			s += ", "
		}
		s += w
	}
	return s
}
