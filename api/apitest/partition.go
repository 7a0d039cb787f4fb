package apitest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/convoice/convoice/storage"
)

// PartitionablePostgres is a route to a PostgreSQL server that a test can
// cut, as a network partition cuts a replica off from its database: no
// FIN, no RST, packets simply stop in both directions, on every
// connection made through it, old and new.
type PartitionablePostgres struct {
	// DSN reaches the database through the route.
	DSN string
	// Real: the partition is the kernel's (iptables drops the packets), so
	// PostgreSQL's own TCP keepalives find the replica's sessions dead and
	// end them. Otherwise (not root, no iptables) a proxy in the test
	// stops forwarding and, standing in for those keepalives, closes its
	// connections to the server KeepaliveVerdict after the cut. The proxy's
	// kernel still acknowledges what the replica sends, so the replica's
	// own unacknowledged-data timeout (storage's TCP_USER_TIMEOUT) does
	// not fire there: its requests fail later than in a real partition.
	Real bool
	cut  func()
	heal func()
}

// KeepaliveVerdict is when the emulated partition (Real false) closes the
// proxy's connections to PostgreSQL after the cut: what storage sets the
// lease session's keepalives to (idle for the default regain window,
// then 3 probes 2 s apart) — the server gives up on a vanished holder
// after that.
const KeepaliveVerdict = storage.DefaultLeaseRegain + 6*time.Second

// Cut starts the partition.
func (p *PartitionablePostgres) Cut() { p.cut() }

// Heal ends it.
func (p *PartitionablePostgres) Heal() { p.heal() }

// Partition returns a route to the PostgreSQL server of dsn that the test
// can cut and heal. As root with iptables (.ci/run installs it), the
// route is a NAT redirect from a port of its own, and the cut drops the
// packets of every connection made to that port; otherwise it is a TCP
// proxy in the test (see PartitionablePostgres.Real). The test's cleanup
// heals it and removes the rules.
func Partition(t testing.TB, dsn string) *PartitionablePostgres {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("iptables"); err == nil {
			p, err := kernelPartition(t, u)
			if err == nil {
				return p
			}
			t.Logf("iptables could not route to PostgreSQL (%v): emulating the partition with a proxy", err)
		}
	}
	return proxyPartition(t, u)
}

// freePort is a TCP port nothing listens on just now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func withHost(u *url.URL, hostport string) string {
	v := *u
	v.Host = hostport
	return v.String()
}

func iptables(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %v: %v: %s", args, err, out)
	}
	return nil
}

// kernelPartition redirects a port of its own to the server's (loopback
// connections pass the nat table's OUTPUT chain) and cuts by dropping, in
// INPUT, every packet of a connection first made to that port: the
// replica's packets to the server and the server's to the replica, its
// keepalive probes too.
func kernelPartition(t testing.TB, u *url.URL) (*PartitionablePostgres, error) {
	t.Helper()
	pgPort := u.Port()
	if pgPort == "" {
		pgPort = "5432"
	}
	port := strconv.Itoa(freePort(t))
	tag := []string{"-m", "comment", "--comment", "convoice-test-partition"}
	redirect := append([]string{"OUTPUT", "-t", "nat", "-p", "tcp", "-d", "127.0.0.1", "--dport", port,
		"-j", "REDIRECT", "--to-ports", pgPort}, tag...)
	drop := append([]string{"INPUT", "-p", "tcp", "-m", "conntrack", "--ctorigdstport", port, "-j", "DROP"}, tag...)
	if err := iptables(append([]string{"-A"}, redirect...)...); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	dropping := false
	set := func(on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on == dropping {
			return
		}
		op := "-D"
		if on {
			op = "-I"
		}
		if err := iptables(append([]string{op}, drop...)...); err != nil {
			t.Error(err)
			return
		}
		dropping = on
	}
	t.Cleanup(func() {
		set(false)
		if err := iptables(append([]string{"-D"}, redirect...)...); err != nil {
			t.Error(err)
		}
	})
	return &PartitionablePostgres{DSN: withHost(u, "127.0.0.1:"+port), Real: true,
		cut: func() { set(true) }, heal: func() { set(false) }}, nil
}

// proxyPartition routes through a TCPRoute whose cut closes the server's
// side of the connections KeepaliveVerdict later, as the server's
// keepalives would have.
func proxyPartition(t testing.TB, u *url.URL) *PartitionablePostgres {
	t.Helper()
	server := u.Host
	if u.Port() == "" {
		server = net.JoinHostPort(u.Hostname(), "5432")
	}
	r := NewTCPRoute(t, server, KeepaliveVerdict)
	return &PartitionablePostgres{DSN: withHost(u, r.Addr), cut: r.Cut, heal: r.Heal}
}

// TCPRoute forwards a port of its own (Addr) to a server, and can be cut
// as a partition cuts it: Cut stops every copy (the bytes wait in the
// sockets) and holds new connections without forwarding them; Heal
// forwards again. With closeAfter, the server's side of the connections
// cut is closed that long after the cut (the server's keepalives giving
// up on a vanished peer).
type TCPRoute struct {
	Addr      string
	Cut, Heal func()
}

// NewTCPRoute starts a route to server (host:port) until the test ends.
func NewTCPRoute(t testing.TB, server string, closeAfter time.Duration) *TCPRoute {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		cut     bool
		resumed = make(chan struct{}) // closed on heal
		conns   []net.Conn            // the server side of each pair
		verdict *time.Timer
	)
	// gate blocks while the route is cut.
	gate := func() {
		mu.Lock()
		c, r := cut, resumed
		mu.Unlock()
		if c {
			<-r
		}
	}
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				gate()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				gate()
				s, err := net.Dial("tcp", server)
				if err != nil {
					c.Close()
					return
				}
				mu.Lock()
				conns = append(conns, s)
				mu.Unlock()
				go pipe(s, c)
				pipe(c, s)
			}()
		}
	}()
	heal := func() {
		mu.Lock()
		defer mu.Unlock()
		if !cut {
			return
		}
		cut = false
		close(resumed)
		resumed = make(chan struct{})
		if verdict != nil {
			verdict.Stop()
		}
	}
	t.Cleanup(func() {
		ln.Close()
		heal()
		mu.Lock()
		for _, s := range conns {
			s.Close()
		}
		mu.Unlock()
	})
	return &TCPRoute{Addr: ln.Addr().String(), Heal: heal, Cut: func() {
		mu.Lock()
		defer mu.Unlock()
		if cut {
			return
		}
		cut = true
		if closeAfter > 0 {
			doomed := append([]net.Conn(nil), conns...)
			verdict = time.AfterFunc(closeAfter, func() {
				for _, s := range doomed {
					s.Close()
				}
			})
		}
	}}
}
