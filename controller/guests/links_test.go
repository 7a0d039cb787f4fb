package guests

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/storage"
)

func TestJoinLinkMailto_PercentEncodesEverythingButUnreserved(t *testing.T) {
	subject := "Join “Q3 plan & budget?” by phone"
	body := "Alice invites you.\n\nhttps://convoice.example/join/abc-_DEF\n100% sure; a=b+c #1\n"
	got := mailtoURL(subject, body)
	rest := strings.TrimPrefix(got, "mailto:?subject=")
	if rest == got {
		t.Fatalf("%q does not start with mailto:?subject=", got)
	}
	// Only unreserved characters, percent escapes and the one separator.
	for i, r := range rest {
		ok := r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~%&=", r)
		if !ok {
			t.Fatalf("unescaped %q at %d in %q", r, i, got)
		}
	}
	if strings.Count(rest, "&") != 1 || strings.Count(rest, "=") != 1 {
		t.Fatalf("%q: & or = inside a value is not escaped", got)
	}
	u, err := url.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("subject") != subject {
		t.Fatalf("subject decodes to %q", q.Get("subject"))
	}
	if want := strings.ReplaceAll(body, "\n", "\r\n"); q.Get("body") != want {
		t.Fatalf("body decodes to %q, want CRLF line breaks %q", q.Get("body"), want)
	}
}

func TestJoinLinkState_RevokedExpiredUsedUpActive(t *testing.T) {
	now := time.Now().UTC()
	later, earlier := now.Add(time.Hour), now.Add(-time.Second)
	for _, c := range []struct {
		l    storage.JoinLink
		want string
	}{
		{storage.JoinLink{ExpiresAt: later}, LinkActive},
		{storage.JoinLink{ExpiresAt: later, MaxUses: 2, Uses: 1}, LinkActive},
		{storage.JoinLink{ExpiresAt: later, MaxUses: 2, Uses: 2}, LinkUsedUp},
		{storage.JoinLink{ExpiresAt: earlier}, LinkExpired},
		{storage.JoinLink{ExpiresAt: now}, LinkExpired},
		{storage.JoinLink{ExpiresAt: later, RevokedAt: &earlier}, LinkRevoked},
	} {
		if got := linkState(&c.l, now); got != c.want {
			t.Errorf("%+v: %s, want %s", c.l, got, c.want)
		}
	}
}

// One rule for every display name (core.Name): guests' here, people's in
// the API tests.
func TestGuestName_TrimmedBoundedNoControlOrFormatCharacters(t *testing.T) {
	for in, ok := range map[string]bool{
		"  Gina Guest ":          true,
		"Zoë Ångström":           true,
		"":                       false,
		"   ":                    false,
		strings.Repeat("x", 100): true,
		strings.Repeat("é", 100): true,
		strings.Repeat("x", 101): false,
		"Bob\nAdmin":             false,
		"Eve\u202eelliA":         false, // right-to-left override
		"Mallory\u200b":          false, // zero-width space
	} {
		_, err := checkGuestName(in)
		if (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%v", in, err, ok)
		}
	}
}
