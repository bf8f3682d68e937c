package gateway

import (
	"net"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// sweepIdle closes tunnels in which no data has moved, either way, for
// limits.idle_timeout. One goroutine checks every tunnel now and then instead
// of a timer per tunnel.
//
// It also gives memory back after a burst: when the open connections fall to
// a quarter of their peak, it runs the collector and returns freed pages to
// the OS. (The splice path's pipes are not the collector's: its pipe cache
// closes them itself once quiet, see splice_linux.go.)
func (s *Server) sweepIdle(stop <-chan struct{}) {
	var peak int64
	for {
		snap := s.policy.Load()
		idle := snap.File.Limits.IdleTimeout.D()
		every := min(max(idle/4, 100*time.Millisecond), 30*time.Second)
		select {
		case <-stop:
			return
		case <-time.After(every):
		}
		if n := s.stats.active.Load(); n > peak {
			peak = n
		} else if peak >= 256 && n < peak/4 {
			debug.FreeOSMemory()
			peak = n
		}
		// Copy the list, then ask the kernel without holding the lock that
		// accepting and ending connections need.
		s.mu.Lock()
		open := make([]*clientConn, 0, len(s.conns))
		for cc := range s.conns {
			open = append(open, cc)
		}
		s.mu.Unlock()
		for _, cc := range open {
			cc.mu.Lock()
			up := cc.up
			cc.mu.Unlock()
			if up == nil {
				continue
			}
			a, ok1 := idleFor(cc.c)
			b, ok2 := idleFor(up)
			if !ok1 || !ok2 || a < idle || b < idle {
				continue
			}
			host, port := cc.target()
			cc.closeBoth()
			s.emit.Emit(events.Info, "idle tunnel closed",
				events.Str(events.KeyClient, cc.client.String()),
				events.Str(events.KeyTarget, net.JoinHostPort(host, strconv.Itoa(port))),
				events.Int(events.KeyIdleMS, idle.Milliseconds()))
		}
	}
}
