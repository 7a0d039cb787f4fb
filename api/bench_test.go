package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convoice/convoice/api/apitest"
	"github.com/convoice/convoice/controller"
	"github.com/convoice/convoice/emulator/ariemu"
	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/internal/gctune"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/asterisk"
	"github.com/convoice/convoice/storage/pgtest"
)

// The benchmarks of the whole path. Run them with
//
//	go test -run '^$' -bench . -benchtime 1x ./api/
//
// BenchmarkDialOut joins U users into C conversations (U×C legs) through
// HTTP → controller → SQLite → ARI → emulator events → SQLite → SSE, with
// 100 requests in flight (throughput, until every leg's "connected" has
// arrived on the SSE streams); then the same joins arriving at a steady 250
// per second, timing request → originate at the emulator (latency); and in
// the same run places the same legs with the Asterisk driver alone against
// a fresh emulator (originate + StasisStart + addChannel: the same ARI
// operations, without convoice around them). It reports the latency
// phase's p50 and p99 and how many of its joins took over 5 ms.
// Every benchmark here runs convoice with the collector setting its server
// uses (gctune.Apply: GOGC=200 unless GOGC is set), so GOGC=100 go test …
// compares against Go's default.
// With CONVOICE_BENCH_DIALOUT_PROFILE=file the CPU profile of the
// throughput window alone (joins until every leg is connected) is written
// to file; with -count > 1 the last run's.
// BenchmarkHeapPerLeg holds 10,000 connected legs and reports convoice's
// heap per leg, with the emulator in another process so that its memory is
// not counted.

const benchConcurrency = 100

