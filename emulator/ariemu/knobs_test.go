package ariemu

import (
	"net/http"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

func TestGivenOriginateDelayWhenOriginatingThenTheChannelExistsOnlyAfterIt(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 20 * time.Millisecond}})
	c := connectApp(t, s, "convoice")
	s.SetOriginateDelay(400 * time.Millisecond)
	start := time.Now()
	answered := make(chan restResp, 1)
	go func() { answered <- rest(t, s, "POST", originatePath("slow", "PJSIP/+12025550101@trunk", ""), nil) }()
	time.Sleep(100 * time.Millisecond)
	// Asterisk does not know the channel yet: DELETE is a 404, as for any
	// unknown id, and nothing is live.
	r := rest(t, s, "DELETE", "/ari/channels/slow", nil)
	mustStatus(t, r, 404)
	if len(s.Channels()) != 0 {
		t.Fatalf("a channel exists during the originate delay: %+v", s.Channels())
	}
	got := <-answered
	mustStatus(t, got, 200)
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Errorf("originate answered after %v, want at least the 400ms delay", el)
	}
	c.waitEvent(t, "StasisStart", "slow")

	s.SetOriginateDelay(0)
	start = time.Now()
	mustStatus(t, rest(t, s, "POST", originatePath("quick", "PJSIP/+12025550101@trunk", ""), nil), 200)
	if el := time.Since(start); el > 300*time.Millisecond {
		t.Errorf("without a delay the originate took %v", el)
	}
}

func TestGivenAnswerDelayWhenDialingThenOrdinaryPhonesRingThatLong(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 20 * time.Millisecond}})
	c := connectApp(t, s, "convoice")
	s.SetAnswerDelay(500 * time.Millisecond)
	start := time.Now()
	mustStatus(t, rest(t, s, "POST", originatePath("late", "PJSIP/+12025550101@trunk", ""), nil), 200)
	c.waitEvent(t, "StasisStart", "late")
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Errorf("answered after %v, want the 500ms answer delay", el)
	}
	s.SetAnswerDelay(0)
	start = time.Now()
	mustStatus(t, rest(t, s, "POST", originatePath("soon", "PJSIP/+12025550101@trunk", ""), nil), 200)
	c.waitEvent(t, "StasisStart", "soon")
	if el := time.Since(start); el > 400*time.Millisecond {
		t.Errorf("answered after %v with the delay off, want the configured 20ms ring", el)
	}
}

// A partition: nothing is answered, not even on a connection opened during
// it; the phones go on (a 0200 phone hangs up meanwhile), and the calls
// that stay up survive it, short or long.
func TestGivenPartitionWhenItEndsThenCallsWentOnAndStartupTimeIsTheSame(t *testing.T) {
	s := startServer(t, Config{Timing: emuphone.Timing{Ring: 20 * time.Millisecond, Hold: 300 * time.Millisecond}})
	c := connectApp(t, s, "convoice")
	info := func() string {
		return rest(t, s, "GET", "/ari/asterisk/info", nil).json(t).(map[string]any)["status"].(map[string]any)["startup_time"].(string)
	}
	startup := info()
	mustStatus(t, rest(t, s, "POST", originatePath("stays", "PJSIP/+12025550101@trunk", ""), nil), 200)
	mustStatus(t, rest(t, s, "POST", originatePath("byes", "PJSIP/+12025550200@trunk", ""), nil), 200)
	c.waitEvent(t, "StasisStart", "stays")
	c.waitEvent(t, "StasisStart", "byes")

	for _, long := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond} {
		s.SetPartitioned(true)
		done := make(chan error, 1)
		go func() {
			cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := cl.Get("http://" + s.Addr() + "/ari/asterisk/info")
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("a new connection was answered during the partition (err %v)", err)
		case <-time.After(long):
		}
		s.SetPartitioned(false)
		if err := <-done; err == nil {
			t.Error("the request held by the partition got an answer; want its connection cut")
		}
		chans := s.Channels()
		if len(chans) != 1 || chans[0].ID != "stays" || !chans[0].InStasis {
			t.Fatalf("after a %v partition: %+v, want only the call that stays, in Stasis", long, chans)
		}
	}
	// The 0200 phone's BYE happened during the first partition; its events
	// were held and come now, and the websocket is still the same.
	c.waitEvent(t, "ChannelDestroyed", "byes")
	c.drop()
	c2 := connectApp(t, s, "convoice")
	if got := info(); got != startup {
		t.Errorf("startup_time changed across a partition and a reconnect: %s, was %s", got, startup)
	}
	mustStatus(t, rest(t, s, "DELETE", "/ari/channels/stays", nil), 204)
	c2.waitEvent(t, "ChannelDestroyed", "stays")
}
