package asterisk

import (
	"testing"
	"time"

	"github.com/convoice/convoice/pbx/pbxtest"
)

// startPassive runs a driver in passive mode (no websocket) against url and
// waits until its ping probe says ready.
func startPassive(t *testing.T, url string) *Driver {
	t.Helper()
	return pbxtest.StartPassive(t, newEmuDriver(t, url, func(c *Config) {
		c.RequestTimeout, c.PingInterval = time.Second, 100*time.Millisecond
		c.Logger = pbxtest.Logger(t).With("side", "passive")
	}))
}

// A replica without the event websocket places, mutes and hangs up calls;
// the replica holding the websocket hears every outcome and bridges the
// answered call. Only one websocket of the app is ever connected.
func TestPassive_givenCommandsFromTheReplicaWithoutTheLink_thenTheOwnerHearsThem(t *testing.T) {
	emu := startEmu(t, nil)
	_, rec := runDriver(t, emu.URL(), true, nil)
	p := startPassive(t, emu.URL())
	pbxtest.PassiveCommands(t, pbxtest.Replicas{Owner: rec, Passive: p,
		Conference: "conf-p", Leg: "leg-p1", Number: numAnswer,
		Connected: func(t testing.TB, leg string) {
			if ch, ok := emuChannel(emu, leg); !ok || ch.BridgeID != "conf-p" {
				t.Fatalf("channel %+v (found %v): want in bridge conf-p", ch, ok)
			}
		},
		MutedOnPBX: func(leg string) bool { ch, _ := emuChannel(emu, leg); return ch.MutedIn },
	})
	if err := p.EndConference(pbxtest.Ctx(t), "conf-p"); err != nil {
		t.Fatal(err)
	}
	pbxtest.Eventually(t, "bridge gone", func() bool { return len(emu.Bridges()) == 0 })
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.legs) > 1 || len(p.confs) > 1 {
		t.Errorf("a passive driver keeps no tables: %d legs, %d conferences", len(p.legs), len(p.confs))
	}
}

// Readiness of a passive driver follows the ping probe.
func TestPassive_givenTheNodeStopsAnswering_thenNotReadyAndDialRefused(t *testing.T) {
	emu := startEmu(t, nil)
	p := startPassive(t, emu.URL())
	pbxtest.PassiveFollowsNode(t, p, emu.SetUnresponsive, "leg-x", "conf-x", numAnswer)
}
