package core

import "sync"

// Revocations tells this process's open event streams that some token,
// session or person was revoked, so that each re-checks its own sign-in at
// once instead of at its next periodic check (which is what carries a
// revocation made on another replica: the store is the truth).
type Revocations struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewRevocations makes an empty broadcaster.
func NewRevocations() *Revocations { return &Revocations{ch: make(chan struct{})} }

// C is closed at the next revocation; take it again after it fires.
func (r *Revocations) C() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ch
}

// Revoked wakes every listener.
func (r *Revocations) Revoked() {
	r.mu.Lock()
	close(r.ch)
	r.ch = make(chan struct{})
	r.mu.Unlock()
}
