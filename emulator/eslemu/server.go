package eslemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// Config tunes the emulator. The zero value is the recorded lab: password
// ClueCon, gateway "pbx" on profile "internal", the contract's phone timing.
type Config struct {
	// Password for "auth"; default "ClueCon" (mod_event_socket's default).
	Password string
	// Timing of the scripted phones (emuphone.DefaultTiming when zero).
	Timing emuphone.Timing
	Logger *slog.Logger
	// OnOriginate is called (in its own goroutine) when a channel is
	// created by an originate.
	OnOriginate func(uuid string, at time.Time)

	// Identity shown in events (recorded values by default).
	Hostname, Switchname, IPv4, IPv6 string
	// Domain is Conference-Domain (default 127.0.0.1).
	Domain string
	// Profiles are the sofia profiles ("internal", "external"); Gateways
	// live on GatewayProfile ("internal", as in the lab).
	Profiles       []string
	Gateways       []string
	GatewayProfile string
	// SignalDelay is how long the far end takes to answer the INVITE
	// (180/486/…); the lab's carrier took ≈20 ms.
	SignalDelay time.Duration
	// HeartbeatInterval between HEARTBEAT events (FreeSWITCH: 20 s).
	HeartbeatInterval time.Duration
	// AutoTalk makes every answered phone send voice at once, as the lab's
	// carrier did (a 440 Hz tone): members then start-talking after
	// joining. Otherwise phones are silent until SetTalking.
	AutoTalk bool
	// EarlyMedia makes every ringing phone send 183 with media instead of
	// 180, as "0183"/"0187" always do: CHANNEL_PROGRESS_MEDIA and call
	// state EARLY, and — as recorded (p) — without ignore_early_media in
	// the originate's {vars} the originate succeeds on it (BACKGROUND_JOB
	// +OK, the application runs, add-member while unanswered) and
	// originate_timeout no longer applies.
	EarlyMedia bool
	// FirstMemberID is the first conference member id after a (re)start
	// (FreeSWITCH counts from 1, globally across rooms).
	FirstMemberID int
}

func (c Config) withDefaults() Config {
	if c.Password == "" {
		c.Password = "ClueCon"
	}
	if c.Hostname == "" {
		c.Hostname = "vm"
	}
	if c.Switchname == "" {
		c.Switchname = "fslab"
	}
	if c.IPv4 == "" {
		c.IPv4 = "192.0.2.2"
	}
	if c.IPv6 == "" {
		c.IPv6 = "fd00::2"
	}
	if c.Domain == "" {
		c.Domain = "127.0.0.1"
	}
	if len(c.Profiles) == 0 {
		c.Profiles = []string{"internal", "external"}
	}
	if len(c.Gateways) == 0 {
		c.Gateways = []string{"pbx"}
	}
	if c.GatewayProfile == "" {
		c.GatewayProfile = "internal"
	}
	if c.SignalDelay <= 0 {
		c.SignalDelay = 20 * time.Millisecond
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 20 * time.Second
	}
	if c.FirstMemberID <= 0 {
		c.FirstMemberID = 1
	}
	return c
}

// Server is an emulated FreeSWITCH event socket on a real TCP listener.
type Server struct {
	cfg Config
	log *slog.Logger
	wg  sync.WaitGroup

	mu        sync.Mutex
	ln        net.Listener
	conns     []*conn
	chans     map[string]*channel
	chanOrder []string
	confs     map[string]*conference
	confOrder []string
	seq       uint64
	coreUUID  string
	started   time.Time
	sessions  int
	peak      int
	gwCalls   int
	gwFailed  int
	gen       int
	genCh     chan struct{}
	hang      emuserver.Hang
	rude      bool
	commands  []string
	closed    bool
	stopHB    chan struct{}

	nextMember int

	// Delays: SetOriginateDelay (the bgapi reply comes at once, as
	// recorded, CHANNEL_OUTGOING and the rest only after the delay; a
	// uuid_kill meanwhile is "-ERR No such channel!") and SetAnswerDelay.
	emuphone.Delays
}

