package ariemu

import (
	"net"
	"time"

	"github.com/convoice/convoice/emulator/internal/emuserver"
)

// drainWait bounds how long Restart waits for the hangup events to reach
// the websockets before cutting them.
const drainWait = 500 * time.Millisecond

func (s *Server) restart(graceful bool) {
	s.mu.Lock()
	if s.closed || s.phase != phaseRunning {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1) // the boot goroutine; under mu so that Close cannot be waiting yet
	if graceful {
		for _, ch := range s.sortedChannels() {
			s.shutdownHangupLocked(ch)
		}
	} else {
		s.stopPhonesLocked()
	}
	socks := s.websocketsLocked(true)
	s.phase = phaseDown
	s.resetLocked(time.Now())
	s.mu.Unlock()

	if graceful {
		for _, ws := range socks {
			ws.closeAfterDrain()
		}
		deadline := time.After(drainWait)
	wait:
		for _, ws := range socks {
			select {
			case <-ws.link.Done():
			case <-deadline:
				break wait
			}
		}
	}
	for _, ws := range socks {
		ws.closeNow()
	}

	if hs := s.takeHTTP(); hs != nil {
		hs.Close()
	}
	s.log.Info("emulated Asterisk going down", "graceful", graceful, "websockets_cut", len(socks))
	go func() { defer s.wg.Done(); s.boot() }()
}

// boot brings the emulator back: refused, then 503 "Asterisk not booted",
// then running (recordings f_*).
func (s *Server) boot() {
	if !emuserver.Sleep(s.cfg.RestartRefused, s.done) {
		return
	}
	var ln net.Listener
	for {
		var err error
		ln, err = net.Listen("tcp", s.Addr())
		if err == nil {
			break
		}
		s.log.Warn("restart: listen again failed, retrying", "addr", s.Addr(), "err", err)
		if !emuserver.Sleep(50*time.Millisecond, s.done) {
			return
		}
	}
	s.mu.Lock()
	s.phase = phaseBooting
	s.mu.Unlock()
	s.netMu.Lock()
	select {
	case <-s.done:
		s.netMu.Unlock()
		ln.Close()
		return
	default:
	}
	s.serveLocked(ln)
	s.netMu.Unlock()
	if !emuserver.Sleep(s.cfg.RestartBooting, s.done) {
		return
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.phase = phaseRunning
		s.startup = time.Now()
	}
	s.mu.Unlock()
	if !closed {
		s.log.Info("emulated Asterisk fully booted")
	}
}
