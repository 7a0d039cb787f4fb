package api_test

import (
	"testing"
	"time"
)

// Given a PBX that stops answering, then the replica stays in the load
// balancer: /readyz answers 200 ready=true with pbx_ready=false and the
// node's detail in its body; dial requests answer 503 pbx_unavailable at
// once; messages still post. When the PBX answers again, pbx_ready comes
// back by itself.
func TestReadiness_GivenPBXDown_ThenReplicaStillServesAndDialsFailFast(t *testing.T) {
	forEachPBX(t, func(t *testing.T, kind string) {
		env, _ := reliabEnv(t, kind, nil)
		ann, bo := env.AddUser("Ann"), env.AddUser("Bo")
		conv := newConversation(t, env, ann, bo)
		if _, pbxReady, _ := readyz(t, env); !pbxReady {
			t.Fatal("the PBX is not ready before the fault")
		}

		env.PBXUnresponsive(true)
		defer env.PBXUnresponsive(false)
		var detail string
		env.WaitFor("readyz to say the PBX is down", 10*time.Second, func() bool {
			st, pbxReady, d := readyz(t, env) // fails the test on anything but 200 ready=true
			detail = d
			return st == 200 && !pbxReady
		})
		if detail == "" {
			t.Error("readyz does not say what is wrong with the PBX node")
		}

		t0 := time.Now()
		r := env.Do("POST", "/api/v1/conversations/"+conv+"/audio", ann.Token, map[string]any{"number": "+12025551301"})
		if r.Status != 503 || r.ErrorCode() != "pbx_unavailable" {
			t.Fatalf("dial with the PBX down: %d %s", r.Status, r.Body)
		}
		if took := time.Since(t0); took > time.Second {
			t.Errorf("a dial with the PBX down took %v to be refused", took)
		}
		msg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/messages", bo.Token, map[string]any{"text": "the phones are down, typing instead"}).Map(t)
		if msg["text"] != "the phones are down, typing instead" {
			t.Fatalf("message with the PBX down: %v", msg)
		}

		env.PBXUnresponsive(false)
		env.WaitFor("pbx_ready again", 15*time.Second, func() bool { _, pbxReady, _ := readyz(t, env); return pbxReady })
	})
}
