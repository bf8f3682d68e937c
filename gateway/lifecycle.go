package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// listener is one open listening socket and what serves it.
type listener struct {
	role  string // "proxy", "tls" or "admin"
	addr  string
	ln    net.Listener
	admin *http.Server
}

// Addr returns the address a role listens on ("proxy", "tls", "admin"), or
// nil when that listener is not open. Tests use it with port 0 policies.
func (s *Server) Addr(role string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[role]; l != nil {
		return l.ln.Addr()
	}
	return nil
}

func listenAddrs(f *policy.File) map[string]string {
	m := map[string]string{"proxy": net.JoinHostPort(f.ListenAddress, strconv.Itoa(f.ListenPort))}
	if f.TLSListener.Port != 0 {
		m["tls"] = net.JoinHostPort(f.ListenAddress, strconv.Itoa(f.TLSListener.Port))
	}
	if f.AdminAddress != "off" {
		m["admin"] = f.AdminAddress
	}
	return m
}

// Apply puts snap in force. Listeners whose address changed are opened before
// the old ones close, so a moved port never has a gap; if a new listener cannot
// be opened, nothing changes and the error says why. New connections see snap
// at once; open tunnels keep running (see Reload.Established).
func (s *Server) Apply(snap *policy.Snapshot) error {
	want := listenAddrs(snap.File)
	tlsCfg, err := listenerTLS(snap)
	if err != nil {
		return err
	}
	relayState, err := loadRelayTLS(snap)
	if err != nil {
		return err
	}

	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return ErrDraining
	}
	opened := map[string]*listener{}
	for role, addr := range want {
		if old := s.listeners[role]; old != nil && (old.addr == addr || old.ln.Addr().String() == addr) {
			continue
		}
		lc := net.ListenConfig{KeepAlive: tcpKeepAlive}
		ln, err := lc.Listen(context.Background(), listenNetwork(addr), addr)
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			s.mu.Unlock()
			key := map[string]string{"proxy": "listen_port", "tls": "tls_listener.port", "admin": "admin_address"}[role]
			return fmt.Errorf("%s: cannot listen on %s: %w", key, addr, unwrapOpErr(err))
		}
		opened[role] = &listener{role: role, addr: addr, ln: ln}
	}
	if tlsCfg != nil {
		s.tlsCfg.Store(tlsCfg)
	}
	s.relayTLS.Store(relayState)
	prev := s.policy.Swap(snap)
	var closing []*listener
	for role := range s.listeners {
		if _, keep := want[role]; !keep {
			closing = append(closing, s.listeners[role])
			delete(s.listeners, role)
		}
	}
	for role, l := range opened {
		if old := s.listeners[role]; old != nil {
			closing = append(closing, old)
		}
		s.listeners[role] = l
		s.serve(l)
	}
	s.updateSelfAddrsLocked()
	if s.idleDone == nil {
		s.idleDone = make(chan struct{})
		go s.sweepIdle(s.idleDone)
	}
	s.mu.Unlock()

	for _, l := range closing {
		l.close()
	}
	if prev != nil && snap.File.Reload.Established == "close" {
		s.closeDisallowed(snap)
	}
	if s.cfg.OnApply != nil {
		s.cfg.OnApply(snap)
	}
	return nil
}

// listenNetwork keeps an IPv4 listen address IPv4-only: 0.0.0.0 means the
// IPv4 interfaces, as a user expects; "::" is dual-stack.
func listenNetwork(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "tcp"
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return "tcp4"
	}
	return "tcp"
}

func unwrapOpErr(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
		return oe.Err
	}
	return err
}

func (l *listener) close() {
	if l.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = l.admin.Shutdown(ctx)
		return
	}
	_ = l.ln.Close()
}

// serve starts the accept loop of l. s.mu is held.
func (s *Server) serve(l *listener) {
	if l.role == "admin" {
		l.admin = &http.Server{
			Handler:           s.AdminHandler(),
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       30 * time.Second,
			MaxHeaderBytes:    16 << 10,
		}
		go func() { _ = l.admin.Serve(l.ln) }()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.acceptLoop(l)
	}()
}

func (s *Server) acceptLoop(l *listener) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: pause instead of spinning, then retry.
			s.stats.errors.Add(1)
			s.emit.Emit(events.OtherError, "accept failed; pausing", events.Str(events.KeyListen, l.addr), events.Str(events.KeyError, err.Error()))
			time.Sleep(backoff)
			if backoff < time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 5 * time.Millisecond
		go s.handle(c, l.role == "tls")
	}
}

// selfSet is where the gateway listens, so a CONNECT to the gateway itself
// is refused instead of looping.
type selfSet struct {
	exact     []netip.AddrPort
	wildPorts []uint16     // ports of listeners bound to 0.0.0.0 or ::
	ifAddrs   []netip.Addr // this host's addresses, for wildcard listeners
}

