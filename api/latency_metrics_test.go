package api_test

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
)

// A whole call fills the latency histograms of /metrics: request →
// originate, originate → answer, event → live stream, commit time.
func TestMetrics_LatencyHistogramsFollowACall(t *testing.T) {
	env := apitest.Start(t, apitest.Options{})
	alice := env.AddUser("Alice", num("work", "+12025550101"))
	conv := jlConv(t, env, alice, "Metrics")
	sub := env.Subscribe(conv, alice.Token, "")
	defer sub.Close()
	leg := env.Must(201, "POST", "/api/v1/conversations/"+conv+"/audio", alice.Token, map[string]any{"published": "work"}).Map(t)["leg"].(map[string]any)
	legState(t, env, conv, alice.Token, leg["id"].(string), "connected")
	sub.Next(t, 10*time.Second, func(e apitest.Event) bool { return e.Type == "leg.updated" })
	count := func(body, series string) int {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + `(?:\{[^}]*\})? (\d+)$`).FindStringSubmatch(body)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	env.WaitFor("every latency histogram observed", 10*time.Second, func() bool {
		body := string(env.Must(200, "GET", "/metrics", "", nil).Body)
		for _, s := range []string{"convoice_dial_originate_seconds_count", "convoice_originate_answer_seconds_count",
			"convoice_event_stream_delay_seconds_count", "convoice_db_commit_seconds_count"} {
			if count(body, s) < 1 {
				return false
			}
		}
		return true
	})
}
