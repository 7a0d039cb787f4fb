package pbxtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// Recordings decodes every recording of one PBX kind ("asterisk",
// "freeswitch") from the repository's testdata/<kind>/*.json into R, in
// file-name order. A driver's tests run two folders below the root.
func Recordings[R any](tb testing.TB, kind string) []R {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join("../../testdata", kind, "*.json"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no recordings in testdata/%s (%v)", kind, err)
	}
	out := make([]R, 0, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		var r R
		if err := json.Unmarshal(b, &r); err != nil {
			tb.Fatalf("%s: %v", p, err)
		}
		out = append(out, r)
	}
	return out
}

// Emulator is what a PBX emulator offers to start and stop.
type Emulator interface {
	Start(addr string) error
	Close() error
}

// StartEmulator builds an emulator from cfg (changed by mod when not nil),
// starts it on a free loopback port and closes it at the end of the test.
func StartEmulator[C any, E Emulator](tb testing.TB, cfg C, mod func(*C), build func(C) E) E {
	tb.Helper()
	if mod != nil {
		mod(&cfg)
	}
	emu := build(cfg)
	if err := emu.Start("127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { emu.Close() })
	return emu
}

// StartPassive runs p.RunPassive until the test ends (see RunPassive) and
// returns p once it is ready.
func StartPassive[D PassiveDriver](tb testing.TB, p D) D {
	tb.Helper()
	RunPassive(tb, p)
	WaitReady(tb, p)
	return p
}

// Build makes a driver from cfg (changed by mod when not nil) with the
// driver's New, and fails the test if New refuses the configuration.
func Build[C, D any](tb testing.TB, cfg C, mod func(*C), build func(C) (D, error)) D {
	tb.Helper()
	if mod != nil {
		mod(&cfg)
	}
	d, err := build(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}