// TestMain lets this test binary run as the ARI emulator process of the
// heap benchmark (re-executed with CONVOICE_BENCH_EMULATOR=addr).
func TestMain(m *testing.M) {
	if addr := os.Getenv("CONVOICE_BENCH_EMULATOR"); addr != "" {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { io.Copy(io.Discard, os.Stdin); cancel() }() // parent gone → stop
		// Each accepted originate is reported on stdout as
		// "originate <channel id> <unix ns>" (emulatorProcess reads it).
		var outMu sync.Mutex
		out := bufio.NewWriter(os.Stdout)
		onOriginate := func(id string, at time.Time) {
			outMu.Lock()
			fmt.Fprintf(out, "originate %s %d\n", id, at.UnixNano())
			out.Flush()
			outMu.Unlock()
		}
		if err := ariemu.Serve(ctx, addr, benchEmuConfig(onOriginate)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type benchWorld struct {
	env   *apitest.Env
	users []apitest.User
	convs []string
	// urls, when set, are the replicas the joins go to, in turn (behind
	// a round-robin load balancer); else env.URL.
	urls []string
}

// newBenchWorld makes u users who are all in c conversations.
func newBenchWorld(b *testing.B, env *apitest.Env, u, c int) *benchWorld {
	w := &benchWorld{env: env}
	ctx := context.Background()
	admin := controller.Actor{Admin: true, Name: "bench"}
	for i := 0; i < u; i++ {
		uv, err := env.Ctl.CreateUser(ctx, admin, controller.NewUser{DisplayName: fmt.Sprint("U", i),
			Email:   fmt.Sprintf("u%d@bench.example.com", i),
			Numbers: []controller.NumberInput{{Label: "work", Number: fmt.Sprintf("+1202555%04d", 1000+i)}}})
		if err != nil {
			b.Fatal(err)
		}
		tok, err := env.Ctl.IssueToken(ctx, admin, uv.ID, "bench")
		if err != nil {
			b.Fatal(err)
		}
		w.users = append(w.users, apitest.User{ID: uv.ID, Token: tok.Token})
	}
	var ids []string
	for _, us := range w.users[1:] {
		ids = append(ids, us.ID)
	}
	for i := 0; i < c; i++ {
		cv, err := env.Ctl.CreateConversation(ctx, controller.Actor{UserID: w.users[0].ID}, controller.NewConversation{
			Kind: "im", Subject: fmt.Sprint("bench ", i), Participants: ids})
		if err != nil {
			b.Fatal(err)
		}
		w.convs = append(w.convs, cv.ID)
	}
	return w
}

type joinResult struct {
	leg, conv string
	started   time.Time
}

// joinAll posts every (user, conversation) join with benchConcurrency in
// flight and returns the leg ids with their request start times.
func (w *benchWorld) joinAll(b *testing.B) []joinResult {
	return w.join(b, 0)
}

// join posts every (user, conversation) join, at most benchConcurrency in
// flight; with rate > 0 requests start at that many per second (an open
// loop, as real clicks arrive) instead of as fast as answers come back.
func (w *benchWorld) join(b *testing.B, rate float64) []joinResult {
	type job struct {
		u    apitest.User
		conv string
	}
	jobs := make(chan job)
	var mu sync.Mutex
	var out []joinResult
	var failed atomic.Int64
	var firstFailure atomic.Pointer[string]
	// fail counts a failed join and keeps the first one's reason: a run
	// that fails says why.
	fail := func(why string) {
		failed.Add(1)
		firstFailure.CompareAndSwap(nil, &why)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchConcurrency, MaxConnsPerHost: benchConcurrency}}
	var wg sync.WaitGroup
	for i := 0; i < benchConcurrency; i++ {
		wg.Add(1)
		base := w.env.URL
		if len(w.urls) > 0 {
			base = w.urls[i%len(w.urls)]
		}
		go func() {
			defer wg.Done()
			for j := range jobs {
				start := time.Now()
				req, _ := http.NewRequest("POST", base+"/api/v1/conversations/"+j.conv+"/audio", strings.NewReader(`{"published":"work"}`))
				req.Header.Set("Authorization", "Bearer "+j.u.Token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					fail(err.Error())
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				var jr struct {
					Leg struct{ ID string } `json:"leg"`
				}
				if err == nil {
					err = json.Unmarshal(body, &jr)
				}
				if resp.StatusCode != 201 || err != nil {
					fail(fmt.Sprintf("%s: %v: %s", resp.Status, err, body))
					continue
				}
				mu.Lock()
				out = append(out, joinResult{leg: jr.Leg.ID, conv: j.conv, started: start})
				mu.Unlock()
			}
		}()
	}
	// Interleave conversations so that conferences grow side by side.
	var tick *time.Ticker
	if rate > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
	}
	for _, u := range w.users {
		for _, c := range w.convs {
			if tick != nil {
				<-tick.C
			}
			jobs <- job{u, c}
		}
	}
	close(jobs)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d join requests failed; the first: %s", n, *firstFailure.Load())
	}
	return out
}

// sseCounter follows a conversation's stream and counts connected legs.
func sseCounter(b *testing.B, url, token string, connected *atomic.Int64) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("subscribe: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		isLeg := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "event: leg.updated":
				isLeg = true
			case strings.HasPrefix(line, "data: ") && isLeg:
				if strings.Contains(line, `"state":"connected"`) {
					connected.Add(1)
				}
				isLeg = false
			case strings.HasPrefix(line, "event: "):
				isLeg = false
			}
		}
	}()
	return func() { cancel(); <-done }
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(float64(len(ds)-1)*p)]
}

func BenchmarkDialOut(b *testing.B) {
	gctune.Apply() // convoice runs in this process: as its server does
	for _, where := range []string{"process", "in-process"} {
		b.Run("emulator="+where, func(b *testing.B) { benchDialOut(b, where == "process") })
	}
}

