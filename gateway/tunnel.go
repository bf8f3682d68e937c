package gateway

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// tunnel is an established CONNECT tunnel.
type tunnel struct {
	cc        *clientConn
	up        net.Conn
	target    string
	origin    string
	via       string
	start     time.Time
	summary   bool
	upBytes   int64 // handshake bytes, then the copy's; written before pending drops
	downBytes int64
	pending   atomic.Int32
}

// startTunnel copies bytes both ways until both directions have ended, then
// closes both connections, counts the bytes and writes the summary event.
//
// Between two plain TCP connections on Linux each direction is spliceCopy:
// splice(2) through a kernel pipe held only while bytes are in flight, so
// nothing is copied through user space, nothing is allocated per byte, and an
// idle tunnel holds no pipe (see splice_linux.go). That is why nothing wraps
// the connections. Elsewhere it is copyBuffered (copy.go). A direction that
// reaches EOF half-closes its peer, so TCP half-close passes through both
// ways; an error in either ends the tunnel.
//
// Both directions run on fresh goroutines and the connection's goroutine
// returns: its stack grew while it parsed, resolved and dialled, and an idle
// tunnel should hold two small stacks, not that one.
func (s *Server) startTunnel(t *tunnel) {
	t.pending.Store(2)
	go s.copyHalf(t, true)
	go s.copyHalf(t, false)
}

func (s *Server) copyHalf(t *tunnel, upward bool) {
	src, dst := t.up, t.cc.c
	if upward {
		src, dst = t.cc.c, t.up
	}
	n, err, handled := spliceCopy(dst, src)
	if !handled {
		n, err = copyBuffered(dst, src) // TLS listener, TLS relay
	}
	if err != nil {
		t.cc.closeBoth()
	} else if t.pending.Load() == 2 {
		// The other direction still runs: pass the half-close on. (When it
		// has ended too, endTunnel closes both; a shutdown would be wasted.)
		_ = closeWrite(dst)
	}
	if upward {
		t.upBytes += n
	} else {
		t.downBytes += n
	}
	if t.pending.Add(-1) == 0 {
		s.endTunnel(t)
	}
}

func (s *Server) endTunnel(t *tunnel) {
	t.cc.closeBoth()
	s.untrack(t.cc)
	s.stats.bytesUp.Add(uint64(t.upBytes))
	s.stats.bytesDown.Add(uint64(t.downBytes))
	if t.summary {
		s.emit.Emit(events.ConnectReceived, "tunnel closed",
			events.Str(events.KeyClient, t.cc.client.String()),
			events.Str(events.KeyTarget, t.target),
			events.Str(events.KeyDecision, "allowed"),
			events.Str(events.KeyOrigin, t.origin),
			events.Str(events.KeyVia, t.via),
			events.Int(events.KeyBytesUp, t.upBytes),
			events.Int(events.KeyBytesDown, t.downBytes),
			events.Int(events.KeyDurationMS, s.cfg.Now().Sub(t.start).Milliseconds()))
	}
}