// New makes an emulator; Start opens its socket.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: emuserver.Logger(cfg.Logger, ""), stopHB: make(chan struct{})}
	s.resetLocked()
	return s
}

// resetLocked is a fresh FreeSWITCH process: no calls, a new Core-UUID,
// counters from the start.
func (s *Server) resetLocked() {
	s.chans = map[string]*channel{}
	s.chanOrder = nil
	s.confs = map[string]*conference{}
	s.confOrder = nil
	s.seq = 0
	s.coreUUID = emuserver.UUID()
	s.started = time.Now()
	s.sessions, s.peak, s.gwCalls, s.gwFailed = 0, 0, 0, 0
	s.nextMember = s.cfg.FirstMemberID
	if s.genCh != nil {
		close(s.genCh)
	}
	s.gen++
	s.genCh = make(chan struct{})
}

func (s *Server) genDone(gen int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.closed {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.genCh
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("eslemu: listen: %w", err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(2)
	go s.acceptLoop(ln)
	go s.heartbeat()
	s.log.Info("event socket emulator listening", "addr", ln.Addr().String())
	return nil
}

// Addr is the listening address ("127.0.0.1:port").
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops the emulator: listener, connections, timers.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln := s.ln
	for _, c := range s.conns {
		c.close()
	}
	for _, ch := range s.chans {
		for _, t := range ch.timers {
			t.Stop()
		}
	}
	close(s.genCh)
	s.genCh = make(chan struct{})
	close(s.stopHB)
	s.mu.Unlock()
	var err error
	if ln != nil {
		err = ln.Close()
	}
	s.wg.Wait()
	return err
}

// Serve runs an emulator on addr until ctx ends (the CLI
// "convoice emulate freeswitch").
func Serve(ctx context.Context, addr string, cfg Config) error {
	return emuserver.Serve(ctx, addr, New(cfg))
}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = nc.Close()
			return
		}
		c := newConn(s, nc)
		s.conns = append(s.conns, c)
		rude := s.rude
		s.wg.Add(2)
		s.mu.Unlock()
		go c.writer()
		go c.reader(rude)
	}
}

func (s *Server) dropConn(c *conn) {
	s.mu.Lock()
	for i, x := range s.conns {
		if x == c {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
}

// waitResponsive blocks while the emulator plays dead; false when the
// connection ended meanwhile.
func (s *Server) waitResponsive(done <-chan struct{}) bool {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	return !closed && s.hang.Wait(done)
}

func (s *Server) record(cmd string) {
	s.mu.Lock()
	s.commands = append(s.commands, cmd)
	s.mu.Unlock()
}

// fireLocked hands an event to every listener, in one global order.
func (s *Server) fireLocked(e *event) {
	for _, c := range s.conns {
		c.deliverLocked(e)
	}
}

func (s *Server) heartbeat() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopHB:
			return
		case <-t.C:
			s.mu.Lock()
			if !s.closed {
				up := time.Since(s.started)
				e := s.newEventLocked("HEARTBEAT", "", callingOf["HEARTBEAT"])
				e.add("Event-Info", "System Ready").
					add("Up-Time", upTime(up)).
					add("FreeSWITCH-Version", "1.10.12-release~64bit").
					add("Uptime-msec", strconv.FormatInt(up.Milliseconds(), 10)).
					add("Session-Count", strconv.Itoa(len(s.chans))).
					add("Max-Sessions", "100").
					add("Session-Per-Sec", "30").
					add("Session-Per-Sec-Last", "0").
					add("Session-Per-Sec-Max", strconv.Itoa(s.peak)).
					add("Session-Per-Sec-FiveMin", strconv.Itoa(s.peak)).
					add("Session-Since-Startup", strconv.Itoa(s.sessions)).
					add("Session-Peak-Max", strconv.Itoa(s.peak)).
					add("Session-Peak-FiveMin", strconv.Itoa(s.peak)).
					add("Idle-CPU", "99.000000")
				s.fireLocked(e)
			}
			s.mu.Unlock()
		}
	}
}

