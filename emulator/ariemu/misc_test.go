package ariemu

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
)

// TestOnOriginateAndRequestLog: OnOriginate fires once per accepted
// originate, before its answer is sent, never for a refused one; Requests
// records every REST request with what it answered; the log is bounded.
func TestOnOriginateAndRequestLog(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	var at time.Time
	s := startServer(t, Config{MaxRequests: 10, OnOriginate: func(id string, when time.Time) {
		mu.Lock()
		ids = append(ids, id)
		at = when
		mu.Unlock()
	}})
	mustStatus(t, rest(t, s, "POST", originatePath("one", "PJSIP/+12025550480@trunk", ""), nil), 200)
	answered := time.Now()
	mustStatus(t, rest(t, s, "POST", originatePath("two", "PJSIP/1006", ""), nil), 500)
	mustStatus(t, rest(t, s, "POST", originatePath("one", "PJSIP/+12025550480@trunk", ""), nil), 409)
	mu.Lock()
	if !slices.Equal(ids, []string{"one"}) || at.After(answered) {
		t.Errorf("OnOriginate calls %v at %v (answer read at %v)", ids, at, answered)
	}
	mu.Unlock()

	s.ResetRequests()
	mustStatus(t, rest(t, s, "DELETE", "/ari/channels/one?reason=busy", nil), 204)
	mustStatus(t, rest(t, s, "POST", "/ari/bridges/b", map[string]string{"type": "mixing"}), 200)
	reqs := s.Requests()
	if len(reqs) != 2 {
		t.Fatalf("requests %+v", reqs)
	}
	if r := reqs[0]; r.Method != "DELETE" || r.Path != "/ari/channels/one" || r.Query != "reason=busy" || r.Status != 204 || r.At.IsZero() {
		t.Errorf("request 0: %+v", r)
	}
	if r := reqs[1]; r.Method != "POST" || r.Body != `{"type":"mixing"}` || r.Status != 200 {
		t.Errorf("request 1: %+v", r)
	}
	for range 25 {
		rest(t, s, "GET", "/ari/asterisk/ping", nil)
	}
	if n := len(s.Requests()); n > 10 || n < 5 {
		t.Errorf("%d requests kept with MaxRequests 10", n)
	}
	if last := s.Requests()[len(s.Requests())-1]; last.Path != "/ari/asterisk/ping" {
		t.Errorf("newest request not kept: %+v", last)
	}
}

// BenchmarkOriginate measures originates per second over HTTP with an event
// consumer connected, every call answered and left up in Stasis (the
// benchmark load: run with -benchtime=10000x for 10,000 live channels).
func BenchmarkOriginate(b *testing.B) {
	s := New(Config{Timing: emuphone.Timing{Ring: 5 * time.Millisecond}, EventQueue: 1 << 20, MaxRequests: -1})
	if err := s.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w, code, err := dialRawWS(s.Addr(), "app=convoice")
	if err != nil || code != 101 {
		b.Fatalf("websocket: %d %v", code, err)
	}
	var events atomic.Int64
	go func() {
		for {
			if _, _, err := w.next(time.Minute); err != nil {
				return
			}
			events.Add(1)
		}
	}()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			url := fmt.Sprintf("http://%s/ari/channels/leg-%d?endpoint=PJSIP/%%2B1202555%04d@trunk&app=convoice&appArgs=bench", s.Addr(), i, 1000+i%9000)
			resp, err := client.Post(url, "", nil)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "originates/s")
	time.Sleep(50 * time.Millisecond)
	b.ReportMetric(float64(events.Load())/float64(b.N), "events/originate")
}
