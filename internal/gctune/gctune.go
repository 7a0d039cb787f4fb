// Package gctune sets the Go garbage collector of a convoice server.
//
// convoice's live heap is small (about 13 MB with 1,000 calls up, well
// under a kilobyte more per call) and every request allocates, so with Go's
// default GOGC=100 the collector ran three to four times a second under
// load. Each cycle's mark phase took one of this machine's two cores for
// half of 13–23 ms, and the requests that arrived meanwhile were the slow
// ones: in BenchmarkDialOut the clusters of slow requests fell on the
// collector's cycles, and a build that made the cycles 1.6 times as
// frequent (a smaller live heap, same allocations) had 1.1–2.3 times as
// many requests over 5 ms in six of six pairs.
//
// GOGC=200 lets the heap grow to three times what is live before a cycle.
// In six alternated pairs against GOGC=100 it had fewer slow joins in the
// first 200 ms in five and as many or more dial-outs/s in most; 400 and
// 800 were worse again (twice the page faults, a slower cold start). The
// cost is memory: a few tens of MB more at these sizes.
//
// So that a larger heap can never be what runs a container out of memory,
// a soft memory limit of 80 % of the container's memory (cgroup v2
// memory.max, v1 memory.limit_in_bytes) makes the collector run as often
// as it must near that line. GOGC and GOMEMLIMIT in the environment win
// over both.
package gctune

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultPercent is the GOGC convoice runs with unless told otherwise.
const DefaultPercent = 200

// limitShare is the part of the container's memory the soft limit allows.
const limitShare = 0.8

// cgroupFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// Setting is what Apply decided, for the startup log.
type Setting struct {
	// Percent is the GOGC in effect; PercentFrom says who chose it.
	Percent     int
	PercentFrom string
	// Limit is the soft memory limit set (0: none set here); LimitFrom
	// says why.
	Limit     int64
	LimitFrom string
}

// Apply sets the collector as described in the package comment and says
// what it set.
func Apply() Setting {
	st := decide(os.Getenv, containerMemory())
	if st.PercentFrom == "default" {
		debug.SetGCPercent(st.Percent)
	}
	if st.Limit > 0 {
		debug.SetMemoryLimit(st.Limit)
	}
	return st
}

// decide is Apply's choice, given the environment and the container's
// memory (0: unknown or unlimited).
func decide(getenv func(string) string, container int64) Setting {
	st := Setting{Percent: DefaultPercent, PercentFrom: "default"}
	if v := getenv("GOGC"); v != "" {
		st.PercentFrom = "GOGC"
		st.Percent = -1 // "off", or a value the runtime read itself
		if n, err := strconv.Atoi(v); err == nil {
			st.Percent = n
		}
	}
	switch {
	case getenv("GOMEMLIMIT") != "":
		st.LimitFrom = "GOMEMLIMIT"
	case container > 0:
		st.Limit = int64(float64(container) * limitShare)
		st.LimitFrom = fmt.Sprintf("80%% of the container's %d MiB", container>>20)
	default:
		st.LimitFrom = "none (no container limit)"
	}
	return st
}

// containerMemory reads the container's memory limit; 0 when there is
// none or it cannot be read.
func containerMemory() int64 {
	for _, f := range cgroupFiles {
		if n := parseLimit(f); n > 0 {
			return n
		}
	}
	return 0
}

// parseLimit reads a cgroup memory limit file: a number of bytes, or
// "max" (v2) or a huge number (v1) for none.
func parseLimit(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0
	}
	return n
}
