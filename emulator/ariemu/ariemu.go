// Package ariemu is an emulated Asterisk 22.10.1 speaking ARI (REST and the
// event websocket) on loopback, checked against the recordings.
// It never imports convoice's drivers or controller: only the shared phone
// table (emuphone) and the emulators' scaffolding (internal/emuserver).
//
// It answers like Asterisk 22.10.1 did in the
// recordings of testdata/asterisk (fixtures/asterisk upstream). It lets the
// Asterisk driver be tested, the demo run and benchmarks load a "PBX"
// without an Asterisk on the machine.
//
// What it models is the part of Asterisk convoice touches: Stasis
// applications and their event websockets, mixing bridges, channels
// originated into an application (with the recorded REST answers, event
// sequences, causes and quirks), mute, TALK_DETECT, and the failure modes of
// the recordings (websocket drops, restart, crash, half-open). The far end of
// every call is a scripted phone from emuphone (the contract's last-four-
// digits table plus the lab phones of the recordings). Everything else in the
// ARI description answers 501, so a client never mistakes a missing feature
// for a PBX answer.
//
// State lives under one mutex. Events are encoded once, under that mutex, at
// the moment the state changes, then queued per websocket; one writer
// goroutine per websocket sends them in order. Phone timers are
// time.AfterFunc, so a live channel costs a struct and a timer, not a
// goroutine.
package ariemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convoice/convoice/emulator/emuphone"
	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// Config configures a Server. The zero value works: no auth, contract
// timings, no logging.
type Config struct {
	// User and Password are the ARI credentials, checked on HTTP basic auth
	// and on the websocket's api_key=user:password. Empty User: no auth.
	User, Password string
	// Timing holds ring and hold delays; zero fields take emuphone's
	// defaults.
	Timing emuphone.Timing
	// Logger receives the emulator's logs; nil discards them.
	Logger *slog.Logger
	// OnOriginate is called when an originate request is accepted (the
	// channel exists and the 200 is about to be written), outside the
	// emulator's lock. Benchmarks measure request→originate with it.
	OnOriginate func(channelID string, at time.Time)

	// EventQueue is how many events may wait for one websocket before the
	// emulator gives up on that consumer and closes the socket. Zero means
	// 65536.
	EventQueue int
	// RestartRefused and RestartBooting shape the window after Restart or
	// Crash: connections are refused for RestartRefused, then every request
	// answers 503 "Asterisk not booted" for RestartBooting (recordings f_*:
	// about 0.5 s and 0.25 s). Zero means 600 ms and 400 ms.
	RestartRefused, RestartBooting time.Duration
	// QuietPhones makes answered phones silent until SetTalking(id, true).
	// By default a phone that answers sends audio (the lab carrier's 440 Hz
	// tone), so TALK_DETECT(set) gives ChannelTalkingStarted at once, as in
	// recording h.
	QuietPhones bool
	// MaxRequests bounds the request log kept for Requests (oldest dropped).
	// Zero means 10000; negative means unbounded.
	MaxRequests int
	// EntityID is the asterisk_id / system.entity_id. Empty means the
	// recordings' "02:fc:00:00:00:01".
	EntityID string
}

// ChannelState is the emulator's view of one channel, for tests.
type ChannelState struct {
	ID       string
	Name     string
	Endpoint string
	State    string // "Down", "Ring", "Ringing", "Up"
	App      string
	AppArgs  string
	// InStasis: answered and handed to the application (StasisStart sent).
	InStasis   bool
	BridgeID   string
	MutedIn    bool
	MutedOut   bool
	TalkDetect bool
	// Talking: TALK_DETECT reported ChannelTalkingStarted and no Finished
	// since.
	Talking bool
}

// BridgeState is the emulator's view of one bridge, for tests.
type BridgeState struct {
	ID         string
	Type       string // "mixing" or "holding"
	Name       string
	Technology string
	ChannelIDs []string
}

// Request is one REST request the emulator received, with the status it
// answered (0: never answered, e.g. while unresponsive).
type Request struct {
	Method string
	Path   string // as received, e.g. "/ari/channels/abc"
	Query  string // raw query string
	Body   string
	Status int
	At     time.Time
}

type phase int

