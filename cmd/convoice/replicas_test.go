package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
)

// sseEvent is one event of a conversation stream.
type sseEvent struct{ ID, Type, Leg string }

// sseStream follows a conversation's events from the start of its log.
type sseStream struct {
	events chan sseEvent
	cancel context.CancelFunc
}

func followEvents(t *testing.T, base, conv, token string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/conversations/"+conv+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		cancel()
		t.Fatalf("events on %s: %v", base, err)
	}
	s := &sseStream{events: make(chan sseEvent, 1000), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var cur sseEvent
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "id: "):
				cur.ID = l[4:]
			case strings.HasPrefix(l, "event: "):
				cur.Type = l[7:]
			case strings.HasPrefix(l, "data: ") && cur.Type == "leg.updated":
				// The leg's visible state: two equal ones in a row would
				// be an event handled twice.
				var ev struct {
					Data struct {
						State   string `json:"state"`
						Muted   bool   `json:"muted"`
						Talking bool   `json:"talking"`
					} `json:"data"`
				}
				json.Unmarshal([]byte(l[6:]), &ev)
				d := ev.Data
				cur.Leg = fmt.Sprintf("%s/%v/%v", d.State, d.Muted, d.Talking)
			case l == "" && cur.ID != "":
				s.events <- cur
				cur = sseEvent{}
			}
		}
	}()
	t.Cleanup(cancel)
	return s
}

// until reads events until one with id last arrived.
func (s *sseStream) until(t *testing.T, last string) []sseEvent {
	t.Helper()
	var got []sseEvent
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				t.Fatalf("stream closed after %v", got)
			}
			got = append(got, e)
			if e.ID == last {
				return got
			}
		case <-deadline:
			t.Fatalf("event %s never came; got %v", last, got)
		}
	}
}

