package webhooks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// The address check happens again when a delivery dials, after DNS: a name
// that resolved to a public address at registration and to a private one
// later (DNS rebinding) is refused before any byte is sent.
func TestPost_RefusesPrivateAddressAtDialTime(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(204)
	}))
	defer srv.Close()

	strict := New(nil, Config{})
	status, err := strict.post(context.Background(), srv.URL, "secret-secret-secret", []byte(`{}`))
	if !errors.Is(err, errRefusedAddress) || status != 0 {
		t.Fatalf("post to loopback: status %d, err %v; want the address refused", status, err)
	}
	if hits.Load() != 0 {
		t.Fatalf("the receiver was reached %d times", hits.Load())
	}

	open := New(nil, Config{AllowPrivate: true})
	if status, err := open.post(context.Background(), srv.URL, "secret-secret-secret", []byte(`{}`)); err != nil || status != 204 {
		t.Fatalf("post with AllowPrivate: %d %v", status, err)
	}
	if hits.Load() != 1 {
		t.Fatalf("the receiver was reached %d times, want 1", hits.Load())
	}
}

// Backoff doubles from the base up to the cap, with at most 10 % jitter.
func TestBackoff_DoublesUpToTheCap(t *testing.T) {
	w := New(nil, Config{RetryBase: 100, RetryMax: 1000})
	for attempts, want := range map[int]int64{1: 100, 2: 200, 3: 400, 4: 800, 5: 1000, 30: 1000} {
		got := int64(w.backoff(attempts))
		if got < want || got > want+want/10 {
			t.Errorf("after %d attempts: %d, want %d..%d", attempts, got, want, want+want/10)
		}
	}
}
