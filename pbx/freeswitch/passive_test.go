package freeswitch

import (
	"testing"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

// startPassive runs a driver in passive mode (commands only) against addr
// and waits until it is ready.
func startPassive(t *testing.T, addr string) *Driver {
	t.Helper()
	return pbxtest.StartPassive(t, newTestDriver(t, addr, nil))
}

// A replica without the event connection dials, mutes and hangs up on the
// node; the replica with it hears every outcome, a failed originate
// included (its BACKGROUND_JOB names our node).
func TestGivenPassiveDriverWhenItRunsCommandsThenTheOwnerHearsTheOutcome(t *testing.T) {
	emu := startEmu(t, nil)
	owner := startDriver(t, emu.Addr(), true, nil)
	passive := startPassive(t, emu.Addr())
	pbxtest.PassiveCommands(t, pbxtest.Replicas{Owner: owner.rec, Passive: passive,
		Conference: "conf-p", Leg: newID(), Number: "+12025550101",
		MutedOnPBX: func(leg string) bool { ch, _ := emuChannel(emu, leg); return ch.Muted },
	})

	bad := (&testDriver{Driver: passive}).dial(t, "conf-p", "+15550000001")
	e := owner.rec.WaitEvent(t, bad, pbx.EventEnded)
	if e.Cause == 0 || e.ConferenceID != "conf-p" {
		t.Errorf("failed originate: %+v", e)
	}
}

// The passive driver's readiness follows the node: not ready when it goes
// away, ready again when it is back.
func TestGivenPassiveDriverWhenTheNodeGoesAwayThenNotReady(t *testing.T) {
	emu := startEmu(t, nil)
	passive := startPassive(t, emu.Addr())
	pbxtest.PassiveFollowsNode(t, passive, emu.SetUnresponsive, newID(), "conf-x", "+12025550101")
}