// benchDialOut is BenchmarkDialOut with the emulator in a process of its
// own (as a real Asterisk is) or inside convoice's process.
func benchDialOut(b *testing.B, ownProcess bool) {
	const users, convs = 50, 20 // 1,000 legs, 20 conferences of 50
	for i := 0; i < b.N; i++ {
		// Throughput: 100 requests in flight, as fast as answers come.
		env, _, w, stop := benchEnv(b, users, convs, ownProcess)
		var connected atomic.Int64
		var stops []func()
		for _, c := range w.convs {
			stops = append(stops, sseCounter(b, env.URL+"/api/v1/conversations/"+c+"/events", w.users[0].Token, &connected))
		}
		runtime.GC()
		stopGo := windowProfile(b, "CONVOICE_BENCH_DIALOUT_PROFILE")
		stopTrace := windowTrace(b, "CONVOICE_BENCH_DIALOUT_TRACE")
		stopProfile := func() { stopTrace(); stopGo() }
		start := time.Now()
		w.joinAll(b)
		requestsDone := time.Since(start)
		total := int64(users * convs)
		waitConnected(b, &connected, total)
		whole := time.Since(start)
		stopProfile()
		for _, s := range stops {
			s()
		}
		// Its emulator too: it holds 1,000 calls until the benchmark's
		// cleanup otherwise. (Measured idle once convoice had gone, so
		// no figure moved; each phase now has only its own PBX.)
		stop()

		// Latency: the same joins arriving at a steady 250 per second
		// (at most 100 in flight), timed from the request to the
		// originate reaching the PBX.
		env, originated, w, stop := benchEnv(b, users, convs, ownProcess)
		results := w.join(b, 250)
		// The first join of a conversation also creates the PBX bridge and
		// invites everyone else in one transaction; report it apart.
		sort.Slice(results, func(i, j int) bool { return results[i].started.Before(results[j].started) })
		var lat, joining []time.Duration
		firstSeen := map[string]bool{}
		for _, r := range results {
			if at, ok := originated.Load(r.leg); ok {
				d := at.(time.Time).Sub(r.started)
				lat = append(lat, d)
				if firstSeen[r.conv] {
					joining = append(joining, d)
				}
			}
			firstSeen[r.conv] = true
		}
		if len(lat) != len(results) {
			b.Fatalf("%d of %d originates were seen by the emulator", len(lat), len(results))
		}
		// BENCH_DEBUG=1 prints each join over the 5 ms target: when it
		// started in the phase and whether it was its conversation's
		// first (which also creates the PBX bridge).
		if os.Getenv("BENCH_DEBUG") != "" {
			t0 := results[0].started
			seen := map[string]bool{}
			for _, r := range results {
				first := !seen[r.conv]
				seen[r.conv] = true
				if at, ok := originated.Load(r.leg); ok {
					if d := at.(time.Time).Sub(r.started); d > 5*time.Millisecond {
						fmt.Printf("slow: start +%v took %v first=%v\n", r.started.Sub(t0).Round(time.Millisecond), d.Round(100*time.Microsecond), first)
					}
				}
			}
		}
		stop()

		direct := directARI(b, int(total), ownProcess)
		wholeRate := float64(total) / whole.Seconds()
		b.ReportMetric(wholeRate, "dialouts/s")
		b.ReportMetric(float64(total)/requestsDone.Seconds(), "requests/s")
		b.ReportMetric(direct, "direct-ari-legs/s")
		b.ReportMetric(direct/wholeRate, "direct/whole")
		b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-req→originate-ms")
		b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-req→originate-ms")
		// How many joins missed 5 ms, not only whether the 99th did: a
		// collector cycle shows as a cluster of them.
		over := 0
		for _, r := range results {
			if at, ok := originated.Load(r.leg); ok && at.(time.Time).Sub(r.started) > 5*time.Millisecond {
				over++
			}
		}
		b.ReportMetric(float64(over), "joins-over-5ms")
		b.ReportMetric(float64(percentile(joining, 0.99).Microseconds())/1000, "p99-joining-req→originate-ms")
	}
}

