package pbxtest

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/pbx"
)

// stopLimit is how long Run or RunPassive may take to return after its
// context is cancelled.
const stopLimit = 20 * time.Second

// Run runs d.Run(ctx, h) in the background. stop cancels it and fails the
// test unless Run returns nil in time; it is idempotent and runs at the
// end of the test anyway.
func Run(t testing.TB, d pbx.Driver, h pbx.Handler) (stop func()) {
	t.Helper()
	return background(t, "Run", func(ctx context.Context) error { return d.Run(ctx, h) })
}

// RunPassive is Run for p.RunPassive.
func RunPassive(t testing.TB, p pbx.Passive) (stop func()) {
	t.Helper()
	return background(t, "RunPassive", p.RunPassive)
}

func background(t testing.TB, what string, run func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case <-time.After(stopLimit):
			t.Errorf("%s did not return after its context was cancelled", what)
		}
	})
	t.Cleanup(stop)
	return stop
}

// Eventually polls cond for a generous while.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitReady waits until d reports ready.
func WaitReady(t testing.TB, d pbx.Driver) {
	t.Helper()
	Eventually(t, "driver ready", func() bool { return d.Status().Ready })
}

// WaitNotReady waits until d reports not ready and returns that status.
func WaitNotReady(t testing.TB, d pbx.Driver) pbx.Status {
	t.Helper()
	var st pbx.Status
	Eventually(t, "driver not ready", func() bool { st = d.Status(); return !st.Ready })
	return st
}

// Logger logs through t.Log until the test ends; goroutines of a driver or
// an emulator that log after that are silenced (t.Log after the end
// panics).
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return TextLogger(w)
}

// TextLogger logs everything, debug included, as text to w.
func TextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Ctx is a context that ends after 5 s or with the test.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// LockedBuffer is a strings.Builder safe for a driver's goroutines: give
// it to TextLogger to read what was logged.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
