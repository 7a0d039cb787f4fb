package api

import (
	"sync"
	"time"
)

// authLogEvery is how often one client address's failed authentications
// are logged: a client guessing tokens must not flood the log (nor hide
// everything else in it); the audit log keeps its own throttled trail.
const authLogEvery = time.Minute

// authLogLimit remembers when each client address's failures were last
// logged and how many went unlogged since.
type authLogLimit struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// allow reports whether a failure of addr is logged now, and how many of
// its failures were held back since the last line.
func (l *authLogLimit) allow(addr string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil || len(l.last) > 10000 { // bounded: forget, then log again
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := l.last[addr]; ok && now.Sub(t) < authLogEvery {
		l.held[addr]++
		return false, 0
	}
	held := l.held[addr]
	l.last[addr], l.held[addr] = now, 0
	return true, held
}
