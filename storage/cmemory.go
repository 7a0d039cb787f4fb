package storage

// SQLite's memory comes from the C heap, and glibc gives freed memory at
// the top of a heap back to the kernel as soon as more than 128 KiB of it
// is free (M_TRIM_THRESHOLD). SQLite frees and allocates pages all the
// time: a reading connection drops its page cache whenever the writer has
// committed, and reads the pages again into fresh memory. With glibc's
// default every such round gave the pages back (madvise, a TLB shootdown
// on every core) and faulted them in again: in a perf profile of the
// SQLite dial path (BenchmarkDialOut) 8 % of convoice's CPU was in
// madvise and 10 % in page faults, most of them in SQLite's page cache.
// Keeping up to cTrimThreshold of freed memory per heap ends that; what is
// kept is bounded by what SQLite held at its peak (a few MiB of page cache
// per connection). Setting it also stops glibc from raising its mmap
// threshold (128 KiB) as large blocks are freed, so each large block is
// mapped afresh; SQLite's are rare (BenchmarkResync, which reads 10,000
// legs, did not change).

import (
	"log/slog"
	"os"
	"strings"
	"sync"
)

// cTrimThreshold is how much freed memory a C heap keeps before it is
// trimmed.
const cTrimThreshold = 32 << 20

type cHeapResult int

const (
	cHeapSet cHeapResult = iota
	cHeapRefused
	cHeapNotGlibc
	cHeapOperator // the operator tuned it (environment): left alone
)

var sqliteCHeapOnce sync.Once

// setSQLiteCHeap sets the C heap's trim threshold once per process,
// before the first SQLite connection allocates, unless the operator has
// set it in the environment.
func setSQLiteCHeap(lg *slog.Logger) {
	sqliteCHeapOnce.Do(func() {
		r := cHeapOperator
		if !operatorSetTrim(os.Getenv) {
			r = setCTrimThreshold(cTrimThreshold)
		}
		switch r {
		case cHeapSet:
			lg.Debug("C heap keeps freed memory for SQLite", "trim_threshold_bytes", cTrimThreshold)
		case cHeapRefused:
			lg.Warn("glibc refused M_TRIM_THRESHOLD; SQLite's page cache memory churns through the kernel")
		}
	})
}

// operatorSetTrim reports whether the environment already sets glibc's
// trim threshold (MALLOC_TRIM_THRESHOLD_ or the glibc.malloc.trim_threshold
// tunable): the operator's value wins.
func operatorSetTrim(getenv func(string) string) bool {
	if getenv("MALLOC_TRIM_THRESHOLD_") != "" {
		return true
	}
	for _, t := range strings.Split(getenv("GLIBC_TUNABLES"), ":") {
		if name, _, ok := strings.Cut(t, "="); ok && name == "glibc.malloc.trim_threshold" {
			return true
		}
	}
	return false
}
