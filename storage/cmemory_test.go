package storage

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestOperatorSetTrim(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"MALLOC_TRIM_THRESHOLD_": "1048576"}, true},
		{map[string]string{"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}, true},
		{map[string]string{"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0"}, true},
		// Other tunables, and a name that only starts like it, leave it to us.
		{map[string]string{"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, false},
		{map[string]string{"GLIBC_TUNABLES": "glibc.malloc.trim_threshold_x=1"}, false},
	} {
		got := operatorSetTrim(func(k string) string { return c.env[k] })
		if got != c.want {
			t.Errorf("env %v: operator set = %v, want %v", c.env, got, c.want)
		}
	}
}

// TestCTrimThresholdAccepted: the C library takes the setting (glibc
// returns 1 from mallopt), or says it is not glibc; never a refusal.
func TestCTrimThresholdAccepted(t *testing.T) {
	r := setCTrimThreshold(cTrimThreshold)
	if r == cHeapRefused {
		t.Fatal("glibc refused M_TRIM_THRESHOLD")
	}
	// glibc's soname is libc.so.6; a process that maps it must get the
	// setting.
	maps, err := os.ReadFile("/proc/self/maps")
	if runtime.GOOS == "linux" && err == nil && strings.Contains(string(maps), "/libc.so.6") && r != cHeapSet {
		t.Fatalf("glibc is mapped but the threshold was not set (result %d)", r)
	}
}
