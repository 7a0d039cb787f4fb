package leg

import (
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
)

// expected is the leg state machine spelled out again, independently of
// the table's construction: "state event → next effects [| ours: next
// effects]", "=" keeping the state, "-" no effect. Every pair not listed
// must be refused.
const expected = `
dialing ringing → ringing stamp ringing_at
dialing answered → confirming stamp answered_at | = hang up on the PBX
dialing connected → connected stamp connected_at | = hang up on the PBX
dialing ended → by cause end | cancelled end
dialing hangup_requested → = hang up on the PBX, mark ours
dialing ring_timeout → no_answer end, hang up on the PBX | cancelled end, hang up on the PBX
dialing resync_gone → failed end | cancelled end
dialing resync_in_conference → connected stamp connected_at | = hang up on the PBX
dialing pbx_gone → failed end | cancelled end
ringing ringing → = -
ringing answered → confirming stamp answered_at | = hang up on the PBX
ringing connected → connected stamp connected_at | = hang up on the PBX
ringing ended → by cause end | cancelled end
ringing hangup_requested → = hang up on the PBX, mark ours
ringing ring_timeout → no_answer end, hang up on the PBX | cancelled end, hang up on the PBX
ringing resync_gone → failed end | cancelled end
ringing resync_in_conference → connected stamp connected_at | = hang up on the PBX
ringing pbx_gone → failed end | cancelled end
confirming answered → = -
confirming connected → connected stamp connected_at | = hang up on the PBX
confirming ended → unconfirmed end
confirming hangup_requested → = hang up on the PBX, mark ours
confirming confirm_timeout → unconfirmed end, hang up on the PBX
confirming resync_gone → unconfirmed end
confirming resync_in_conference → connected stamp connected_at | = hang up on the PBX
confirming pbx_gone → unconfirmed end
connected connected → = -
connected ended → ended end
connected talking_started → = talking on
connected talking_finished → = talking off
connected hangup_requested → = hang up on the PBX, mark ours
connected resync_gone → ended end
connected resync_in_conference → = -
connected pbx_gone → ended end
`

type want struct{ next, effects string }

func parseExpected(t *testing.T) map[[2]string][2]want {
	t.Helper()
	out := map[[2]string][2]want{}
	for _, line := range strings.Split(strings.TrimSpace(expected), "\n") {
		head, rest, ok := strings.Cut(line, " → ")
		f := strings.Fields(head)
		if !ok || len(f) != 2 {
			t.Fatalf("bad line %q", line)
		}
		parse := func(s string) want {
			s = strings.TrimSpace(s)
			next, eff, _ := strings.Cut(s, " ")
			if strings.HasPrefix(s, "by cause") {
				next, eff = ByCause, strings.TrimSpace(strings.TrimPrefix(s, "by cause"))
			}
			if eff == "-" {
				eff = ""
			}
			return want{next, eff}
		}
		plain, ours, hasOurs := strings.Cut(rest, "|")
		w := [2]want{parse(plain), parse(plain)}
		if hasOurs {
			w[1] = parse(ours)
		}
		out[[2]string{f[0], f[1]}] = w
	}
	return out
}

func TestStep_EveryStateAndEventPair(t *testing.T) {
	exp := parseExpected(t)
	seen := 0
	for _, s := range States {
		for _, ev := range Events {
			w, allowed := exp[[2]string{s, string(ev)}]
			for i, ours := range []bool{false, true} {
				r, ok := Step(s, ev, ours)
				if ok != allowed {
					t.Errorf("(%s, %s, ours %v): allowed %v, want %v", s, ev, ours, ok, allowed)
					continue
				}
				seen++
				if !ok {
					continue
				}
				next := r.Next
				if next == "" {
					next = "="
				}
				if next != w[i].next || r.Effects.String() != w[i].effects {
					t.Errorf("(%s, %s, ours %v) → %s (%s), want %s (%s)", s, ev, ours, next, r.Effects, w[i].next, w[i].effects)
				}
				if r.Ours != nil {
					t.Errorf("(%s, %s): Step returned a rule with an Ours variant left", s, ev)
				}
			}
		}
	}
	if seen != 2*len(States)*len(Events) {
		t.Fatalf("checked %d pairs, want %d", seen, 2*len(States)*len(Events))
	}
}