const (
	phaseRunning phase = iota
	phaseDown          // listener closed: connection refused
	phaseBooting       // 503 "Asterisk not booted"
)

// Server is one emulated Asterisk.
type Server struct {
	cfg      Config
	log      *slog.Logger
	entityID string

	mu        sync.Mutex
	channels  map[string]*channel
	bridges   map[string]*bridge
	playbacks map[string]*playback
	apps      map[string]*app
	websocks  map[*wsConn]struct{}
	subAll    map[string]int // app → websockets with subscribeAll=true
	seq       uint64         // creation order of channels and bridges
	uniq      int            // Asterisk's uniqueid counter; restarts with Restart
	pjsipSeq  int            // channel name counters per technology
	localSeq  int
	noTalkMod bool     // func_talkdetect.so unloaded (recording k)
	ebuf      []byte   // event encoding scratch, reused under mu
	recip     []string // event recipients scratch, reused under mu
	startup   time.Time
	phase     phase
	closed    bool

	hang    emuserver.Hang // SetUnresponsive
	wsDelay atomic.Int64   // SetWebsocketDelay, ns
	// Delays: SetOriginateDelay (POST /channels answers after it; a
	// DELETE meanwhile is 404 "Channel not found") and SetAnswerDelay.
	emuphone.Delays
	done chan struct{}  // closed by Close
	wg   sync.WaitGroup // websocket loops and the boot goroutine, awaited by Close

	netMu   sync.Mutex
	addr    string
	hs      *http.Server
	started bool

	reqMu sync.Mutex
	reqs  []Request
}

// New makes a Server; Start makes it listen.
func New(cfg Config) *Server {
	if cfg.EventQueue <= 0 {
		cfg.EventQueue = 65536
	}
	if cfg.RestartRefused <= 0 {
		cfg.RestartRefused = 600 * time.Millisecond
	}
	if cfg.RestartBooting <= 0 {
		cfg.RestartBooting = 400 * time.Millisecond
	}
	if cfg.MaxRequests == 0 {
		cfg.MaxRequests = 10000
	}
	entity := cfg.EntityID
	if entity == "" {
		entity = "02:fc:00:00:00:01"
	}
	s := &Server{
		cfg:      cfg,
		log:      emuserver.Logger(cfg.Logger, "ariemu"),
		entityID: entity,
		websocks: map[*wsConn]struct{}{},
		subAll:   map[string]int{},
		done:     make(chan struct{}),
	}
	s.resetLocked(time.Now())
	return s
}

// resetLocked empties the PBX, as a fresh boot does.
func (s *Server) resetLocked(now time.Time) {
	s.channels = map[string]*channel{}
	s.bridges = map[string]*bridge{}
	s.apps = map[string]*app{}
	s.playbacks = map[string]*playback{}
	s.uniq, s.pjsipSeq, s.localSeq = 0, 0, 0
	s.startup = now
}

// ErrClosed is returned by Start on a closed Server.
var ErrClosed = errors.New("ariemu: server closed")

// Start listens on addr (e.g. "127.0.0.1:0") and serves /ari/ in the
// background.
func (s *Server) Start(addr string) error {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	if s.started {
		return errors.New("ariemu: already started")
	}
	select {
	case <-s.done:
		return ErrClosed
	default:
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ariemu: listen %s: %w", addr, err)
	}
	s.started = true
	s.addr = ln.Addr().String()
	s.serveLocked(ln)
	s.log.Info("ARI emulator listening", "url", "http://"+s.addr+"/ari")
	return nil
}

// serveLocked starts an http.Server on ln. A fresh http.Server is used for
// every listen phase because a closed one cannot serve again (Restart).
func (s *Server) serveLocked(ln net.Listener) {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.hs = hs
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("http serve ended", "err", err)
		}
	}()
}

// takeHTTP detaches the http.Server of the current listen phase, for
// Close or a restart to shut it down.
func (s *Server) takeHTTP() *http.Server {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	hs := s.hs
	s.hs = nil
	return hs
}

// Addr is the listening host:port.
func (s *Server) Addr() string {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	return s.addr
}

// URL is the ARI base URL, "http://host:port/ari".
func (s *Server) URL() string {
	return "http://" + s.Addr() + "/ari"
}

