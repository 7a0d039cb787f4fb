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
// a soft memory limit of 80 % of the container's memory (the smallest
// cgroup v2 memory.max or v1 memory.limit_in_bytes on the way from this
// process's cgroup to the root) makes the collector run as often
// as it must near that line. GOGC and GOMEMLIMIT in the environment win
// over both.
package gctune

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// DefaultPercent is the GOGC convoice runs with unless told otherwise.
const DefaultPercent = 200

// limitShare is the part of the container's memory the soft limit allows.
const limitShare = 0.8

// cgroupRoot is where the cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

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
		st.LimitFrom = fmt.Sprintf("%.0f%% of the cgroup's %d MiB limit", limitShare*100, container>>20)
	default:
		st.LimitFrom = "none (no container limit)"
	}
	return st
}

// containerMemory is the memory this process may use: the smallest limit
// on its cgroup and the cgroups above it (a container's, or a systemd
// unit's or slice's MemoryMax); 0 when there is none or it cannot be read.
func containerMemory() int64 {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	return cgroupLimit(cgroupRoot, string(self))
}

// cgroupLimit reads the limits of the cgroups that self (the text of
// /proc/self/cgroup) names under root: cgroup v2's "0::/path" with its
// memory.max, v1's memory controller ("N:memory:/path", under
// root/memory) with its memory.limit_in_bytes. Inside a container with
// its own cgroup namespace the path is "/" and the container's limit is
// at the root; on a host a service's is further down, or on a slice
// above it.
func cgroupLimit(root, self string) int64 {
	var least int64
	walk := func(base, path, file string) {
		for dir := filepath.Join(base, path); ; dir = filepath.Dir(dir) {
			if n := parseLimit(filepath.Join(dir, file)); n > 0 && (least == 0 || n < least) {
				least = n
			}
			if len(dir) <= len(base) {
				return
			}
		}
	}
	for _, line := range strings.Split(self, "\n") {
		id, rest, ok := strings.Cut(line, ":")
		controllers, path, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || !strings.HasPrefix(path, "/") {
			continue
		}
		switch {
		case id == "0" && controllers == "":
			walk(root, path, "memory.max")
		case slices.Contains(strings.Split(controllers, ","), "memory"):
			walk(filepath.Join(root, "memory"), path, "memory.limit_in_bytes")
		}
	}
	return least
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
