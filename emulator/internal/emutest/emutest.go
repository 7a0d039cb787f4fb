// Package emutest holds the test helpers both emulators' tests use: reading
// a recording and collecting what a test client receives.
// It never starts an emulator or knows a protocol; only _test files import it.
package emutest

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// ReadJSON decodes the JSON file at path into v, failing the test when it
// cannot.
func ReadJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Inbox collects what a test client's reader goroutine receives (frames,
// events) and the error that ended it, and lets the test wait for a
// condition on them. The zero value is not ready: use NewInbox.
type Inbox[T any] struct {
	mu    sync.Mutex
	items []T
	err   error
	bell  emuserver.Bell
}

// NewInbox makes an empty Inbox.
func NewInbox[T any]() *Inbox[T] { return &Inbox[T]{bell: emuserver.NewBell()} }

// Add appends one received item.
func (b *Inbox[T]) Add(item T) {
	b.mu.Lock()
	b.items = append(b.items, item)
	b.mu.Unlock()
	b.bell.Ring()
}

// End records the error that ended the reader (nil clears it, for a client
// that connects again).
func (b *Inbox[T]) End(err error) {
	b.mu.Lock()
	b.err = err
	b.mu.Unlock()
	b.bell.Ring()
}

// Snapshot is what was received so far and the reader's end, if any.
func (b *Inbox[T]) Snapshot() ([]T, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]T(nil), b.items...), b.err
}

// Consume removes the first item received that match accepts; false when
// none does.
func (b *Inbox[T]) Consume(match func(T) bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, x := range b.items {
		if match(x) {
			b.items = append(b.items[:i:i], b.items[i+1:]...)
			return true
		}
	}
	return false
}

// WaitFor waits up to d until cond holds on what was received so far; the
// result is cond's last answer.
func (b *Inbox[T]) WaitFor(d time.Duration, cond func(items []T, err error) bool) bool {
	deadline := time.After(d)
	for {
		if cond(b.Snapshot()) {
			return true
		}
		select {
		case <-b.bell:
		case <-deadline:
			return cond(b.Snapshot())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