func TestEndStates_FollowTheContractsCauseRules(t *testing.T) {
	for _, from := range []State{Dialing, Ringing} {
		for cause, st := range map[int]State{17: Busy, 18: NoAnswer, 19: NoAnswer, 21: Rejected, 1: Failed, 34: Failed,
			38: Failed, 41: Failed, 42: Failed, 0: Failed, 16: Failed} {
			r, _ := Step(from, EvEnded, false)
			if got := NextState(from, r, cause); got != st {
				t.Errorf("%s ended with cause %d → %s, want %s", from, cause, got, st)
			}
			r, _ = Step(from, EvEnded, true)
			if got := NextState(from, r, cause); got != Cancelled {
				t.Errorf("%s hung up by us, ended with cause %d → %s, want cancelled", from, cause, got)
			}
		}
	}
	for _, cause := range []int{0, 16, 17, 19, 21, 34} {
		for _, ours := range []bool{false, true} {
			r, _ := Step(Connected, EvEnded, ours)
			if got := NextState(Connected, r, cause); got != Ended {
				t.Errorf("connected ended with cause %d (ours %v) → %s, want ended", cause, ours, got)
			}
			r, _ = Step(Confirming, EvEnded, ours)
			if got := NextState(Confirming, r, cause); got != Unconfirmed {
				t.Errorf("confirming ended with cause %d (ours %v) → %s, want unconfirmed", cause, ours, got)
			}
		}
	}
}

func TestCauseText_ConnectedEndWithoutCauseReadsAsANormalEnd(t *testing.T) {
	cases := []struct {
		next  State
		cause int
		text  string
		want  string
	}{
		{Ended, 0, "Unknown", NormalEndText},
		{Ended, 0, "", NormalEndText},
		{Ended, 16, "Normal Clearing", "Normal Clearing"},
		{Failed, 0, "Unknown", "Unknown"},
		{Busy, 17, "User busy", "User busy"},
	}
	for _, c := range cases {
		if got := CauseText(c.next, c.cause, c.text); got != c.want {
			t.Errorf("CauseText(%s, %d, %q) = %q, want %q", c.next, c.cause, c.text, got, c.want)
		}
	}
	if strings.Contains(strings.ToLower(NormalEndText), "unknown") || strings.Contains(strings.ToLower(NormalEndText), "error") {
		t.Fatalf("the normal end reads like an error: %q", NormalEndText)
	}
}

func TestDerivedSets(t *testing.T) {
	if got, want := Live(), []State{Dialing, Ringing, Confirming, Connected}; !slices.Equal(got, want) {
		t.Errorf("Live() = %v, want %v", got, want)
	}
	if got, want := Final(), []State{Ended, Busy, NoAnswer, Rejected, Failed, Cancelled, Unconfirmed}; !slices.Equal(got, want) {
		t.Errorf("Final() = %v, want %v", got, want)
	}
	if got, want := Accepting(EvRingTimeout), []State{Dialing, Ringing}; !slices.Equal(got, want) {
		t.Errorf("Accepting(ring_timeout) = %v, want %v", got, want)
	}
	if got, want := Accepting(EvConfirmTimeout), []State{Confirming}; !slices.Equal(got, want) {
		t.Errorf("Accepting(confirm_timeout) = %v, want %v", got, want)
	}
	var local []Event
	for _, ev := range Events {
		if Local(ev) {
			local = append(local, ev)
		}
	}
	if want := []Event{EvRinging, EvTalkingStarted, EvTalkingFinished, EvHangupRequested}; !slices.Equal(local, want) {
		t.Errorf("local events = %v, want %v", local, want)
	}
	// What Local promises, checked on every cell: a local event never
	// ends, connects or treats a leg convoice is ending apart.
	for _, from := range Live() {
		for _, ev := range local {
			for _, ours := range []bool{false, true} {
				r, ok := Step(from, ev, ours)
				if !ok {
					continue
				}
				next := NextState(from, r, causeUnknown)
				if !IsLive(next) || (next == Connected && from != Connected) || r.Effects&End != 0 {
					t.Errorf("local event %s takes %s to %s (%v)", ev, from, next, r.Effects)
				}
				if plain, _ := Step(from, ev, false); plain != r {
					t.Errorf("local event %s in %s differs for a leg convoice is ending", ev, from)
				}
			}
		}
	}
	for _, s := range States {
		if IsLive(s) == slices.Contains(Final(), s) {
			t.Errorf("%s is both or neither live and final", s)
		}
	}
}

var update = flag.Bool("update", false, "rewrite TABLE.md from the table")

// TABLE.md is the table as the README shows it; the README's copy, between
// the markers below, must match it too once it is pasted there.
func TestMarkdown_MatchesTableMDAndTheREADME(t *testing.T) {
	md := Markdown()
	if *update {
		if err := os.WriteFile("TABLE.md", []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("TABLE.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != md {
		t.Fatalf("leg/TABLE.md differs from the table; run go test ./leg -run Markdown -update\n%s", md)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- leg-table:begin -->\n", "<!-- leg-table:end -->"
	_, rest, ok := strings.Cut(string(readme), begin)
	if !ok {
		t.Fatalf("README has no leg table between %q and %q", strings.TrimSpace(begin), end)
	}
	block, _, _ := strings.Cut(rest, end)
	if strings.TrimSpace(block) != strings.TrimSpace(md) {
		t.Fatalf("README's leg table (between %q and %q) differs from leg.Markdown():\n%s", strings.TrimSpace(begin), end, md)
	}
	for _, s := range Live() {
		if !strings.Contains(md, "**"+s+"**") {
			t.Errorf("the rendering has no row for %s", s)
		}
	}
}