func upTime(d time.Duration) string {
	return fmt.Sprintf("0 years, %d days, %d hours, %d minutes, %d seconds, %d milliseconds, %d microseconds",
		int(d/(24*time.Hour)), int(d/time.Hour)%24, int(d/time.Minute)%60, int(d/time.Second)%60,
		int(d/time.Millisecond)%1000, int(d/time.Microsecond)%1000)
}

// shutdown is a FreeSWITCH stop and start. Graceful (fsctl shutdown,
// SIGTERM: recordings g_shutdown_fsctl/sigterm): SHUTDOWN, every call hung up
// with SYSTEM_SHUTDOWN, rooms destroyed, "The system is being shut down."
// to every socket, EOF. Hard (SIGKILL): just EOF. Either way the process
// that answers next has no calls, a new Core-UUID and counters from zero.
func (s *Server) shutdown(graceful bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if graceful {
		e := s.newEventLocked("SHUTDOWN", "", callingOf["SHUTDOWN"])
		e.add("Event-Info", "System Shutting Down")
		s.fireLocked(e)
		for _, u := range append([]string(nil), s.chanOrder...) {
			if ch := s.chans[u]; ch != nil {
				s.hangupLocked(ch, "SYSTEM_SHUTDOWN", hangShutdown)
			}
		}
		for _, c := range s.conns {
			c.finish(disconnectNotice(shutdownText, ""))
		}
	} else {
		for _, c := range s.conns {
			c.close()
		}
		for _, ch := range s.chans {
			for _, t := range ch.timers {
				t.Stop()
			}
			ch.gone = true
		}
	}
	s.resetLocked()
}

// ---- fault injection ----------------------------------------------------

// DropConnections closes every client socket at once (no notice); calls
// carry on, as when the network between convoice and FreeSWITCH breaks.
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.close()
	}
}

// SetUnresponsive makes the emulator stop reading commands and writing
// anything (replies, events, auth/request for new sockets) without closing
// sockets: a hung FreeSWITCH. Calls keep running; queued output is written
// when it wakes up.
func (s *Server) SetUnresponsive(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.hang.Set(on)
	}
}

// SetPartitioned cuts the network between the clients and FreeSWITCH
// without closing anything: it is SetUnresponsive under the name tests
// use. While on, sockets stay open and nothing is read or written —
// replies, events, the HEARTBEAT, and for a socket connected meanwhile even
// its auth/request (TCP is accepted, nothing is ever answered until the
// partition ends). Calls, phone scripts and timers go on; what the
// sockets missed is written, in order, when the partition ends.
func (s *Server) SetPartitioned(on bool) { s.SetUnresponsive(on) }

// Restart is a graceful FreeSWITCH restart (SIGTERM), as recorded.
func (s *Server) Restart() { s.shutdown(true) }

// RestartHard is a crash and restart (SIGKILL): sockets just close.
func (s *Server) RestartHard() { s.shutdown(false) }

// SetRudeRejection makes new connections be refused by the ACL:
// text/rude-rejection, a disconnect notice, EOF.
func (s *Server) SetRudeRejection(on bool) {
	s.mu.Lock()
	s.rude = on
	s.mu.Unlock()
}

// ErrNoChannel: the emulator has no such channel.
var ErrNoChannel = errors.New("eslemu: no such channel")

// FarEndHangup makes the phone of an answered call hang up (BYE, cause
// NORMAL_CLEARING, as the "0200" phone does), or refuse a ringing one
// (603, CALL_REJECTED).
func (s *Server) FarEndHangup(uuid string) error {
	return s.onChannel(uuid, func(ch *channel) {
		if ch.answered.IsZero() {
			ch.phone.Outcome = emuphone.Reject
			s.farEndLocked(ch)
			return
		}
		s.hangupLocked(ch, "NORMAL_CLEARING", hangBye)
	})
}

