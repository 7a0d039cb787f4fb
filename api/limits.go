package api

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// Limits bound what one client (or all of them) can hold open, so that a
// slow body, idle keep-alives or thousands of event streams cannot take
// the service's memory or its ability to answer (hardening run: one token
// held 3,000 streams, a slow body stayed open 75 s unauthenticated).
type Limits struct {
	// ReadTimeout bounds reading one request, headers and body (default
	// 30 s); event streams lift it once their request is read.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request (default
	// 60 s).
	IdleTimeout time.Duration
	// MaxConnections bounds open connections to the listener (default
	// 4096); past it new connections wait in the kernel's backlog.
	MaxConnections int
	// Event streams open at once on this replica: per person or guest
	// (default 20), per client address (default 100) and in all (default
	// 3000, below MaxConnections so streams can never take every
	// connection). Past a cap the stream answers 429 too_many_streams.
	MaxStreamsPerPrincipal int
	MaxStreamsPerAddress   int
	MaxStreams             int
}

func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.ReadTimeout, 30*time.Second)
	def(&l.IdleTimeout, 60*time.Second)
	defInt(&l.MaxConnections, 4096)
	defInt(&l.MaxStreamsPerPrincipal, 20)
	defInt(&l.MaxStreamsPerAddress, 100)
	defInt(&l.MaxStreams, 3000)
	return l
}

// HTTPServer is the http.Server for this handler with its limits; serve it
// on LimitListener(ln). cmd's serve and the test harness both use them, so
// the tests run with the limits production has.
func (s *Server) HTTPServer() *http.Server {
	l := s.cfg.Limits
	return &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: l.ReadTimeout,
		IdleTimeout: l.IdleTimeout, MaxHeaderBytes: 64 << 10}
}

// LimitListener bounds the connections accepted from ln (MaxConnections).
func (s *Server) LimitListener(ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, s.cfg.Limits.MaxConnections)
}

// streamGate counts the open event streams per principal, per address and
// in all.
type streamGate struct {
	mu     sync.Mutex
	total  int
	byWho  map[string]int
	byAddr map[string]int
	limits Limits
}

func newStreamGate(l Limits) *streamGate {
	return &streamGate{byWho: map[string]int{}, byAddr: map[string]int{}, limits: l}
}

// admit takes a place for one stream of who from addr, or says which cap
// is full; release gives the place back.
func (g *streamGate) admit(who, addr string) (release func(), full string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.byWho[who] >= g.limits.MaxStreamsPerPrincipal:
		return nil, "you have too many event streams open; close some tabs"
	case g.byAddr[addr] >= g.limits.MaxStreamsPerAddress:
		return nil, "too many event streams are open from your address"
	case g.total >= g.limits.MaxStreams:
		return nil, "the service has too many event streams open; try again shortly"
	}
	g.total++
	g.byWho[who]++
	g.byAddr[addr]++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.total--
			if g.byWho[who]--; g.byWho[who] == 0 {
				delete(g.byWho, who)
			}
			if g.byAddr[addr]--; g.byAddr[addr] == 0 {
				delete(g.byAddr, addr)
			}
		})
	}, ""
}
