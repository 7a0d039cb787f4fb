package api_test

import (
	"strings"
	"testing"

	"github.com/convoice/convoice/api/apitest"
)

// A person's display name obeys the rule a guest's does: control and
// format characters are refused (an admin could set NUL, U+202E and U+200B
// that a guest could not), and the limit counts characters, not bytes (67
// CJK characters were refused as "at most 200 characters").
func TestNames_OneRuleForPeopleAndGuestsCountingCharacters(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	for i, c := range []struct {
		name string
		ok   bool
	}{
		{"Nul\x00Byte", false},
		{"Eve\u202eelliA", false},
		{"Mallory\u200b", false},
		{"Line\nBreak", false},
		{strings.Repeat("漢", 67), true},
		{strings.Repeat("漢", 100), true},
		{strings.Repeat("漢", 101), false},
		{strings.Repeat("x", 101), false},
	} {
		r := env.Do("POST", "/api/v1/users", apitest.AdminToken, map[string]any{
			"display_name": c.name, "email": "person" + string(rune('a'+i)) + "@example.com"})
		if c.ok && r.Status != 201 {
			t.Errorf("%q: %d %s, want 201", c.name, r.Status, r.Body)
		}
		if !c.ok && (r.Status != 400 || r.ErrorCode() != "invalid_display_name") {
			t.Errorf("%q: %d %s, want 400 invalid_display_name", c.name, r.Status, r.Body)
		}
	}
}

// Putting any user id on your contact list does not reveal their e-mail:
// it is shown only for people you have been in a conversation with.
func TestContacts_EmailOnlyOfPeopleYouHaveMet(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	ann, bo, cy := env.AddUser("Ann"), env.AddUser("Bo"), env.AddUser("Cy")
	newConversation(t, env, ann, bo)
	me := env.Must(200, "PUT", "/api/v1/me/contacts", ann.Token, map[string]any{"user_ids": []string{bo.ID, cy.ID}}).Map(t)
	emails := map[string]any{}
	for _, c := range me["contacts"].([]any) {
		m := c.(map[string]any)
		emails[m["id"].(string)] = m["email"]
	}
	if emails[bo.ID] == nil || emails[bo.ID] == "" {
		t.Errorf("Bo, met in a conversation: no e-mail: %v", me["contacts"])
	}
	if e, shown := emails[cy.ID]; shown && e != nil {
		t.Errorf("Cy, never met: e-mail %v revealed", e)
	}
}
