package api_test

import (
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/storage"
)

// Given a conference with one connected leg, when a second leg goes to a
// number whose carrier sends 183 with early media (its ringback or "the
// person you are calling is not available"), then during the early media
// the leg is ringing and NOT in the conference on the PBX (nobody hears
// the carrier); after the answer it is connected and in it. A number
// whose early media ends in 480 ends no_answer and never was in it. On
// both PBXs (FreeSWITCH put such legs into the conference before the
// answer: recording p_early_media.json).
func TestEarlyMedia_GivenA183Leg_ThenRingingOutOfTheMixUntilTheAnswer(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, logs := reliabEnv(t, kind, func(o *apitest.Options) { o.Timing.EarlyMedia = 1500 * time.Millisecond })
		a, b, c := env.AddUser("Ann"), env.AddUser("Bob"), env.AddUser("Cid")
		conv := newConversation(t, env, a, b, c)
		legA := joinNumber(t, env, conv, a, "+12025551501")
		waitLeg(t, env, legA, "connected", 10*time.Second, inState(storage.LegConnected))

		legB := joinNumber(t, env, conv, b, "+12025550183")
		legC := joinNumber(t, env, conv, c, "+12025550187")
		waitLeg(t, env, legB, "ringing", 5*time.Second, inState(storage.LegRinging))
		// Throughout the early media: ringing, not in any room.
		for until := time.Now().Add(time.Second); time.Now().Before(until); time.Sleep(100 * time.Millisecond) {
			legs := env.PBXLegs()
			for _, id := range []string{legB, legC} {
				if p := legs[id]; p.Room != "" {
					t.Fatalf("%s: leg %s is in room %q during early media: the carrier's audio is in the mix", kind, id, p.Room)
				}
			}
			if l := storeLeg(t, env, legB); l.State != storage.LegRinging {
				t.Fatalf("%s: leg with early media is %s, want ringing", kind, l.State)
			}
		}

		waitLeg(t, env, legB, "connected after the answer", 10*time.Second, inState(storage.LegConnected))
		env.WaitFor("the answered leg in the conference", 5*time.Second, func() bool { return env.PBXLegs()[legB].Room != "" })
		l := waitLeg(t, env, legC, "ended", 10*time.Second, func(l *storage.Leg) bool { return !storage.LegLive(l.State) })
		if l.State != storage.LegNoAnswer {
			t.Fatalf("%s: 183 then 480 ended %s (cause %d %q), want no_answer", kind, l.State, l.Cause, l.CauseText)
		}
		if l.ConnectedAt != nil {
			t.Fatalf("%s: 183 then 480 was connected at %v", kind, l.ConnectedAt)
		}
		noLockErrors(t, logs)
	})
}
