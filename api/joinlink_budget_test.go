package api_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
)

// One account cannot spend the service's dial budget through join links
// (issue 19): many guests joining through one user's links, from several
// addresses (each under the per-address join limit), are charged to the
// links' maker; once the maker's guest budget is spent further guests are
// refused 429 rate_limited naming that rule, the maker's own dials count
// against the account's share of the service-wide cap, links per user and
// guests per link are capped, every refusal is audited — and another user
// still dials.
func TestJoinLinkBudget_GuestsAreChargedToTheMakerAndOthersStillDial(t *testing.T) {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	env := apitest.Start(t, apitest.Options{TrustedProxies: []*net.IPNet{loopback}, Policy: noLimitsBut(controller.PolicyConfig{
		DialsPerUser: 5, DialsPerGuest: 3, DialsTotal: 20,
		GuestDialsPerLinkMaker: 8, AccountSharePercent: 50, // one account: at most 10 of the 20
		MaxJoinLinksPerUser: 3, MaxGuestsPerLink: 5,
	})})
	mallory := env.AddUser("Mallory", num("work", "+12025550111"))
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	var convs []string
	for i := 0; i < 3; i++ {
		convs = append(convs, jlConv(t, env, mallory, fmt.Sprintf("Open house %d", i)))
	}
	_, linkA := jlLink(t, env, mallory, convs[0], nil)
	_, linkB := jlLink(t, env, mallory, convs[1], nil)
	_, lobby := jlLink(t, env, mallory, convs[2], map[string]any{"require_admission": true})

	// A fourth usable link is one too many.
	r := env.Do("POST", "/api/v1/conversations/"+convs[2]+"/join-links", mallory.Token, map[string]any{})
	if r.Status != 429 || r.ErrorCode() != "rate_limited" || !strings.Contains(string(r.Body), "max_join_links_per_user") {
		t.Fatalf("4th link: %d %s, want 429 rate_limited naming max_join_links_per_user", r.Status, r.Body)
	}

	// Guests from six addresses, in turn on links A and B.
	addr := 0
	from := func() []string {
		addr++
		return []string{"X-Forwarded-For", fmt.Sprintf("198.51.100.%d", addr%6+1)}
	}
	join := func(token string, i int) apitest.Response {
		return env.Do("POST", "/api/v1/join/"+token, "", map[string]any{"display_name": fmt.Sprintf("Guest %d", i),
			"number": fmt.Sprintf("+120255502%02d", i)}, from()...)
	}
	for i := 0; i < 8; i++ {
		if r := join([]string{linkA, linkB}[i%2], i); r.Status != 201 {
			t.Fatalf("guest %d: %d %s", i, r.Status, r.Body)
		}
	}
	// The ninth guest would be only the fifth of link A (guests per link
	// allow five) and is within every per-guest and per-conversation
	// limit: the maker's guest budget refuses it.
	r = join(linkA, 8)
	if r.Status != 429 || r.ErrorCode() != "rate_limited" || !strings.Contains(string(r.Body), "guest_dials_per_link_maker") {
		t.Fatalf("9th guest: %d %s, want 429 rate_limited naming guest_dials_per_link_maker", r.Status, r.Body)
	}

	// Mallory's own dials are her account's too: 8 guest dials and two of
	// hers reach the account's share (10 of 20), the third is refused
	// although her own per-user budget (5) has room.
	for i := 0; i < 2; i++ {
		env.Must(201, "POST", "/api/v1/conversations/"+convs[i]+"/audio", mallory.Token, map[string]any{"published": "work"})
	}
	r = env.Do("POST", "/api/v1/conversations/"+convs[2]+"/audio", mallory.Token, map[string]any{"published": "work"})
	if r.Status != 429 || r.ErrorCode() != "rate_limited" || !strings.Contains(string(r.Body), "dials_per_account") {
		t.Fatalf("mallory's 3rd dial: %d %s, want 429 rate_limited naming dials_per_account", r.Status, r.Body)
	}

	// Guests waiting in a lobby are not dialed but count against their
	// link: the sixth is refused.
	for i := 0; i < 5; i++ {
		if r := join(lobby, 20+i); r.Status != 201 {
			t.Fatalf("lobby guest %d: %d %s", i, r.Status, r.Body)
		}
	}
	r = join(lobby, 25)
	if r.Status != 429 || r.ErrorCode() != "rate_limited" || !strings.Contains(string(r.Body), "max_guests_per_link") {
		t.Fatalf("6th guest of a link: %d %s, want 429 rate_limited naming max_guests_per_link", r.Status, r.Body)
	}

	// Mallory's account has spent its share, not the service's: Alice
	// dials.
	aconv := jlConv(t, env, alice, "Unrelated")
	env.Must(201, "POST", "/api/v1/conversations/"+aconv+"/audio", alice.Token, map[string]any{"published": "work"})

	// Every refusal is audited with its rule.
	want := map[string]string{"dial.refused": "", "join_link.refused": "max_join_links_per_user=3",
		"guest.join_refused": "max_guests_per_link=5"}
	for action, detail := range want {
		es := auditEntries(t, env, "action="+action)
		if action == "dial.refused" {
			if len(es) != 2 {
				t.Fatalf("%d dial refusals audited, want 2: %+v", len(es), es)
			}
			continue
		}
		if len(es) != 1 || es[0].Rule != "rate_limited" || es[0].Detail != detail {
			t.Fatalf("%s audited as %+v, want one entry with rule rate_limited and detail %q", action, es, detail)
		}
	}
	details := []string{}
	for _, e := range auditEntries(t, env, "action=dial.refused") {
		details = append(details, e.Detail)
	}
	if s := strings.Join(details, " "); !strings.Contains(s, "guest_dials_per_link_maker=8/") || !strings.Contains(s, "dials_per_account=10/") {
		t.Fatalf("dial refusals audited with details %q", s)
	}
}
