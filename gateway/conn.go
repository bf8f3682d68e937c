package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
	"github.com/storegate/storegate/gateway/tlspeek"
)

// clientConn is one accepted connection, tracked from accept to close so that
// shutdown (and a policy with reload.established: close) can reach it after
// it has become a tunnel.
type clientConn struct {
	c      net.Conn
	client netip.AddrPort
	// certOK: the client authenticated on the TLS listener with a certificate
	// whose subject is allowed; tunnels then need no second check inside.
	certOK bool

	mu     sync.Mutex
	up     net.Conn
	host   string
	port   int
	closed bool
}

func (cc *clientConn) setTunnel(up net.Conn, host string, port int) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.up, cc.host, cc.port = up, host, port
	return !cc.closed
}

func (cc *clientConn) target() (string, int) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.up == nil {
		return "", 0
	}
	return cc.host, cc.port
}

func (cc *clientConn) closeBoth() {
	cc.mu.Lock()
	cc.closed = true
	up := cc.up
	cc.mu.Unlock()
	_ = cc.c.Close()
	if up != nil {
		_ = up.Close()
	}
}

// headBufs holds request-head buffers. A buffer is used only while a head is
// read and returned before the tunnel starts, so an open tunnel holds none.
var headBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// putHeadBuf gives a head buffer back, keeping what readHead grew it to.
func putHeadBuf(bp *[]byte, buf []byte) {
	*bp = buf[:0]
	headBufs.Put(bp)
}

// track registers a new connection, enforcing the connection limits.
func (s *Server) track(cc *clientConn, snap *policy.Snapshot) error {
	lim := snap.File.Limits
	a := cc.client.Addr()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return errDraining
	}
	if len(s.conns) >= lim.MaxConnections {
		return errTooManyTotal
	}
	if s.clients[a] >= lim.MaxConnectionsClient {
		return errTooManyClient
	}
	s.conns[cc] = struct{}{}
	s.clients[a]++
	s.stats.active.Add(1)
	return nil
}

func (s *Server) untrack(cc *clientConn) {
	a := cc.client.Addr()
	s.mu.Lock()
	if _, ok := s.conns[cc]; ok {
		delete(s.conns, cc)
		if s.clients[a]--; s.clients[a] <= 0 {
			delete(s.clients, a)
		}
		s.stats.active.Add(-1)
	}
	s.mu.Unlock()
}

