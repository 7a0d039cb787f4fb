package freeswitch

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/eslemu"
	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/pbxtest"
)

const testPassword = "s3cret-test"

// fastTiming keeps phone scripts short so tests run quickly.
var fastTiming = emuphone.Timing{Ring: 150 * time.Millisecond, Hold: 300 * time.Millisecond, SlowRing: time.Second}

func startEmu(t *testing.T, mod func(*eslemu.Config)) *eslemu.Server {
	t.Helper()
	return pbxtest.StartEmulator(t, eslemu.Config{Password: testPassword, Timing: fastTiming, SignalDelay: 10 * time.Millisecond},
		mod, eslemu.New)
}

type testDriver struct {
	*Driver
	rec  *pbxtest.Recorder
	stop func() // cancels Run and waits for it (also at the end of the test)
}

// testRoutes send +1555… to a gateway FreeSWITCH does not know (the
// originate fails) and everything else to the emulator's phones.
func testRoutes(t *testing.T) pbx.Routes {
	t.Helper()
	routes, err := pbx.ParseRoutes(`^\+1555=sofia/gateway/nosuchgw/{e164};.*=sofia/gateway/pbx/{e164}`)
	if err != nil {
		t.Fatal(err)
	}
	return routes
}

// newTestDriver is a driver for addr with the tests' timings, changed by
// mod.
func newTestDriver(t *testing.T, addr string, mod func(*Config)) *Driver {
	t.Helper()
	return pbxtest.Build(t, Config{Addr: addr, Password: testPassword, Routes: testRoutes(t), RingTimeout: 5 * time.Second,
		RequestTimeout: 500 * time.Millisecond, PingInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}, mod, New)
}

// startDriver runs a driver against addr and waits until it is ready
// (unless wantReady is false).
func startDriver(t *testing.T, addr string, wantReady bool, mod func(*Config)) *testDriver {
	t.Helper()
	d := newTestDriver(t, addr, mod)
	td := &testDriver{Driver: d, rec: pbxtest.NewRecorder()}
	td.stop = pbxtest.Run(t, d, td.rec)
	if wantReady {
		pbxtest.WaitReady(t, d)
	}
	return td
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (td *testDriver) dial(t *testing.T, conf, number string) string {
	t.Helper()
	leg := newID()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := td.CreateConference(ctx, conf); err != nil {
		t.Fatalf("CreateConference: %v", err)
	}
	if err := td.Dial(ctx, pbx.DialRequest{LegID: leg, ConferenceID: conf, Number: number,
		CallerIDName: "Convoice, Inc.", CallerIDNumber: "+12025550100"}); err != nil {
		t.Fatalf("Dial %s: %v", number, err)
	}
	return leg
}

func emuChannel(emu *eslemu.Server, uuid string) (eslemu.Channel, bool) {
	for _, c := range emu.Channels() {
		if c.UUID == uuid {
			return c, true
		}
	}
	return eslemu.Channel{}, false
}

// raw is a bare ESL client standing for another program on the same
// FreeSWITCH (an operator's fs_cli, another service).
type raw struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func rawClient(t *testing.T, addr string) *raw {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &raw{t: t, nc: nc, br: bufio.NewReader(nc)}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if f, err := readFrame(r.br); err != nil || f.get("Content-Type") != "auth/request" {
		t.Fatalf("raw client: %v %v", f, err)
	}
	if reply := r.send("auth " + testPassword); !strings.HasPrefix(reply.get("Reply-Text"), "+OK") {
		t.Fatalf("raw client auth: %v", reply)
	}
	return r
}

func (r *raw) send(cmd string) frame {
	r.t.Helper()
	if _, err := io.WriteString(r.nc, cmd+"\n\n"); err != nil {
		r.t.Fatal(err)
	}
	for {
		f, err := readFrame(r.br)
		if err != nil {
			r.t.Fatalf("raw client %q: %v", cmd, err)
		}
		if ct := f.get("Content-Type"); ct == "command/reply" || ct == "api/response" {
			return f
		}
	}
}

func (r *raw) api(cmd string) string { return r.send("api " + cmd).body }