func (ss *selfSet) has(ap netip.AddrPort) bool {
	a, port := ap.Addr().Unmap(), ap.Port()
	for _, x := range ss.exact {
		if x.Addr() == a && x.Port() == port {
			return true
		}
	}
	for _, wp := range ss.wildPorts {
		if wp != port {
			continue
		}
		if a.IsLoopback() || a.IsUnspecified() {
			return true
		}
		for _, ia := range ss.ifAddrs {
			if ia == a {
				return true
			}
		}
	}
	return false
}

// updateSelfAddrsLocked recomputes the selfSet. s.mu is held.
func (s *Server) updateSelfAddrsLocked() {
	ss := &selfSet{}
	for _, l := range s.listeners {
		ap, err := netip.ParseAddrPort(l.ln.Addr().String())
		if err != nil {
			continue
		}
		if ap.Addr().IsUnspecified() {
			ss.wildPorts = append(ss.wildPorts, ap.Port())
			if ss.ifAddrs == nil {
				ss.ifAddrs = interfaceAddrs()
			}
			continue
		}
		ss.exact = append(ss.exact, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	s.self.Store(ss)
}

func interfaceAddrs() []netip.Addr {
	var out []netip.Addr
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

func (s *Server) isSelf(ap netip.AddrPort) bool {
	ss := s.self.Load()
	return ss != nil && ss.has(ap)
}

// CheckFiles loads the certificates, keys and CA files a policy names (the
// TLS listener's, the relay's, tls.ca_file) as putting it in force would, so
// `storegate policy check` and the management commands refuse a policy that
// `run` or a reload would refuse. Errors name the policy key.
func CheckFiles(snap *policy.Snapshot) error {
	if _, err := listenerTLS(snap); err != nil {
		return err
	}
	if _, err := loadRelayTLS(snap); err != nil {
		return err
	}
	_, err := LoadRoots(snap)
	return err
}

// listenerTLS loads the TLS listener's certificate and client CA.
func listenerTLS(snap *policy.Snapshot) (*tls.Config, error) {
	l := snap.File.TLSListener
	if l.Port == 0 {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls_listener.cert_file: %v", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if l.ClientCAFile != "" {
		pool, err := loadPool(l.ClientCAFile, "tls_listener.client_ca_file")
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadPool(file, key string) (*x509.CertPool, error) {
	_, pool, err := readPEMPool(file, key)
	return pool, err
}

// readPEMPool reads a PEM file of certificates: its bytes and a pool of
// them. Errors name the policy key.
func readPEMPool(file, key string) ([]byte, *x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", key, unwrapPathErrGw(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("%s: %s holds no PEM certificate", key, file)
	}
	return pem, pool, nil
}

func unwrapPathErrGw(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %v", pe.Path, pe.Err)
	}
	return err
}

// Shutdown stops accepting, lets open tunnels finish until ctx ends, then
// closes what is left. It returns how many connections it had to cut.
func (s *Server) Shutdown(ctx context.Context) (cut int) {
	s.mu.Lock()
	if s.idleDone != nil && !s.draining {
		close(s.idleDone)
	}
	s.draining = true
	ls := s.listeners
	s.listeners = map[string]*listener{}
	spool := s.spoolSrv
	s.mu.Unlock()
	for _, l := range ls {
		if l.role == "admin" {
			// Kept open while tunnels drain, so a load balancer reads 503
			// on /readyz instead of a refused connection.
			defer l.close()
			continue
		}
		l.close()
	}
	s.wg.Wait() // accept loops have returned
	spoolDone := make(chan struct{})
	go func() {
		defer close(spoolDone)
		if spool != nil {
			// Submissions in flight finish (they answer 202 only once on
			// disk); idle keep-alive connections close now.
			if spool.Shutdown(ctx) != nil {
				_ = spool.Close()
			}
		}
	}()
	defer func() { <-spoolDone }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.closeBoth()
				cut++
			}
			s.mu.Unlock()
			return cut
		case <-tick.C:
		}
	}
}

// closeDisallowed closes open tunnels whose target snap no longer allows.
func (s *Server) closeDisallowed(snap *policy.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		host, port := c.target()
		if host == "" {
			continue
		}
		if _, _, err := snap.CheckTarget(host, port); err != nil {
			c.closeBoth()
			s.emit.Emit(events.NotAllowed, "tunnel closed: the new policy no longer allows its target",
				events.Str(events.KeyClient, c.client.String()), events.Str(events.KeyTarget, net.JoinHostPort(host, strconv.Itoa(port))),
				events.Str(events.KeyReason, err.Error()))
		}
	}
}
