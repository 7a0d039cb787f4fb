package directory

import (
	"time"

	"github.com/convoice/convoice/storage"
)

// NumberView is a published number.
type NumberView struct {
	Label   string `json:"label"`
	Number  string `json:"number"`
	Default bool   `json:"default"`
}

// ContactView is a user as seen on someone's contact list.
type ContactView struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	// Email is shown only for people you have been in a conversation with.
	Email string `json:"email,omitempty"`
}

// UserView is a user with their numbers (and contacts for /me).
type UserView struct {
	ID          string       `json:"id"`
	DisplayName string       `json:"display_name"`
	Email       string       `json:"email"`
	Role        string       `json:"role"`
	Numbers     []NumberView `json:"numbers"`
	CreatedAt   time.Time    `json:"created_at"`
}

// MeView is the caller: a user with their contact list.
type MeView struct {
	UserView
	Contacts []ContactView `json:"contacts"`
}

func viewOfUser(u *storage.User) UserView {
	v := UserView{ID: u.ID, DisplayName: u.DisplayName, Email: u.Email, Role: u.Role, CreatedAt: u.CreatedAt, Numbers: []NumberView{}}
	for _, n := range u.Numbers {
		v.Numbers = append(v.Numbers, NumberView{Label: n.Label, Number: n.Number, Default: n.IsDefault})
	}
	return v
}
