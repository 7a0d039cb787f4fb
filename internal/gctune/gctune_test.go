package gctune

import (
	"os"
	"path/filepath"
	"testing"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

// Without GOGC the default applies; GOGC in the environment wins (the
// runtime has read it already); a container's memory sets the soft limit
// unless GOMEMLIMIT says otherwise.
func TestDecide(t *testing.T) {
	const gib = int64(1) << 30
	share := 0.8
	limit80 := int64(float64(2*gib) * share)
	cases := []struct {
		name        string
		env         map[string]string
		container   int64
		percent     int
		percentFrom string
		limit       int64
		limitFrom   string
	}{
		{"bare host", nil, 0, DefaultPercent, "default", 0, "none (no container limit)"},
		{"container", nil, 2 * gib, DefaultPercent, "default", limit80, "80% of the cgroup's 2048 MiB limit"},
		{"operator's GOGC", map[string]string{"GOGC": "150"}, 2 * gib, 150, "GOGC", limit80, "80% of the cgroup's 2048 MiB limit"},
		{"GOGC=off", map[string]string{"GOGC": "off"}, 0, -1, "GOGC", 0, "none (no container limit)"},
		{"operator's GOMEMLIMIT", map[string]string{"GOMEMLIMIT": "1GiB"}, 2 * gib, DefaultPercent, "default", 0, "GOMEMLIMIT"},
	}
	for _, c := range cases {
		st := decide(env(c.env), c.container)
		if st.Percent != c.percent || st.PercentFrom != c.percentFrom || st.Limit != c.limit || st.LimitFrom != c.limitFrom {
			t.Errorf("%s: got %+v, want percent %d from %q, limit %d from %q", c.name, st, c.percent, c.percentFrom, c.limit, c.limitFrom)
		}
	}
}

// A cgroup file says a number of bytes, or "max" (v2) or a page-rounded
// 2^63 (v1) for no limit.
func TestParseLimit(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		content string
		want    int64
	}{
		{"536870912\n", 536870912},
		{"max\n", 0},
		{"9223372036854771712\n", 0},
		{"", 0},
		{"-1", 0},
	} {
		f := filepath.Join(dir, "memory.max")
		if err := os.WriteFile(f, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := parseLimit(f); got != c.want {
			t.Errorf("parseLimit(%q) = %d, want %d", c.content, got, c.want)
		}
	}
	if got := parseLimit(filepath.Join(dir, "absent")); got != 0 {
		t.Errorf("a missing file gave %d", got)
	}
}

// The limit is found where a deployment puts it: at the root of a
// container's own cgroup namespace, on a systemd service or the slice
// above it on a host (v2), or under v1's memory controller; the smallest
// on the way up wins, and a cgroup without one (this machine's own v1
// group, "max") adds none.
func TestCgroupLimit(t *testing.T) {
	const mib = int64(1) << 20
	cases := []struct {
		name  string
		files map[string]string // under root
		self  string
		want  int64
	}{
		{"container (v2, own namespace)", map[string]string{"memory.max": "2147483648\n"}, "0::/\n", 2048 * mib},
		{"systemd service (v2)", map[string]string{
			"system.slice/convoice.service/memory.max": "1073741824\n",
			"system.slice/memory.max":                  "max\n",
		}, "0::/system.slice/convoice.service\n", 1024 * mib},
		{"slice smaller than its service (v2)", map[string]string{
			"system.slice/convoice.service/memory.max": "1073741824\n",
			"system.slice/memory.max":                  "536870912\n",
		}, "0::/system.slice/convoice.service\n", 512 * mib},
		{"no limit anywhere (v2)", map[string]string{"user.slice/memory.max": "max\n"}, "0::/user.slice/session-1.scope\n", 0},
		{"v1 memory controller, limit on the group", map[string]string{
			"memory/process_api/abc/memory.limit_in_bytes": "805306368\n",
			"memory/memory.limit_in_bytes":                 "9223372036854771712\n",
		}, "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n", 768 * mib},
		{"v1 without a limit", map[string]string{
			"memory/process_api/abc/memory.limit_in_bytes": "9223372036854771712\n",
			"memory/memory.limit_in_bytes":                 "9223372036854771712\n",
		}, "4:memory:/process_api/abc\n0::/\n", 0},
		{"v1 with controllers joined", map[string]string{
			"memory/docker/x/memory.limit_in_bytes": "268435456\n",
		}, "3:cpuacct,memory:/docker/x\n", 256 * mib},
		{"unreadable /proc/self/cgroup", nil, "", 0},
	}
	for _, c := range cases {
		root := t.TempDir()
		for name, content := range c.files {
			f := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := cgroupLimit(root, c.self); got != c.want {
			t.Errorf("%s: %d MiB, want %d MiB", c.name, got/mib, c.want/mib)
		}
	}
}