// handle serves one accepted connection.
func (s *Server) handle(c net.Conn, viaTLS bool) {
	snap := s.policy.Load()
	cc := &clientConn{c: c, client: addrPortOf(c.RemoteAddr())}
	if err := s.track(cc, snap); err != nil {
		// Refused before reading anything: answer and close. A TLS
		// client cannot read a plain answer (it would report a broken
		// handshake, e.g. a store blaming its certificate when the
		// regional gateway is only full): complete a bounded handshake
		// first when there is room for one.
		if viaTLS {
			s.handshakeForRefusal(cc, snap)
		}
		s.refuse(cc, "", err)
		_ = cc.c.Close()
		return
	}
	tunnelled := false
	defer func() {
		if !tunnelled {
			s.untrack(cc) // a tunnel untracks itself when it ends
		}
	}()

	lim := snap.File.Limits
	_ = c.SetReadDeadline(s.cfg.Now().Add(lim.HeaderTimeout.D()))

	if viaTLS {
		if err := s.tlsHandshake(cc, snap); err != nil {
			_ = c.Close()
			return
		}
	}

	bp := headBufs.Get().(*[]byte)
	buf, n, err := readHead(cc.c, (*bp)[:0], int(lim.MaxHeaderBytes))
	if err != nil {
		putHeadBuf(bp, buf)
		var he *headError
		if errors.As(err, &he) {
			s.refuse(cc, "", err)
		} // else the client went away (EOF, reset) before a request: nothing to answer
		_ = cc.c.Close()
		return
	}
	var h requestHead
	if err := parseHead(buf[:n], lim.MaxHeaders, &h); err != nil {
		s.refuse(cc, "", err)
		putHeadBuf(bp, buf)
		_ = cc.c.Close()
		return
	}
	if string(h.method) != "CONNECT" {
		s.handleOther(cc, &h, buf, bp)
		return
	}
	target := string(h.target) // one allocation, kept for events; host is a piece of it
	hostb, port, err := parseAuthority(h.target)
	var host string
	if err == nil {
		off := 0
		if target[0] == '[' {
			off = 1 // parseAuthority returns an IPv6 literal without its brackets
		}
		if host, err = canonicalHost(target[off : off+len(hostb)]); err != nil {
			err = errBadAuthority
		}
	}
	var early []byte
	if n < len(buf) {
		early = append([]byte(nil), buf[n:]...) // bytes sent before the 200
	}
	// Nothing may point into buf after this.
	putHeadBuf(bp, buf)
	if err != nil {
		s.refuse(cc, target, err)
		_ = cc.c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	tunnelled = s.connect(cc, snap, host, port, target, early)
}

// readHead reads until the end of the request head. It returns the buffer
// (grown as needed up to limit), the head's length, and an error.
func readHead(c net.Conn, buf []byte, limit int) ([]byte, int, error) {
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= limit {
				return buf, 0, errHeadTooLarge
			}
			nb := make([]byte, len(buf), min(limit, 2*cap(buf)))
			copy(nb, buf)
			buf = nb
		}
		m, err := c.Read(buf[len(buf):min(cap(buf), limit)])
		start := max(0, len(buf)-3)
		buf = buf[:len(buf)+m]
		if m > 0 {
			if end := headEnd(buf[start:]); end >= 0 {
				return buf, start + end, nil // within limit: reads never pass it
			}
			if len(buf) >= limit {
				return buf, 0, errHeadTooLarge
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return buf, len(buf), errHeaderTimeout
			}
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				return buf, len(buf), errTruncatedHead
			}
			return buf, len(buf), err
		}
	}
}

// canonicalHost puts a CONNECT host in the form the policy compares: an IP
// literal unmapped and printed plainly, a name through policy.NormalizeHost.
// A name already canonical is returned as it is, without allocating.
func canonicalHost(h string) (string, error) {
	// netip.ParseAddr accepts only dotted digits or a literal with a colon;
	// on a name it fails, and its error costs allocations per CONNECT.
	if strings.IndexByte(h, ':') >= 0 || strings.Trim(h, "0123456789.") == "" {
		if a, err := netip.ParseAddr(h); err == nil {
			if a.Zone() != "" {
				return "", errBadAuthority
			}
			return a.Unmap().String(), nil
		}
	}
	return policy.NormalizeHost(h)
}

