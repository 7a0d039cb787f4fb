package directory

import (
	"testing"
	"time"
)

// A burst of requests with one credential queues one last-used write per
// minute; another credential is not held back by it.
func TestTouchLog_OneWritePerCredentialAndMinute(t *testing.T) {
	var l touchLog
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	if !l.claim("token:a", t0) {
		t.Fatal("the first use of a credential must be written")
	}
	for i := 1; i <= 20; i++ {
		if l.claim("token:a", t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("use %d s later was written again", i)
		}
	}
	if !l.claim("token:b", t0.Add(time.Second)) {
		t.Fatal("another credential's first use must be written")
	}
	if !l.claim("token:a", t0.Add(touchEvery)) {
		t.Fatal("a use a minute later must be written")
	}
}

// The log forgets entries that no longer hold anything back, so it stays
// bounded by the credentials used within a minute.
func TestTouchLog_ForgetsOldEntries(t *testing.T) {
	var l touchLog
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	for i := 0; i < 5000; i++ {
		l.claim("token:"+string(rune('a'+i%26))+time.Duration(i).String(), t0)
	}
	l.claim("token:late", t0.Add(2*touchEvery))
	if n := len(l.last); n > 4096 {
		t.Fatalf("log holds %d entries after they expired", n)
	}
}