// BenchmarkDialOutReplicas: the throughput of BenchmarkDialOut (joins with
// 100 in flight until every leg's "connected" is on the SSE streams) on
// SQLite, then on PostgreSQL with 1 and with 3 convoice replicas behind a
// round-robin balancer and one PBX node (one replica holds the node's
// event connection, the others place their calls without it), and with 3
// replicas that share one replica's 20 pooled connections (7 each), the
// four back to back in each iteration, so that each ratio compares runs
// seconds apart on a machine whose load moves. All replicas share this
// machine's cores, so the figure shows what replication costs, not what
// more machines would give.
//
//	CONVOICE_TEST_POSTGRES=<dsn> go test -run '^$' -bench DialOutReplicas -benchtime 1x -count 4 ./api/
func BenchmarkDialOutReplicas(b *testing.B) {
	gctune.Apply() // convoice runs in this process: as its server does
	cluster := apitest.Postgres(b)
	for i := 0; i < b.N; i++ {
		// Every variant with the dial policy on (benchPolicy), so each
		// dial takes its decision's locks.
		sqlite, sqliteCPU := replicasRun(b, filepath.Join(b.TempDir(), "convoice.db"), 1)
		one, oneCPU := replicasRun(b, apitest.FreshPostgres(b, cluster), 1)
		three, threeCPU := replicasRun(b, apitest.FreshPostgres(b, cluster), 3)
		// The same three replicas with the one replica's connection
		// budget split between them (pool_max_conns=7: 21 pooled
		// connections, not 60), as a deployment sized to its database
		// would run.
		split, splitCPU := replicasRun(b, pgtest.WithParam(apitest.FreshPostgres(b, cluster), "pool_max_conns=7"), 3)
		b.ReportMetric(sqliteCPU, "sqlite-cpu-ms/dialout")
		b.ReportMetric(oneCPU, "pg-1-cpu-ms/dialout")
		b.ReportMetric(threeCPU, "pg-3-cpu-ms/dialout")
		b.ReportMetric(splitCPU, "pg-3x7-cpu-ms/dialout")
		b.ReportMetric(split, "pg-3-replicas-7-conns-dialouts/s")
		b.ReportMetric(split/one, "pg-3x7÷pg-1")
		b.ReportMetric(sqlite, "sqlite-dialouts/s")
		b.ReportMetric(one, "pg-1-replica-dialouts/s")
		b.ReportMetric(three, "pg-3-replicas-dialouts/s")
		b.ReportMetric(one/sqlite, "pg-1÷sqlite")
		// Steadier than the rates on a shared machine (2.2–2.5 in 13 of
		// 15 runs whose rate ratio spread over 0.36–0.51): what a change
		// to PostgreSQL's path saves shows here first.
		if sqliteCPU > 0 {
			b.ReportMetric(oneCPU/sqliteCPU, "pg-1-cpu÷sqlite-cpu")
		}
		b.ReportMetric(three/one, "pg-3÷pg-1")
	}
}

// replicasRun joins 900 legs (30 users × 30 conversations) through n
// replicas on the database db and returns dial-outs per second and the
// machine's busy CPU per dial-out (machineBusy), which a loaded host moves
// less than the rate. Before the
// timed joins, 600 others (the same users in 20 other conversations) warm
// every replica's pool up: a new PostgreSQL connection plans each
// statement afresh for its first executions (custom plans, 0.1–3.7 ms each
// for the dial path's statements, pg_stat_statements) until it settles on a
// generic plan, which dominated runs of a few hundred legs on 20–60 fresh
// connections; a server that has run for a minute has none of that cost.
// Each conversation's event stream is held by a different user because a
// person may hold only a bounded number of streams.
func replicasRun(b *testing.B, db string, n int) (perSecond, cpuMs float64) {
	const users, convs, warm = 30, 30, 20
	emu := startBenchEmu(b, nil)
	defer emu.Close()
	var reps []*apitest.Env
	for r := 0; r < n; r++ {
		reps = append(reps, apitest.Start(b, apitest.Options{DB: db, Emu: emu, Policy: benchPolicy(),
			Confirm: controller.ConfirmConfig{Mode: controller.ConfirmOff}}))
	}
	w := newBenchWorld(b, reps[0], users, warm+convs)
	for _, r := range reps {
		w.urls = append(w.urls, r.URL)
	}
	all := w.convs
	var cpu time.Duration
	joinCounted := func(convs []string) time.Duration {
		var connected atomic.Int64
		var stops []func()
		for i, c := range convs {
			stops = append(stops, sseCounter(b, reps[0].URL+"/api/v1/conversations/"+c+"/events", w.users[i%users].Token, &connected))
		}
		defer func() {
			for _, s := range stops {
				s()
			}
		}()
		w.convs = convs
		runtime.GC()
		start, busy := time.Now(), machineBusy()
		w.joinAll(b)
		waitConnected(b, &connected, int64(users*len(convs)))
		cpu = machineBusy() - busy
		return time.Since(start)
	}
	joinCounted(all[:warm])
	stopProfile := func() {}
	if strings.HasPrefix(db, "postgres") && n == 1 {
		stopGo := windowProfile(b, "CONVOICE_BENCH_REPLICAS_PROFILE")
		stopPerf := windowPerf(b, "CONVOICE_BENCH_REPLICAS_PERF")
		stopProfile = func() { stopGo(); stopPerf() }
	}
	whole := joinCounted(all[warm:])
	stopProfile()
	for _, r := range reps {
		r.Stop()
	}
	legs := float64(users * convs)
	return legs / whole.Seconds(), float64(cpu.Microseconds()) / 1000 / legs
}