// Close stops the server: websockets end, timers stop, listeners close.
// It is safe to call more than once.
func (s *Server) Close() error {
	socks, first := s.closeCalls()
	if !first {
		return nil
	}
	for _, ws := range socks {
		ws.closeNow()
	}
	hs := s.takeHTTP()
	var err error
	if hs != nil {
		// Let requests in flight finish (a blocked one is released by
		// done) so that nothing logs or fires after Close returns.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err = hs.Shutdown(ctx); err != nil {
			err = hs.Close()
		}
		cancel()
	}
	s.wg.Wait()
	return err
}

// closeCalls marks the server closed and stops every phone; it gives the
// websockets to cut, and false when the server was closed already.
func (s *Server) closeCalls() ([]*wsConn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	s.closed = true
	close(s.done)
	s.stopPhonesLocked()
	return s.websocketsLocked(false), true
}

// stopPhonesLocked ends every channel without a word: no event, no timer
// left (Close, Crash).
func (s *Server) stopPhonesLocked() {
	for _, ch := range s.channels {
		ch.stopTimer()
		ch.gone = true
	}
}

// websocketsLocked lists the event websockets, unregistering them first
// when they are about to be cut while the server goes on.
func (s *Server) websocketsLocked(unregister bool) []*wsConn {
	socks := make([]*wsConn, 0, len(s.websocks))
	for ws := range s.websocks {
		socks = append(socks, ws)
		if unregister {
			s.unregisterLocked(ws)
		}
	}
	return socks
}

// Serve runs an emulator on addr until ctx is done (for `convoice emulate
// asterisk`).
func Serve(ctx context.Context, addr string, cfg Config) error {
	return emuserver.Serve(ctx, addr, New(cfg))
}

// Channels lists the live channels in creation order.
func (s *Server) Channels() []ChannelState {
	s.mu.Lock()
	defer s.mu.Unlock()
	chans := s.sortedChannels()
	out := make([]ChannelState, 0, len(chans))
	for _, ch := range chans {
		cs := ChannelState{
			ID: ch.id, Name: ch.name, Endpoint: ch.endpoint, State: ch.state.String(),
			App: ch.app, AppArgs: ch.appArgs, InStasis: ch.inStasis,
			MutedIn: ch.mutedIn, MutedOut: ch.mutedOut, TalkDetect: ch.talkDetect, Talking: ch.talking,
		}
		if ch.bridge != nil {
			cs.BridgeID = ch.bridge.id
		}
		out = append(out, cs)
	}
	return out
}

// Bridges lists the bridges in creation order.
func (s *Server) Bridges() []BridgeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	brs := s.sortedBridges()
	out := make([]BridgeState, 0, len(brs))
	for _, br := range brs {
		ids := make([]string, len(br.members))
		for i, m := range br.members {
			ids[i] = m.id
		}
		out = append(out, BridgeState{ID: br.id, Type: br.typ, Name: br.name, Technology: br.tech, ChannelIDs: ids})
	}
	return out
}

// Requests returns the REST requests received so far (the most recent
// MaxRequests), oldest first.
func (s *Server) Requests() []Request {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	return slices.Clone(s.reqs)
}

// ResetRequests forgets the request log.
func (s *Server) ResetRequests() {
	s.reqMu.Lock()
	s.reqs = nil
	s.reqMu.Unlock()
}

func (s *Server) logRequest(r Request) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	if max := s.cfg.MaxRequests; max > 0 && len(s.reqs) >= max {
		// Drop the oldest half at once so appending stays amortised O(1).
		n := copy(s.reqs, s.reqs[len(s.reqs)-max/2:])
		clear(s.reqs[n:])
		s.reqs = s.reqs[:n]
	}
	s.reqs = append(s.reqs, r)
}

// DropWebsockets ends every event websocket as a bare TCP close (no close
// frame), as when the network drops them (recording m). Calls go on; the
// applications lose their websocket and, if they hold nothing, cease to
// exist.
func (s *Server) DropWebsockets() {
	s.mu.Lock()
	socks := s.websocketsLocked(true)
	s.mu.Unlock()
	for _, ws := range socks {
		ws.closeNow()
	}
	if len(socks) > 0 {
		s.log.Info("dropped event websockets", "count", len(socks))
	}
}

