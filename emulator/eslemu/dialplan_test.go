package eslemu

import (
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emuserver"
)

func TestGivenInlineArgsWhenExpandedThenVariablesAndCondAsFreeSWITCH(t *testing.T) {
	ch := &channel{vars: newVarList()}
	ch.vars.set("confirm_digit", "1")
	const arg = "${cond(x${confirm_digit} == x1 ? conf-dt XML default : hangup inline)}"
	if got := ch.expand(arg); got != "conf-dt XML default" {
		t.Errorf("digit 1: %q", got)
	}
	ch.vars.del("confirm_digit")
	if got := ch.expand(arg); got != "hangup inline" {
		t.Errorf("no digit: %q", got)
	}
	if got := ch.expand("${cond(a != b ? yes : no)} ${nosuch}x"); got != "yes x" {
		t.Errorf("!= and an unset variable: %q", got)
	}
	apps := parseInline("^^;play_and_get_digits:1 1 2 5000 # tone_stream://%(400,200,523) silence_stream://250 d \\d;transfer:x")
	if len(apps) != 2 || apps[0].name != "play_and_get_digits" || apps[1] != (dpApp{"transfer", "x"}) {
		t.Errorf("^^; split: %+v", apps)
	}
	if apps := parseInline("answer,park"); len(apps) != 2 || apps[1].name != "park" {
		t.Errorf("comma split: %+v", apps)
	}
}

// confirmCmd is the confirm-to-join originate a driver sends, with its own
// room and a short digit timeout.
func confirmCmd(u, number, room string) string {
	return "bgapi originate {origination_uuid=" + u + ",originate_timeout=20}sofia/gateway/pbx/" + number +
		" '^^;play_and_get_digits:1 1 2 300 # tone_stream://%(100,50,523) silence_stream://50 confirm_digit \\d;" +
		"transfer:${cond(x${confirm_digit} == x1 ? conf-" + room + " XML default : hangup inline)}' inline"
}

func TestGivenConfirmToJoinWhenThePhonePressesOrNotThenJoinsOrHangsUp(t *testing.T) {
	s := startTestEmu(t, func(c *Config) {
		c.Timing = emuphone.Timing{Ring: 50 * time.Millisecond, DigitAfter: 150 * time.Millisecond, VoicemailHold: time.Minute}
	})
	c := login(t, s, "json")
	presses, silent := emuserver.UUID(), emuserver.UUID()
	c.cmd(confirmCmd(presses, "+12025550111", "my-room"))
	c.cmd(confirmCmd(silent, "+12025550190", "my-room"))

	dtmf := waitEvent(t, c, "DTMF", func(e evt) bool { return e.name() == "DTMF" && e.get("Unique-ID") == presses })
	if dtmf.get("DTMF-Digit") != "1" || dtmf.get("DTMF-Duration") != "1280" || dtmf.get("DTMF-Source") != "RTP" {
		t.Errorf("DTMF event %v", dtmf.vals)
	}
	pagd := waitEvent(t, c, "play_and_get_digits complete", func(e evt) bool {
		return e.name() == "CHANNEL_EXECUTE_COMPLETE" && e.get("Unique-ID") == presses && e.get("Application") == "play_and_get_digits"
	})
	if pagd.get("variable_confirm_digit") != "1" || pagd.get("variable_read_result") != "success" {
		t.Errorf("success: confirm_digit %q read_result %q", pagd.get("variable_confirm_digit"), pagd.get("variable_read_result"))
	}
	add := waitEvent(t, c, "add-member", func(e evt) bool { return e.get("Action") == "add-member" })
	if add.get("Unique-ID") != presses || add.get("Conference-Name") != "my-room" {
		t.Errorf("add-member %s in %s, want the leg that pressed 1 in my-room", add.get("Unique-ID"), add.get("Conference-Name"))
	}

	// The voicemail box never presses: two tries, failure, hangup inline.
	fail := waitEvent(t, c, "failure", func(e evt) bool {
		return e.name() == "CHANNEL_EXECUTE_COMPLETE" && e.get("Unique-ID") == silent && e.get("Application") == "play_and_get_digits"
	})
	if fail.get("variable_read_result") != "failure" || fail.vals["variable_confirm_digit"] != "" {
		t.Errorf("failure: read_result %q, confirm_digit %q (want none)", fail.get("variable_read_result"), fail.vals["variable_confirm_digit"])
	}
	if e := waitEvent(t, c, "hangup", hangupOf(silent)); e.get("Hangup-Cause") != "NORMAL_CLEARING" {
		t.Errorf("voicemail leg ended %q", e.get("Hangup-Cause"))
	}
	starts := 0
	for _, e := range c.events() {
		if e.name() == "PLAYBACK_START" && e.get("Unique-ID") == silent {
			starts++
		}
		if e.get("Action") == "add-member" && e.get("Unique-ID") == silent {
			t.Error("the leg without a key joined the room")
		}
	}
	if starts != 4 { // prompt, invalid file, prompt, invalid file
		t.Errorf("%d playbacks for the silent leg, want 4", starts)
	}

	// uuid_transfer moves a leg from its room to another one.
	if r := c.cmd("api uuid_transfer " + presses + " conf-other XML default"); r.body != "+OK\n" {
		t.Fatalf("uuid_transfer: %q", r.body)
	}
	waitEvent(t, c, "add-member other", func(e evt) bool {
		return e.get("Action") == "add-member" && e.get("Conference-Name") == "other"
	})
	if r := c.cmd("api uuid_transfer " + emuserver.UUID() + " conf-other"); r.body != "-ERR No such channel!\n" {
		t.Errorf("uuid_transfer of an unknown channel: %q", r.body)
	}
	if ch := s.Channels(); len(ch) != 1 || ch[0].Conference != "other" {
		t.Errorf("channels %+v, want the leg in room other", ch)
	}
}
