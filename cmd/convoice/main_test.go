package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the real binary, as a new user or an admin would.

var buildOnce sync.Once
var binPath string
var buildErr error

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "convoice-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "convoice")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a running convoice process with its output captured.
type proc struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out bytes.Buffer
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary(t), args...)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
	return p
}

// waitHTTP waits for url to answer 200; for /readyz also for a ready PBX
// node (the replica is ready before its PBX link is up).
func waitHTTP(t *testing.T, url string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(url); err == nil {
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode == 200 && (!strings.HasSuffix(url, "/readyz") || bytes.Contains(body, []byte(`"pbx_ready":true`))) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never became ready; output:\n%s", url, p.output())
}

func call(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// The README's run command on a fresh directory: it creates its database,
// warns loudly that the PBX is emulated, seeds a demo directory with
// sign-in links, and the API works with a printed token.
func TestServe_FreshStartSeedsDemoAndTheAPIWorks(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, []string{"CONVOICE_LISTEN=" + addr, "CONVOICE_DB=" + filepath.Join(dir, "convoice.db")}, "serve")
	base := "http://" + addr
	waitHTTP(t, base+"/readyz", p)
	out := p.output()
	if !strings.Contains(out, "NO REAL PBX") {
		t.Fatalf("the emulator is not announced loudly:\n%s", out)
	}
	m := regexp.MustCompile(`Alice Archer\s+(\S+)/#token=(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no sign-in link for Alice:\n%s", out)
	}
	if m[1] != base {
		t.Fatalf("sign-in link base %q, want %q", m[1], base)
	}
	token := m[2]
	st, list := call(t, "GET", base+"/api/v1/conversations", token, nil)
	if st != 200 || len(list["conversations"].([]any)) != 1 {
		t.Fatalf("demo conversation: %d %v", st, list)
	}
	st, conv := call(t, "POST", base+"/api/v1/conversations", token, map[string]any{"kind": "im", "subject": "smoke"})
	if st != 201 {
		t.Fatalf("create conversation: %d %v", st, conv)
	}
	id := conv["id"].(string)
	if st, _ := call(t, "POST", base+"/api/v1/conversations/"+id+"/messages", token, map[string]any{"text": "hello"}); st != 201 {
		t.Fatalf("post message: %d", st)
	}
	req, _ := http.NewRequest("GET", base+"/api/v1/conversations/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v", err)
	}
	sc := bufio.NewScanner(resp.Body)
	var types []string
	for sc.Scan() && len(types) < 2 {
		if l := sc.Text(); strings.HasPrefix(l, "event: ") {
			types = append(types, l[7:])
		}
	}
	resp.Body.Close()
	if strings.Join(types, ",") != "conversation.created,message.created" {
		t.Fatalf("event stream: %v", types)
	}
	// Audio through the emulator: Alice's work number answers.
	st, join := call(t, "POST", base+"/api/v1/conversations/"+id+"/audio", token, map[string]any{"published": "work"})
	if st != 201 {
		t.Fatalf("join: %d %v", st, join)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, audio := call(t, "GET", base+"/api/v1/conversations/"+id+"/audio", token, nil)
		if legs, _ := audio["legs"].([]any); len(legs) == 1 && legs[0].(map[string]any)["state"] == "connected" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leg never connected: %v", audio)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUserCommands_AddListTokenAndSecretsNeverFromFlags(t *testing.T) {
	db := filepath.Join(t.TempDir(), "c.db")
	env := []string{"CONVOICE_DB=" + db}
	run := func(args ...string) string {
		cmd := exec.Command(binary(t), args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("user", "add", "--name", "Ann Admin", "--email", "ann@example.com", "--number", "work=+1 202 555 0101", "--number", "mobile=(202) 555-0102")
	tok := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)
	if tok == nil {
		t.Fatalf("no token printed:\n%s", out)
	}
	list := run("user", "list")
	if !strings.Contains(list, "ann@example.com") || !strings.Contains(list, "mobile=+12025550102") {
		t.Fatalf("user list:\n%s", list)
	}
	second := strings.TrimSpace(run("user", "token", "ann@example.com"))
	if len(second) < 40 || second == tok[1] {
		t.Fatalf("user token printed %q", second)
	}
	cmd := exec.Command(binary(t), "user", "add", "--name", "X", "--email", "x@example.com", "--number", "work=12")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "numbers[0].number") {
		t.Fatalf("bad number accepted or not explained: %v\n%s", err, out)
	}
	// There is no flag for a secret.
	cmd = exec.Command(binary(t), "serve", "--admin-token", "x")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "flag provided but not defined") {
		t.Fatalf("--admin-token should not exist: %v\n%s", err, out)
	}
}

// SIGTERM drains and exits cleanly; the PBX (its own process here) keeps
// the calls, and a restarted convoice still shows them connected.
func TestSIGTERMKeepsCallsUpAndARestartFindsThemConnected(t *testing.T) {
	dir := t.TempDir()
	emuAddr := freeAddr(t)
	emu := start(t, []string{"CONVOICE_ARI_PASSWORD=pw"}, "emulate", "asterisk", "--listen", emuAddr, "--user", "convoice")
	waitHTTP(t, "http://"+emuAddr+"/ari/asterisk/ping?api_key=convoice:pw", emu)
	addr := freeAddr(t)
	env := []string{"CONVOICE_LISTEN=" + addr, "CONVOICE_DB=" + filepath.Join(dir, "c.db"), "CONVOICE_PBX=asterisk",
		"CONVOICE_ARI_URL=http://" + emuAddr + "/ari", "CONVOICE_ARI_USER=convoice", "CONVOICE_ARI_PASSWORD=pw"}
	cmd := exec.Command(binary(t), "user", "add", "--name", "Ann", "--email", "ann@example.com", "--number", "work=+12025550101")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("user add: %v %s", err, out)
	}
	token := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(string(out))[1]
	base := "http://" + addr
	p := start(t, env, "serve")
	waitHTTP(t, base+"/readyz", p)
	_, conv := call(t, "POST", base+"/api/v1/conversations", token, map[string]any{"kind": "im"})
	id := conv["id"].(string)
	if st, j := call(t, "POST", base+"/api/v1/conversations/"+id+"/audio", token, map[string]any{"published": "work"}); st != 201 {
		t.Fatalf("join: %d %v", st, j)
	}
	connected := func() bool {
		_, audio := call(t, "GET", base+"/api/v1/conversations/"+id+"/audio", token, nil)
		legs, _ := audio["legs"].([]any)
		return len(legs) == 1 && legs[0].(map[string]any)["state"] == "connected"
	}
	waitFor(t, "connected", connected)
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("SIGTERM exit: %v\n%s", err, p.output())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("convoice did not stop on SIGTERM")
	}
	p2 := start(t, env, "serve")
	waitHTTP(t, base+"/readyz", p2)
	time.Sleep(500 * time.Millisecond) // let the start-up resync run
	if !connected() {
		t.Fatalf("the call did not survive the restart")
	}
	// And kill -9: the same.
	p2.cmd.Process.Kill()
	p2.cmd.Wait()
	p3 := start(t, env, "serve")
	waitHTTP(t, base+"/readyz", p3)
	time.Sleep(500 * time.Millisecond)
	if !connected() {
		t.Fatalf("the call did not survive kill -9")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