// machineBusy is the CPU time this machine's cores have spent busy since
// boot (/proc/stat: everything but idle, I/O wait and steal), for a
// benchmark's CPU per dial-out: all processes of the path (convoice, the
// database, the emulator) count, and the time a loaded host takes away
// does not. 0 where /proc/stat is not there.
func machineBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	// user, nice, system, irq, softirq; not idle (4), iowait (5) or steal
	// (8), and guest time is counted in user already.
	var busy int64
	for _, col := range []int{1, 2, 3, 6, 7} {
		n, _ := strconv.ParseInt(f[col], 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// benchPolicy is the production dial policy with its limits raised past
// what a benchmark's users do (each joins every conversation at once), so
// every dial is decided and counted, none refused.
func benchPolicy() *controller.PolicyConfig {
	return &controller.PolicyConfig{MaxLiveLegsPerUser: 100, MaxLiveLegsPerConversation: 1000, MaxLiveLegs: 100000,
		DialsPerUser: 1000, DialsPerConversation: 1000, DialsTotal: 1000000}
}

// benchEmuConfig is the emulator of every benchmark: phones that answer
// after 20 ms; onOriginate, when set, is told of each accepted originate.
func benchEmuConfig(onOriginate func(id string, at time.Time)) ariemu.Config {
	return ariemu.Config{User: "convoice", Password: "emu-secret", Timing: emuphone.Timing{Ring: 20 * time.Millisecond},
		OnOriginate: onOriginate}
}

// startBenchEmu starts an emulator in this process on a free port.
func startBenchEmu(b *testing.B, onOriginate func(id string, at time.Time)) *ariemu.Server {
	emu := ariemu.New(benchEmuConfig(onOriginate))
	if err := emu.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	return emu
}

// emulatorProcess runs the ARI emulator in a process of its own (this test
// binary, see TestMain), as a real Asterisk is: its goroutines, heap and
// garbage collection are not convoice's, though it shares the machine's
// cores. It returns its ARI URL, the time each originate reached it, and
// a stop that ends the process (also run at the benchmark's cleanup).
func emulatorProcess(b *testing.B) (ariURL string, originated *sync.Map, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CONVOICE_BENCH_EMULATOR="+addr)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	originated = &sync.Map{}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var id string
			var ns int64
			if n, _ := fmt.Sscanf(sc.Text(), "originate %s %d", &id, &ns); n == 2 {
				originated.Store(id, time.Unix(0, ns))
			}
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			stdin.Close() // the emulator stops when its stdin closes
			cmd.Wait()
			<-read
		})
	}
	b.Cleanup(stop)
	for j := 0; ; j++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if j > 500 {
			b.Fatal("emulator process did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "http://" + addr + "/ari", originated, stop
}

// benchEnv starts convoice on a fresh emulator whose originates are timed,
// in a process of its own or in convoice's. Confirm-to-join is off, said
// so explicitly: the benchmark measures dial-outs that join on answer (the
// production default, mobile, would not ask these US numbers either).
func benchEnv(b *testing.B, users, convs int, ownProcess bool) (*apitest.Env, *sync.Map, *benchWorld, func()) {
	confirmOff := controller.ConfirmConfig{Mode: controller.ConfirmOff}
	if ownProcess {
		url, originated, stopEmu := emulatorProcess(b)
		env := apitest.Start(b, apitest.Options{NoPBX: true, ExternalARI: url, Confirm: confirmOff})
		return env, originated, newBenchWorld(b, env, users, convs), func() { env.Stop(); stopEmu() }
	}
	originated := &sync.Map{}
	emu := startBenchEmu(b, func(id string, at time.Time) { originated.Store(id, at) })
	var once sync.Once
	stopEmu := func() { once.Do(func() { emu.Close() }) }
	b.Cleanup(stopEmu)
	env := apitest.Start(b, apitest.Options{Emu: emu, Confirm: confirmOff})
	return env, originated, newBenchWorld(b, env, users, convs), func() { env.Stop(); stopEmu() }
}

func waitConnected(b *testing.B, connected *atomic.Int64, total int64) {
	deadline := time.Now().Add(2 * time.Minute)
	for connected.Load() < total {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d legs reached connected on the streams", connected.Load(), total)
		}
		time.Sleep(time.Millisecond)
	}
}

