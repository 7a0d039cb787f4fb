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
		{"container", nil, 2 * gib, DefaultPercent, "default", limit80, "80% of the container's 2048 MiB"},
		{"operator's GOGC", map[string]string{"GOGC": "150"}, 2 * gib, 150, "GOGC", limit80, "80% of the container's 2048 MiB"},
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
