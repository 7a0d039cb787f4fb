package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/storage"
)

// Phone numbers — members' and guests' — appear in the logs at INFO and
// above only masked; the full number is kept for DEBUG.
func TestLogs_NumbersAreMaskedAboveDebug(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, logs := reliabEnv(t, kind, nil)
		ann, bo := env.AddUser("Ann"), env.AddUser("Bo")
		conv := newConversation(t, env, ann, bo)
		leg := joinNumber(t, env, conv, ann, "+12025557123")
		waitLeg(t, env, leg, "connected", 10*time.Second, inState(storage.LegConnected))
		refused := joinNumber(t, env, conv, bo, "+12025550404") // unallocated: the refusal is logged too
		env.WaitFor("the refused leg ended", 10*time.Second, func() bool { return !storage.LegLive(storeLeg(t, env, refused).State) })
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "level=DEBUG") {
				continue
			}
			for _, digits := range []string{"2025557123", "2025550404"} {
				if strings.Contains(line, digits) {
					t.Errorf("a full number in a log line above DEBUG: %s", line)
				}
			}
		}
	})
}
