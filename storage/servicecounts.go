package storage

import (
	"sync"
	"time"
)

// The service-wide dial limits (a DialLimit whose Scope is the zero
// DialScope: the calls up in the whole service, the dials of the whole
// service in the rate window) count every live leg or every recent grant
// of the service, work that grows with the calls up, on every decision: at
// 10,000 calls up they were 4–5 ms of PostgreSQL's CPU per dial, most of
// the decision (EXPLAIN ANALYZE, README "Several replicas"). They are not
// exact across replicas anyway (no lock serialises them, see DecideDialIn).
//
// So a replica counts them exactly only when it needs to: when its last
// exact reading is older than serviceCountsFresh, or when that reading
// plus this process's grants since comes within serviceMargin of the
// limit. Otherwise the decision takes that estimate as the count (an upper
// bound of what this process knows: legs that ended and grants that left
// the window since are still counted). A refusal therefore always comes
// from an exact count; a grant far below the limit may miss what the other
// replicas granted since the reading, which can push the service past the
// limit only if they grant more than the margin within twice
// serviceCountsFresh (README, "The dial policy across replicas").
//
// SQLite does not use it: one process, its decisions in the writer.

// serviceCountsFresh is how old a reading may be for a decision to skip
// counting (up to twice that while another decision is refreshing it).
const serviceCountsFresh = 100 * time.Millisecond

// serviceMargin is how far below a service-wide limit an estimate must
// be for the decision to skip counting it.
func serviceMargin(limit int) int64 { return max(int64(limit)/10, 20) }

// serviceCounts is a process's last exact reading of the service-wide
// counts. One per Store (shared by its transaction stores).
type serviceCounts struct {
	mu sync.Mutex
	// read is when the reading's decision started (its grant's At); zero:
	// no reading yet.
	read time.Time
	// counts are the reading's counts, by DialLimit.Live.
	counts map[bool]int64
	// grants counts this process's grants; grantsAtRead is its value when
	// the reading's decision started. A grant committed between that and
	// the reading's snapshot is counted twice: an overestimate.
	grants, grantsAtRead int64
	// refreshing: a decision is counting exactly to replace a stale
	// reading; the others may use the stale one meanwhile.
	refreshing bool
}

// servicePlan is what plan decided for one decision.
type servicePlan struct {
	// known are the estimates the decision uses instead of counting, by
	// the index of the limit; nil when it counts every limit.
	known map[int]int64
	// refresh: this decision claimed the refresh of a stale reading.
	refresh  bool
	at       time.Time
	grantsAt int64
}

// isService reports whether l is one of the service-wide limits.
func (l DialLimit) isService() bool { return l.Scope == DialScope{} }

// plan decides which service-wide limits of a decision made at now it may
// take from the reading.
func (sc *serviceCounts) plan(limits []DialLimit, now time.Time) servicePlan {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	p := servicePlan{at: now, grantsAt: sc.grants}
	service := false
	for _, l := range limits {
		service = service || l.isService()
	}
	if !service {
		return p
	}
	exact := func() servicePlan {
		if !sc.refreshing {
			sc.refreshing, p.refresh = true, true
		}
		p.known = nil
		return p
	}
	age := now.Sub(sc.read)
	switch {
	case sc.read.IsZero() || age < 0 || age >= 2*serviceCountsFresh:
		return exact()
	case age >= serviceCountsFresh && !sc.refreshing:
		return exact()
	}
	for i, l := range limits {
		if !l.isService() {
			continue
		}
		n, ok := sc.counts[l.Live]
		if !ok {
			return exact()
		}
		est := n + sc.grants - sc.grantsAtRead
		if est >= int64(l.Max)-serviceMargin(l.Max) {
			return exact()
		}
		if p.known == nil {
			p.known = map[int]int64{}
		}
		p.known[i] = est
	}
	return p
}

// done records a decision's outcome: its grant, and, when it counted
// every limit (counts nil: it failed), its counts as the new reading.
func (sc *serviceCounts) done(p servicePlan, limits []DialLimit, counts []int64, granted bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if granted {
		sc.grants++
	}
	if p.refresh {
		sc.refreshing = false
	}
	if p.known != nil || counts == nil || !p.at.After(sc.read) {
		return
	}
	read := map[bool]int64{}
	for i, l := range limits {
		if l.isService() {
			read[l.Live] = counts[i]
		}
	}
	if len(read) > 0 {
		sc.read, sc.counts, sc.grantsAtRead = p.at, read, p.grantsAt
	}
}