// directARI places n legs with the Asterisk driver alone (no HTTP, no
// controller, no database) against a fresh emulator (in its own process or
// in this one) and returns legs connected per second.
func directARI(b *testing.B, n int, ownProcess bool) float64 {
	var url string
	if ownProcess {
		url, _, _ = emulatorProcess(b)
	} else {
		emu := startBenchEmu(b, nil)
		defer emu.Close()
		url = emu.URL()
	}
	routes, _ := pbx.ParseRoutes(pbx.DefaultRoutes)
	d, err := asterisk.New(asterisk.Config{URL: url, User: "convoice", Password: "emu-secret", Routes: routes, TalkDetect: true,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var connected atomic.Int64
	go d.Run(ctx, pbx.HandlerFunc(func(e pbx.Event) {
		if e.Type == pbx.EventConnected {
			connected.Add(1)
		}
	}))
	for !d.Status().Ready {
		time.Sleep(5 * time.Millisecond)
	}
	confs := 20
	for i := 0; i < confs; i++ {
		if err := d.CreateConference(ctx, fmt.Sprintf("00000000-0000-4000-8000-%012d", i)); err != nil {
			b.Fatal(err)
		}
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < benchConcurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				err := d.Dial(ctx, pbx.DialRequest{LegID: fmt.Sprintf("10000000-0000-4000-8000-%012d", j),
					ConferenceID: fmt.Sprintf("00000000-0000-4000-8000-%012d", j%confs), Number: fmt.Sprintf("+1202555%04d", 1000+j%9000)})
				if err != nil {
					b.Errorf("dial: %v", err)
				}
			}
		}()
	}
	for j := 0; j < n; j++ {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	for connected.Load() < int64(n) {
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("direct: %d of %d connected", connected.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return float64(n) / time.Since(start).Seconds()
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func BenchmarkHeapPerLeg(b *testing.B) {
	gctune.Apply()                // convoice runs in this process: as its server does
	const users, convs = 100, 100 // 10,000 connected legs
	for i := 0; i < b.N; i++ {
		emuURL, _, _ := emulatorProcess(b)
		env := apitest.Start(b, apitest.Options{NoPBX: true, ExternalARI: emuURL})
		w := newBenchWorld(b, env, users, convs)
		before := heapInUse()
		w.joinAll(b)
		total := users * convs
		env.WaitFor("all legs connected", 3*time.Minute, func() bool {
			n, _ := env.Store.CountLiveLegs(context.Background())
			legs, _ := env.Store.AllLiveLegs(context.Background(), "")
			connected := 0
			for _, l := range legs {
				if l.State == "connected" {
					connected++
				}
			}
			return n["emulator"] == total && connected == total
		})
		after := heapInUse()
		perLeg := float64(int64(after)-int64(before)) / float64(total) / 1024
		b.ReportMetric(perLeg, "heap-KiB/leg")
		b.ReportMetric(float64(total), "live-legs")
		env.Stop()
	}
}

// BenchmarkResync holds 10,000 connected legs on one node (the emulator in
// a process of its own), stops convoice, hangs 100 of the calls up on the
// PBX meanwhile, and starts convoice again. ms-to-converge is the time from
// the link being up (the driver's Status().Since: its EventLinkUp, which
// starts the controller's resync) to the store agreeing with the PBX again
// (9,900 live legs, the 100 ended); ms-restart-to-converge also counts the
// restart before it (store opened, ARI connected, the driver's own resync
// of what it finds). With CONVOICE_BENCH_RESYNC_PROFILE=file the CPU
// profile of that restart-to-converged window alone is written to file
// (go test's -cpuprofile would be mostly the 10,000 joins before it).
func BenchmarkResync(b *testing.B) {
	gctune.Apply() // convoice runs in this process: as its server does
	const users, convs, gone = 100, 100, 100
	for i := 0; i < b.N; i++ {
		emuURL, _, _ := emulatorProcess(b)
		env := apitest.Start(b, apitest.Options{DB: filepath.Join(b.TempDir(), "convoice.db"), NoPBX: true, ExternalARI: emuURL})
		w := newBenchWorld(b, env, users, convs)
		w.joinAll(b)
		total := users * convs
		live := func() int {
			n, _ := env.Store.CountLiveLegs(context.Background())
			return n["emulator"]
		}
		env.WaitFor("all legs connected", 3*time.Minute, func() bool {
			legs, _ := env.Store.AllLiveLegs(context.Background(), "")
			connected := 0
			for _, l := range legs {
				if l.State == "connected" {
					connected++
				}
			}
			return connected == total
		})
		legs, err := env.Store.AllLiveLegs(context.Background(), "")
		if err != nil {
			b.Fatal(err)
		}
		env.Stop()
		for _, l := range legs[:gone] {
			req, _ := http.NewRequest("DELETE", emuURL+"/channels/"+l.ID, nil)
			req.SetBasicAuth("convoice", "emu-secret")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				b.Fatalf("hanging up %s on the emulator: %s", l.ID, resp.Status)
			}
		}
		stopProfile := resyncProfile(b)
		start := time.Now()
		env.Resume()
		linkUp := env.Driver.Status().Since
		env.WaitFor("the store to converge with the PBX", 2*time.Minute, func() bool { return live() == total-gone })
		done := time.Now()
		stopProfile()
		if linkUp.Before(start) || linkUp.After(done) {
			b.Fatalf("link-up time %s is outside the restart window %s–%s", linkUp, start, done)
		}
		b.ReportMetric(float64(done.Sub(linkUp).Milliseconds()), "ms-to-converge")
		b.ReportMetric(float64(done.Sub(start).Milliseconds()), "ms-restart-to-converge")
		b.ReportMetric(float64(total), "live-legs")
		env.Stop()
	}
}

// resyncProfile starts a CPU profile into $CONVOICE_BENCH_RESYNC_PROFILE
// (when set) and returns what stops it.
func resyncProfile(b *testing.B) func() { return windowProfile(b, "CONVOICE_BENCH_RESYNC_PROFILE") }

// windowProfile starts a CPU profile into the file named by the
// environment variable env (when set) and returns what stops it: the
// profile of one measured window, not of the setup around it.
func windowProfile(b *testing.B, env string) func() {
	return windowRecording(b, env, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// windowTrace writes Go's execution trace of a benchmark's window into
// the file named by env, when it is set. A CPU profile shows where the
// process ran; the trace shows where requests waited: `go tool trace
// -pprof=sync FILE` is the time goroutines were blocked, by where they
// blocked, and `-pprof=sched` the time they were ready to run without a
// CPU, by the stack that made them ready (the writer's, the syncer's).
func windowTrace(b *testing.B, env string) func() {
	return windowRecording(b, env, trace.Start, trace.Stop)
}

// windowRecording starts a recording into the file named by env (when
// set) and returns what stops it and closes the file.
func windowRecording(b *testing.B, env string, start func(io.Writer) error, stop func()) func() {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := start(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		stop()
		f.Close()
	}
}

// windowPerf records the whole machine (`perf record -a -g`: convoice,
// PostgreSQL, the emulator) over a benchmark's window into the file named
// by env, when it is set. A Go profile shows convoice alone, and on
// PostgreSQL most of a dial-out's CPU is the database's.
func windowPerf(b *testing.B, env string) func() {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-a", "-g", "-F", "999", "-o", path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("%s: %v", env, err)
	}
	time.Sleep(300 * time.Millisecond) // perf's start-up, before the window's work
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}