// nodeOwners reads /readyz of a replica: node name → owner.
func nodeOwners(base string) (map[string]bool, map[string]bool) {
	owners, ready := map[string]bool{}, map[string]bool{}
	r, err := http.Get(base + "/readyz")
	if err != nil {
		return owners, ready
	}
	defer r.Body.Close()
	var body struct {
		PBX []struct {
			Name   string `json:"name"`
			Owner  bool   `json:"owner"`
			Status struct {
				Ready bool `json:"ready"`
			} `json:"status"`
		} `json:"pbx"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	for _, n := range body.PBX {
		owners[n.Name], ready[n.Name] = n.Owner, n.Status.Ready
	}
	return owners, ready
}

// metricsOf reads a replica's /metrics ("" when it does not answer).
func metricsOf(base string) string {
	r, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

// emuChannels lists the channel ids an emulator process holds (over ARI).
func emuChannels(t *testing.T, addr string) map[string]bool {
	t.Helper()
	r, err := http.Get("http://" + addr + "/ari/channels?api_key=convoice:pw")
	if err != nil {
		return nil
	}
	defer r.Body.Close()
	var chans []struct {
		ID string `json:"id"`
	}
	json.NewDecoder(r.Body).Decode(&chans)
	out := map[string]bool{}
	for _, c := range chans {
		out[c.ID] = true
	}
	return out
}

// PostgreSQL + 3 convoice processes + 2 Asterisk emulator processes, as an
// enterprise runs it. Conferences land on both nodes; an SSE client on
// replica 3 receives every event of a conference driven through replica 1,
// with the ids of the stored log; kill -9 of the replica holding node 1's
// lease → another replica holds it within 5 s, the call on node 1 stays
// connected and is still muted and hung up through the survivors; killing
// node 2's process ends its legs (after CONVOICE_NODE_LOST_AFTER) and the
// next conference goes to node 1.
func TestReplicas_ThreeProcessesTwoNodesLeaseTakeoverAndALostNode(t *testing.T) {
	dsn := apitest.Postgres(t)
	emuAddr := []string{freeAddr(t), freeAddr(t)}
	var emus []*proc
	for _, a := range emuAddr {
		p := start(t, []string{"CONVOICE_ARI_PASSWORD=pw"}, "emulate", "asterisk", "--listen", a, "--user", "convoice")
		waitHTTP(t, "http://"+a+"/ari/asterisk/ping?api_key=convoice:pw", p)
		emus = append(emus, p)
	}
	nodes := fmt.Sprintf("n1,asterisk,http://%s/ari,convoice,pw,1;n2,asterisk,http://%s/ari,convoice,pw,1", emuAddr[0], emuAddr[1])
	common := []string{"CONVOICE_DB=" + dsn, "CONVOICE_PBX_NODES=" + nodes, "CONVOICE_NODE_LOST_AFTER=2s"}

	cmd := exec.Command(binary(t), "user", "add", "--name", "Ann", "--email", "ann@example.com", "--number", "work=+12025550101")
	cmd.Env = append(os.Environ(), common...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}
	token := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(string(out))[1]

	var reps []*proc
	var base []string
	for i := 0; i < 3; i++ {
		addr := freeAddr(t)
		p := start(t, append([]string{"CONVOICE_LISTEN=" + addr}, common...), "serve")
		reps = append(reps, p)
		base = append(base, "http://"+addr)
	}
	alive := []bool{true, true, true}
	// holder returns the index of the live replica holding a node's lease,
	// when exactly one does.
	holder := func(node string) int {
		h := -1
		for i, b := range base {
			if !alive[i] {
				continue
			}
			if o, _ := nodeOwners(b); o[node] {
				if h >= 0 {
					t.Fatalf("two replicas hold %s's lease: %d and %d", node, h, i)
				}
				h = i
			}
		}
		return h
	}
	for i, b := range base {
		waitHTTP(t, b+"/readyz", reps[i])
		waitFor(t, "every node ready on replica "+fmt.Sprint(i+1), func() bool { _, r := nodeOwners(b); return r["n1"] && r["n2"] })
	}
	waitFor(t, "one lease holder per node", func() bool { return holder("n1") >= 0 && holder("n2") >= 0 })

	newConv := func(b string) string {
		st, c := call(t, "POST", b+"/api/v1/conversations", token, map[string]any{"kind": "im"})
		if st != 201 {
			t.Fatalf("conversation: %d %v", st, c)
		}
		return c["id"].(string)
	}
	audio := func(b, conv string) map[string]any {
		_, a := call(t, "GET", b+"/api/v1/conversations/"+conv+"/audio?last=true", token, nil)
		return a
	}
	legIn := func(a map[string]any) map[string]any {
		if legs, _ := a["legs"].([]any); len(legs) == 1 {
			return legs[0].(map[string]any)
		}
		return map[string]any{}
	}
	join := func(b, conv string) string {
		st, j := call(t, "POST", b+"/api/v1/conversations/"+conv+"/audio", token, map[string]any{"published": "work"})
		if st != 201 {
			t.Fatalf("join on %s: %d %v", b, st, j)
		}
		leg := j["leg"].(map[string]any)["id"].(string)
		waitFor(t, "leg connected", func() bool { return legIn(audio(b, conv))["state"] == "connected" })
		return leg
	}
	nodeOfLeg := func(leg string) int {
		for i, a := range emuAddr {
			if emuChannels(t, a)[leg] {
				return i
			}
		}
		return -1
	}

	// 1. A conference driven through replica 1, followed on replica 3.
	convA := newConv(base[0])
	onR3 := followEvents(t, base[2], convA, token)
	legA := join(base[0], convA)
	for _, verb := range []string{"mute", "unmute"} {
		if st, m := call(t, "POST", base[0]+"/api/v1/legs/"+legA+"/"+verb, token, nil); st != 200 {
			t.Fatalf("%s: %d %v", verb, st, m)
		}
	}
	if st, _ := call(t, "DELETE", base[0]+"/api/v1/conversations/"+convA+"/audio", token, nil); st != 204 {
		t.Fatalf("end audio: %d", st)
	}
	waitFor(t, "leg A ended", func() bool { return legIn(audio(base[0], convA))["state"] == "ended" })
	_, cv := call(t, "GET", base[0]+"/api/v1/conversations/"+convA, token, nil)
	last := cv["last_event_id"].(string)
	live := onR3.until(t, last)
	stored := followEvents(t, base[1], convA, token).until(t, last)
	if fmt.Sprint(live) != fmt.Sprint(stored) {
		t.Fatalf("replica 3 saw %v\nthe stored log is %v", live, stored)
	}
	for i, e := range live {
		if e.ID != fmt.Sprint(i+1) {
			t.Fatalf("replica 3's stream has a gap or a repeat at %d: %v", i, live)
		}
	}
	if len(live) < 6 {
		t.Fatalf("too few events for a whole call: %v", live)
	}

	// 2. Two conferences at once land on the two nodes.
	convB, convC := newConv(base[0]), newConv(base[1])
	legB := join(base[0], convB)
	legC := join(base[1], convC)
	nb, nc := nodeOfLeg(legB), nodeOfLeg(legC)
	if nb < 0 || nc < 0 || nb == nc {
		t.Fatalf("conferences on nodes %d and %d: want both nodes used", nb, nc)
	}
	leg1, conv1, leg2, conv2 := legB, convB, legC, convC
	if nb == 1 {
		leg1, conv1, leg2, conv2 = legC, convC, legB, convB
	}

	// 3. kill -9 of the replica holding node 1's lease.
	h := holder("n1")
	if h < 0 {
		t.Fatal("nobody holds n1's lease")
	}
	reps[h].cmd.Process.Kill()
	reps[h].cmd.Wait()
	alive[h] = false
	killed := time.Now()
	var survivors []string
	for i, b := range base {
		if alive[i] {
			survivors = append(survivors, b)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for holder("n1") < 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no replica took n1's lease within 5 s of kill -9")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("n1's lease taken over %s after kill -9 of replica %d", time.Since(killed).Round(time.Millisecond), h+1)
	waitFor(t, "n1 ready on the new holder", func() bool { _, r := nodeOwners(base[holder("n1")]); return r["n1"] })
	// The new holder says so in its metrics, and resynced the node.
	waitFor(t, "the new holder's metrics", func() bool {
		m := metricsOf(base[holder("n1")])
		return strings.Contains(m, `convoice_pbx_node_owner{node="n1"} 1`) &&
			strings.Contains(m, `convoice_pbx_resyncs_total{node="n1",result="ok"}`)
	})
	if nodeOfLeg(leg1) != 0 || legIn(audio(survivors[0], conv1))["state"] != "connected" {
		t.Fatalf("the call on n1 did not stay connected")
	}
	// Still controllable through any replica: mute on one, hang up on the other.
	if st, m := call(t, "POST", survivors[0]+"/api/v1/legs/"+leg1+"/mute", token, nil); st != 200 || m["muted"] != true {
		t.Fatalf("mute after takeover: %d %v", st, m)
	}
	waitFor(t, "muted seen on the other survivor", func() bool { return legIn(audio(survivors[1], conv1))["muted"] == true })
	if st, _ := call(t, "DELETE", survivors[1]+"/api/v1/legs/"+leg1, token, nil); st != 204 {
		t.Fatalf("hang up after takeover: %d", st)
	}
	waitFor(t, "hung-up leg ended (the new owner heard it)", func() bool {
		return legIn(audio(survivors[0], conv1))["state"] == "ended" && nodeOfLeg(leg1) < 0
	})

	// Across the takeover no PBX event was lost (the leg rang, connected,
	// was muted and ended) or handled twice (no leg.updated repeats the
	// state before it).
	_, cv = call(t, "GET", survivors[0]+"/api/v1/conversations/"+conv1, token, nil)
	var states []string
	for _, e := range followEvents(t, survivors[0], conv1, token).until(t, cv["last_event_id"].(string)) {
		if e.Type == "leg.updated" {
			if len(states) > 0 && states[len(states)-1] == e.Leg {
				t.Fatalf("leg.updated %s twice in a row: %v", e.Leg, states)
			}
			states = append(states, e.Leg)
		}
	}
	seen := strings.Join(states, " ")
	for _, want := range []string{"ringing/", "connected/false", "connected/true", "ended/"} {
		if !strings.Contains(seen, want) {
			t.Fatalf("leg on n1: states %v, missing %s", states, want)
		}
	}

	// 4. Node 2's process dies: its leg ends after NodeLostAfter with a
	// reason naming it, and the next conference goes to node 1.
	emus[1].cmd.Process.Kill()
	emus[1].cmd.Wait()
	waitFor(t, "n2's leg ended", func() bool { return legIn(audio(survivors[0], conv2))["state"] == "ended" })
	if l := legIn(audio(survivors[0], conv2)); l["id"] != leg2 || l["end_reason"] != "PBX node n2 unreachable" {
		t.Fatalf("leg on n2 after its node died: %v", l)
	}
	leg3 := join(survivors[1], newConv(survivors[1]))
	if nodeOfLeg(leg3) != 0 {
		t.Fatalf("the next conference did not go to n1")
	}
}

// CONVOICE_NODE_LOST_AFTER is read, defaults to 10 min (the long bound:
// a partition of the control link must not end calls), and refuses
// nonsense.
func TestConfig_NodeLostAfter(t *testing.T) {
	for _, c := range []struct {
		env  string
		want time.Duration
		ok   bool
	}{{"", 10 * time.Minute, true}, {"2s", 2 * time.Second, true}, {"100ms", 0, false}, {"soon", 0, false}} {
		t.Setenv("CONVOICE_NODE_LOST_AFTER", c.env)
		cfg, err := loadConfig(flag.NewFlagSet("serve", flag.ContinueOnError), nil)
		if (err == nil) != c.ok || (c.ok && cfg.NodeLostAfter != c.want) {
			t.Errorf("CONVOICE_NODE_LOST_AFTER=%q: %v, %v", c.env, cfg.NodeLostAfter, err)
		}
	}
}

// CONVOICE_LEASE_REGAIN is read, defaults to storage's window (15 s: a
// switchover or a quick failover), and refuses what is not a duration
// from 1 s to 10 min, naming the variable.
func TestConfig_LeaseRegain(t *testing.T) {
	for _, c := range []struct {
		env  string
		want time.Duration
		ok   bool
	}{{"", 15 * time.Second, true}, {"45s", 45 * time.Second, true}, {"500ms", 0, false},
		{"1h", 0, false}, {"soon", 0, false}} {
		t.Setenv("CONVOICE_LEASE_REGAIN", c.env)
		cfg, err := loadConfig(flag.NewFlagSet("serve", flag.ContinueOnError), nil)
		if (err == nil) != c.ok || (c.ok && cfg.LeaseRegain != c.want) {
			t.Errorf("CONVOICE_LEASE_REGAIN=%q: %v, %v", c.env, cfg.LeaseRegain, err)
		}
		if err != nil && !strings.Contains(err.Error(), "CONVOICE_LEASE_REGAIN") {
			t.Errorf("CONVOICE_LEASE_REGAIN=%q: the error does not name the variable: %v", c.env, err)
		}
	}
}
