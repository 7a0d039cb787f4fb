package emuserver

import (
	"net"
	"testing"
	"time"
)

func TestHangHoldsWaitersUntilReleasedAndAgainWhenRehung(t *testing.T) {
	var h Hang
	if h.Held() != nil || !h.Wait(nil) {
		t.Fatal("a zero Hang must be off")
	}
	if !h.Set(true) || h.Set(true) {
		t.Fatal("Set(true) must report the change once")
	}
	released := make(chan bool, 1)
	go func() { released <- h.Wait(nil) }()
	select {
	case <-released:
		t.Fatal("Wait returned while hung")
	case <-time.After(20 * time.Millisecond):
	}
	h.Set(false)
	if ok := <-released; !ok {
		t.Fatal("Wait must report true when the hang ends")
	}
	h.Set(true)
	done := make(chan struct{})
	close(done)
	if h.Wait(done) {
		t.Fatal("Wait must report false when done closes during a hang")
	}
}

func TestLinkCutDiscardsOnceAndEndsWriter(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	l := NewLink(a)
	l.Ring()
	if !l.Rung() {
		t.Fatal("a rung link must wake its writer")
	}
	discards := 0
	l.Cut(func() { discards++ })
	l.Cut(func() { discards++ })
	if discards != 1 {
		t.Fatalf("discard ran %d times, want 1", discards)
	}
	if l.Rung() {
		t.Fatal("Rung must be false once cut")
	}
	if _, err := b.Write([]byte("x")); err == nil {
		t.Fatal("the socket must be closed by Cut")
	}
}