func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// connect decides and dials, answers 200, runs the handshake checks, and
// starts the tunnel's copy. It reports whether a tunnel was started (which
// then untracks itself when it ends).
func (s *Server) connect(cc *clientConn, snap *policy.Snapshot, host string, port int, target string, early []byte) bool {
	start := s.cfg.Now()
	origin, literal, err := snap.CheckTarget(host, port)
	if err != nil {
		s.refuse(cc, target, err)
		_ = cc.c.Close()
		return false
	}
	lim := snap.File.Limits
	ctx, cancel := context.WithTimeout(context.Background(), lim.DialTimeout.D()+snap.File.Link.Hold.D())
	up, via, err := s.dialTarget(ctx, snap, host, port, literal)
	cancel()
	if err != nil {
		s.refuse(cc, target, err)
		_ = cc.c.Close()
		return false
	}
	if !cc.setTunnel(up, host, port) {
		_ = up.Close()
		_ = cc.c.Close()
		return false
	}
	s.stats.tunnels.Add(1)
	if _, err := io.WriteString(cc.c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		cc.closeBoth()
		return false
	}
	t := &tunnel{cc: cc, up: up, target: target, origin: origin, via: via, start: start,
		summary: policy.On(snap.File.Events.Tunnels, true)}
	if policy.On(snap.File.TLS.Inspect, true) {
		var ok bool
		if t.upBytes, t.downBytes, ok = s.inspect(cc, up, snap, host, port, early); !ok {
			cc.closeBoth()
			return false
		}
	} else if len(early) > 0 {
		if _, err := up.Write(early); err != nil {
			cc.closeBoth()
			return false
		}
		t.upBytes = int64(len(early))
	}
	if pc, ok := t.up.(*prefixConn); ok {
		// The relay sent tunnel bytes along with its 200 (a server that
		// speaks first). Hand the client what is left of them, then copy
		// between the bare connections: that path splices, and the idle
		// sweeper can read the socket's TCP_INFO.
		if rest := pc.buffered(); len(rest) > 0 {
			if _, err := cc.c.Write(rest); err != nil {
				cc.closeBoth()
				return false
			}
			t.downBytes += int64(len(rest))
		}
		t.up = pc.Conn
		if !cc.setTunnel(t.up, host, port) {
			cc.closeBoth()
			return false
		}
	}
	s.startTunnel(t)
	return true
}

// handshakeForRefusal completes the TLS handshake of a connection that is
// about to be refused, so the refusal goes out inside TLS; cc.c becomes the
// TLS connection. It gives up at once when refusalHandshakes are already
// running, and after refusalHandshakeTimeout.
func (s *Server) handshakeForRefusal(cc *clientConn, snap *policy.Snapshot) {
	select {
	case s.refusalTLS <- struct{}{}:
		defer func() { <-s.refusalTLS }()
	default:
		return
	}
	if tc, err := s.serverHandshake(cc, min(snap.File.Limits.HeaderTimeout.D(), refusalHandshakeTimeout)); err == nil {
		cc.c = tc
	}
}

// serverHandshake runs the TLS listener's side of a handshake on cc within
// timeout.
func (s *Server) serverHandshake(cc *clientConn, timeout time.Duration) (*tls.Conn, error) {
	cfg := s.tlsCfg.Load()
	if cfg == nil {
		return nil, errors.New("no TLS configuration")
	}
	tc := tls.Server(newBatchConn(cc.c), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return tc, tc.HandshakeContext(ctx)
}

// tlsHandshake completes the TLS listener's handshake and checks the client
// certificate's subject against allowed_client_certificates.
func (s *Server) tlsHandshake(cc *clientConn, snap *policy.Snapshot) error {
	tc, err := s.serverHandshake(cc, snap.File.Limits.HeaderTimeout.D())
	if err != nil {
		s.stats.rejections.Add(1)
		s.countRefusal("tls listener: handshake")
		s.emit.Emit(events.NotAllowed, "TLS listener handshake failed",
			events.Str(events.KeyClient, cc.client.String()), events.Str(events.KeyError, err.Error()))
		return err
	}
	st := tc.ConnectionState()
	countHandshake(&s.stats.listenerTLS, st.DidResume)
	if len(st.PeerCertificates) > 0 {
		crt := st.PeerCertificates[0]
		subj := snap.ClientSubjects()
		seen := tlspeek.ClientCertOf(crt) // the same form the in-tunnel check compares
		if _, ok := subj.Match(seen); subj.Len() > 0 && !ok {
			s.stats.rejections.Add(1)
			s.countRefusal("tls listener: client certificate")
			s.emit.Emit(events.NotAllowed, "client certificate not allowed: "+seen.Subject,
				events.Str(events.KeyClient, cc.client.String()), events.Str(events.KeySubject, seen.Subject))
			const body = "client certificate not allowed\n"
			_, _ = io.WriteString(tc, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 31\r\n\r\n"+body)
			return errors.New("client certificate not allowed")
		}
		cc.certOK = subj.Len() > 0
	}
	cc.c = tc
	return nil
}
