package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
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

// Wrong bearer tokens from one address are logged at a rate (one line a
// minute, saying how many went unlogged), not one INFO line each.
func TestLogs_FailedAuthenticationsAreLoggedAtARate(t *testing.T) {
	logs := &apitest.LogBuffer{}
	env := apitest.Start(t, apitest.Options{NoPBX: true, Logs: logs})
	for i := 0; i < 15; i++ {
		if r := env.Do("GET", "/api/v1/me", "wrong-token", nil); r.Status != 401 && r.Status != 429 {
			t.Fatalf("a wrong token: %d", r.Status)
		}
	}
	if n := strings.Count(logs.String(), `msg="authentication failed"`); n != 1 {
		t.Fatalf("%d log lines for 15 failures from one address, want 1", n)
	}
}