// SetWebsocketDelay holds every new event websocket's handshake for d
// before answering it (0: answer at once), as a loaded Asterisk or a slow
// network would: the time a client is without its event connection after
// it dialed. Connections already up are not touched.
func (s *Server) SetWebsocketDelay(d time.Duration) { s.wsDelay.Store(int64(d)) }

// SetUnresponsive switches half-open mode: while on, TCP connections stay
// open but REST requests are never answered (they are cut when the mode
// ends), websocket pings get no pong and events are held back (sent when the
// mode ends, unless a queue overflows first). Calls go on.
func (s *Server) SetUnresponsive(on bool) {
	if s.hang.Set(on) {
		s.log.Info("unresponsive mode", "on", on)
	}
}

// SetPartitioned cuts the network between the clients and Asterisk
// without closing anything: it is SetUnresponsive under the name tests
// use. While on, REST requests and websocket upgrades — on connections
// already open and on new ones alike (TCP is accepted) — get no answer,
// pings get no pong and events are held; calls and phone scripts go on.
// When it ends, the requests held are cut (their TCP connection closes
// without an answer) and the held events are written, unless a
// websocket's queue (Config.EventQueue) overflowed meanwhile, which closes
// that websocket.
func (s *Server) SetPartitioned(on bool) { s.SetUnresponsive(on) }

// Restart behaves like `core restart now` (recordings f_*): every channel is
// hung up with the recorded events (ChannelHangupRequest cause 4 soft,
// ChannelLeftBridge, StasisEnd, ChannelDestroyed 16; no BridgeDestroyed),
// the websockets end as bare TCP closes once those events are out, then
// connections are refused, then answered 503 "Asterisk not booted", then the
// emulator is back, empty, with channel ids counting from 0 again. Restart
// returns when the websockets are closed and the listener is down; use
// Booted or WaitBooted to know when it is back.
func (s *Server) Restart() { s.restart(true) }

// Crash behaves like Asterisk killed with SIGKILL and started again
// (recording f2): the websockets just end, no event is sent, then the same
// refused / not-booted window as Restart, then an empty PBX.
func (s *Server) Crash() { s.restart(false) }

// Booted reports whether the emulator answers requests normally.
func (s *Server) Booted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase == phaseRunning && !s.closed
}

// WaitBooted waits until the emulator is back after Restart or Crash.
func (s *Server) WaitBooted(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !s.Booted() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return ErrClosed
		case <-t.C:
		}
	}
	return nil
}

// SetTalkDetectLoaded loads or unloads the emulated func_talkdetect.so.
// Without it TALK_DETECT(set) still answers 204 but no talking event ever
// comes (recording k).
func (s *Server) SetTalkDetectLoaded(loaded bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noTalkMod = !loaded
}

// ErrNoChannel is returned by the fault injections for an unknown channel.
var ErrNoChannel = errors.New("ariemu: no such channel")

// FarEndHangup makes the far end of an answered channel send BYE (recording
// j): ChannelHangupRequest without cause, ChannelLeftBridge, StasisEnd,
// ChannelDestroyed 16.
func (s *Server) FarEndHangup(channelID string) error {
	return s.onChannel(channelID, func(ch *channel) error {
		if ch.state != stateUp {
			return fmt.Errorf("ariemu: channel %s is %s: a far end sends BYE only on an answered call", channelID, ch.state)
		}
		s.farEndByeLocked(ch)
		return nil
	})
}

// SetTalking makes the far end of a channel speak (true) or fall silent
// (false). With TALK_DETECT(set) on the channel this gives
// ChannelTalkingStarted at once, or ChannelTalkingFinished once the silence
// threshold has passed (extra/h2); without it, only the phone's state
// changes.
func (s *Server) SetTalking(channelID string, talking bool) error {
	return s.onChannel(channelID, func(ch *channel) error {
		s.setVoice(ch, talking)
		return nil
	})
}

// onChannel runs f under the lock on a live channel, for the fault
// injections; ErrNoChannel when there is none.
func (s *Server) onChannel(channelID string, f func(*channel) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[channelID]
	if ch == nil {
		return fmt.Errorf("%w: %s", ErrNoChannel, channelID)
	}
	return f(ch)
}