// SetTalking makes the phone of a channel speak or fall silent; in a room
// the member gets start-talking / stop-talking.
func (s *Server) SetTalking(uuid string, on bool) error {
	return s.onChannel(uuid, func(ch *channel) {
		ch.speaking = on
		if ch.member != nil {
			s.talkLocked(ch.member, false)
		}
	})
}

// onChannel runs f under the lock on a live channel, for the fault
// injections; ErrNoChannel when there is none.
func (s *Server) onChannel(uuid string, f func(*channel)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.chans[uuid]
	if ch == nil {
		return ErrNoChannel
	}
	f(ch)
	return nil
}

// SendRaw writes raw bytes to every authenticated socket, in order with
// its other output (for robustness tests of clients).
func (s *Server) SendRaw(frame string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		if c.authed {
			c.send(frame)
		}
	}
}

// SendUnknownContentType sends a well-formed frame of a Content-Type no
// client knows.
func (s *Server) SendUnknownContentType() {
	body := "this frame has a content type nobody knows\n"
	s.SendRaw("Content-Type: text/x-convoice-unknown\nContent-Length: " + strconv.Itoa(len(body)) + "\n\n" + body)
}

// SendTruncatedFrame sends an event whose body is shorter than its
// Content-Length, then closes the socket: the client sees the frame cut.
func (s *Server) SendTruncatedFrame() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		if c.authed {
			c.finish("Content-Length: 500\nContent-Type: text/event-json\n\n{\"Event-Name\":\"CHANNEL_ANS")
		}
	}
}

// ---- inspection -----------------------------------------------------------

// Channel is the emulator's view of one call.
type Channel struct {
	UUID       string
	Name       string
	DialString string
	// State is the Answer-State: ringing, early, answered.
	State      string
	CallState  string
	Answered   bool
	Conference string // room it is in, "" when not in one
	MemberID   int
	Muted      bool
	Deaf       bool
	Talking    bool
	Variables  map[string]string
}

// Conference is one room and its members (join order).
type Conference struct {
	Name    string
	Profile string
	UUID    string
	Locked  bool
	Members []Member
}

// Member is one participant of a room.
type Member struct {
	ID      int
	UUID    string
	Muted   bool
	Deaf    bool
	Talking bool
}

// Channels lists live channels in creation order.
func (s *Server) Channels() []Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Channel, 0, len(s.chanOrder))
	for _, u := range s.chanOrder {
		ch := s.chans[u]
		c := Channel{UUID: ch.uuid, Name: ch.name, DialString: ch.dial, State: ch.answer,
			CallState: ch.callState, Answered: !ch.answered.IsZero(), Variables: map[string]string{}}
		for k, v := range ch.vars.vals {
			c.Variables[k] = v
		}
		if m := ch.member; m != nil {
			c.Conference, c.MemberID, c.Muted, c.Deaf, c.Talking = m.conf.name, m.id, m.muted, m.deaf, m.talking
		}
		out = append(out, c)
	}
	return out
}

// Conferences lists the rooms in creation order.
func (s *Server) Conferences() []Conference {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Conference, 0, len(s.confOrder))
	for _, n := range s.confOrder {
		c := s.confs[n]
		cc := Conference{Name: c.name, Profile: c.profile, UUID: c.uuid, Locked: c.locked}
		for _, m := range c.members {
			cc.Members = append(cc.Members, Member{ID: m.id, UUID: m.ch.uuid, Muted: m.muted, Deaf: m.deaf, Talking: m.talking})
		}
		out = append(out, cc)
	}
	return out
}

// Commands lists every api and bgapi command received, in order, as sent
// ("api uuid_kill …", "bgapi originate …").
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}
