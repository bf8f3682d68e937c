package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/storegate/storegate/gateway/policy"
)

// relaySessions is how many TLS sessions with the relay are kept for
// resumption; there is one relay, so a few cover every server name it has.
const relaySessions = 4

// relayTLSState is the client side of an https:// relay (a regional storegate).
type relayTLSState struct {
	cfg *tls.Config
}

func loadRelayTLS(snap *policy.Snapshot) (*relayTLSState, error) {
	r := snap.File.RelayProxy
	scheme, hostport := snap.RelayAddr()
	if scheme != "https" {
		return nil, nil
	}
	host, _, _ := net.SplitHostPort(hostport) // validated: the address has a port
	// Tunnels to the relay resume the last TLS session, so a regional
	// gateway does not sign and verify certificates for every tunnel of
	// every store. The cache belongs to this configuration: after a reload
	// (a new CA or certificate, perhaps) no session from before is resumed.
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(relaySessions)}
	if r.CAFile != "" {
		pool, err := loadPool(r.CAFile, "relay_proxy.ca_file")
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if r.ClientCertFile != "" {
		cert, err := tls.LoadX509KeyPair(r.ClientCertFile, r.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("relay_proxy.client_cert_file: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &relayTLSState{cfg: cfg}, nil
}

// DialUpstream opens a connection to host:port the way a tunnel would: the
// policy decides first, then the checked address is dialled directly or the
// relay is asked for it. The spool's delivery and the console's check use it.
func (s *Server) DialUpstream(ctx context.Context, host string, port int) (net.Conn, error) {
	snap := s.policy.Load()
	h, err := canonicalHost(host)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", host, err)
	}
	_, literal, err := snap.CheckTarget(h, port)
	if err != nil {
		return nil, err
	}
	c, _, err := s.dialTarget(ctx, snap, h, port, literal)
	return c, err
}

// CheckTarget applies the policy (names, ports, and the address checks of
// literal IPs) without dialling; the spool uses it for submissions.
func (s *Server) CheckTarget(host string, port int) error {
	h, err := canonicalHost(host)
	if err != nil {
		return fmt.Errorf("%q: %v", host, err)
	}
	_, _, err = s.policy.Load().CheckTarget(h, port)
	return err
}

// dialTarget reaches host:port. via names the path for events ("direct" or
// the relay's host:port; never credentials).
func (s *Server) dialTarget(ctx context.Context, snap *policy.Snapshot, host string, port int, literal bool) (net.Conn, string, error) {
	for attempt := 0; ; attempt++ {
		if s.cfg.Link != nil {
			if err := s.cfg.Link.Wait(ctx); err != nil {
				return nil, "", errLinkDown
			}
		}
		var c net.Conn
		var via string
		var err error
		if snap.File.RelayProxy.Address != "" {
			c, via, err = s.dialRelay(ctx, snap, host, port)
		} else {
			c, err = s.dialDirect(ctx, snap, host, port, literal)
			via = "direct"
		}
		s.observe(err)
		// During an outage a CONNECT is held and tried again (Wait above
		// holds it until the link returns or link.hold passes), so a short
		// flap never reaches the agents. Outside an outage a failure is
		// answered at once.
		if err == nil || s.cfg.Link == nil || !s.cfg.Link.Down() || !retryable(err) || ctx.Err() != nil || attempt >= 8 {
			return c, via, err
		}
	}
}

// retryable: failures that say something about the network, not the policy
// or the name.
func retryable(err error) bool {
	var ref *policy.Refusal
	var ue *upstreamError
	if errors.As(err, &ref) {
		return false
	}
	if errors.As(err, &ue) && (ue.what == "host not found" || ue.what == "relay refused") {
		return false
	}
	return true
}

func (s *Server) observe(err error) {
	if s.cfg.Link == nil {
		return
	}
	var ref *policy.Refusal
	if errors.As(err, &ref) {
		return // a policy decision says nothing about the link
	}
	if err != nil && !retryable(err) {
		// The DNS or the relay answered ("host not found", "relay
		// refused"): the link works, whatever it said.
		s.cfg.Link.Observe(nil)
		return
	}
	s.cfg.Link.Observe(err) // the tracker counts refusals, resets and untrusted certificates as answers too
}

// dialDirect resolves once, checks every address, and dials exactly the
// checked addresses, in order, until one answers.
func (s *Server) dialDirect(ctx context.Context, snap *policy.Snapshot, host string, port int, literal bool) (net.Conn, error) {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = s.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			var dnsErr *net.DNSError
			if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				return nil, &upstreamError{status: 502, what: "host not found", err: err}
			}
			return nil, dialFailure(err)
		}
		if len(addrs) == 0 {
			return nil, &upstreamError{status: 502, what: "host not found", err: errors.New("no addresses")}
		}
	}
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
		if s.isSelf(ap) {
			return nil, &policy.Refusal{Reason: policy.ReasonSelf, Detail: ap.String()}
		}
		if literal {
			continue // the entry names this very address
		}
		if err := snap.CheckAddr(a); err != nil {
			return nil, err
		}
	}
	timeout := snap.File.Limits.DialTimeout.D()
	var last error
	for i, a := range addrs {
		// Split what is left of the timeout over the remaining addresses.
		dctx, cancel := context.WithTimeout(ctx, timeout/time.Duration(len(addrs)-i))
		c, err := s.cfg.Dialer.DialContext(dctx, "tcp", netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
		cancel()
		if err == nil {
			return c, nil // Go sets TCP_NODELAY on every TCP connection already
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, dialFailure(last)
}

// relayError is the relay's refusal; it names the relay's status only.
type relayError struct {
	status string
}

func (e *relayError) Error() string { return "relay answered " + e.status }

// dialRelay asks the relay proxy to CONNECT to host:port.
func (s *Server) dialRelay(ctx context.Context, snap *policy.Snapshot, host string, port int) (net.Conn, string, error) {
	r := snap.File.RelayProxy
	scheme, via := snap.RelayAddr()
	dctx, cancel := context.WithTimeout(ctx, snap.File.Limits.DialTimeout.D())
	defer cancel()
	raw, err := s.cfg.Dialer.DialContext(dctx, "tcp", via)
	if err != nil {
		e := dialFailure(err)
		e.what = "relay unreachable"
		return nil, via, e
	}
	c := raw
	if scheme == "https" {
		st := s.relayTLS.Load()
		if st == nil {
			raw.Close()
			return nil, via, dialFailure(errors.New("relay TLS is not configured"))
		}
		tc := tls.Client(newBatchConn(raw), st.cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			var ce *tls.CertificateVerificationError
			what := "relay TLS handshake failed"
			if errors.As(err, &ce) {
				what = "relay certificate not trusted"
			}
			return nil, via, &upstreamError{status: 502, what: what, err: err}
		}
		countHandshake(&s.stats.relayTLS, tc.ConnectionState().DidResume)
		c = tc
	}
	if dl, ok := dctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	header := ""
	if r.Username != "" {
		cred := base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + snap.RelayPassword()))
		header = "Proxy-Authorization: Basic " + cred + "\r\n"
	}
	tunnel, resp, err := ConnectOver(c, host, port, header)
	switch {
	case errors.Is(err, errConnectWrite):
		c.Close()
		return nil, via, dialFailure(err)
	case err != nil:
		c.Close()
		return nil, via, dialFailure(fmt.Errorf("relay: %v", err))
	case resp.StatusCode != 200:
		c.Close()
		return nil, via, &upstreamError{status: 502, what: "relay refused", err: &relayError{status: resp.Status}}
	}
	_ = c.SetDeadline(time.Time{})
	return tunnel, via, nil
}

var errConnectWrite = errors.New("sending CONNECT")

// ConnectOver asks the proxy at the other end of c for a tunnel to
// host:port (header: extra header lines, each ending in CRLF) and reads its
// answer byte-exactly, so no byte of the tunnel is lost in a buffer. On 200
// it returns the tunnel (with any bytes that came with the answer); on any
// other status, the answer with its body unread and c open for the caller
// to report and close.
func ConnectOver(c net.Conn, host string, port int, header string) (net.Conn, *http.Response, error) {
	authority := net.JoinHostPort(host, strconv.Itoa(port))
	req := "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n" + header + "\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errConnectWrite, err)
	}
	br := bufio.NewReaderSize(c, 1024)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp, nil
	}
	resp.Body.Close()
	if br.Buffered() > 0 {
		return &prefixConn{Conn: c, r: br}, resp, nil
	}
	return c, resp, nil
}

// prefixConn is a connection with bytes already read into a buffer.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if p.r != nil {
		if p.r.Buffered() > 0 {
			return p.r.Read(b)
		}
		p.r = nil
	}
	return p.Conn.Read(b)
}

// buffered returns the bytes read but not yet consumed and drops them from
// the buffer; the slice is valid until the next Read.
func (p *prefixConn) buffered() []byte {
	if p.r == nil {
		return nil
	}
	b, _ := p.r.Peek(p.r.Buffered())
	p.r = nil
	return b
}

// CloseWrite half-closes the underlying connection when it supports it.
func (p *prefixConn) CloseWrite() error { return closeWrite(p.Conn) }

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SystemRoots returns the system roots plus the policy's tls.ca_file, for
// connections the gateway makes itself (spool delivery, console check).
func SystemRoots(snap *policy.Snapshot) (*x509.CertPool, error) {
	r, err := LoadRoots(snap)
	if err != nil {
		return nil, err
	}
	return r.WithSystem(), nil
}

// Roots are the certificates of the policy's tls.ca_file, read once. The
// system roots are not loaded until WithSystem asks for them: parsing them
// costs a small box about 1.5 MB that a gateway with nothing to verify
// should not hold.
type Roots struct {
	pem  []byte
	pool *x509.CertPool // the file's certificates alone; nil when tls.ca_file is unset
}

// LoadRoots reads and checks the policy's tls.ca_file (an error names the key).
func LoadRoots(snap *policy.Snapshot) (*Roots, error) {
	f := snap.File.TLS.CAFile
	if f == "" {
		return &Roots{}, nil
	}
	pem, pool, err := readPEMPool(f, "tls.ca_file")
	if err != nil {
		return nil, err
	}
	return &Roots{pem: pem, pool: pool}, nil
}

// Equal reports whether r and o hold the same certificates.
func (r *Roots) Equal(o *Roots) bool {
	if r == nil || o == nil {
		return r == o
	}
	return r.pool.Equal(o.pool)
}

// WithSystem returns a new pool of the system roots plus r's certificates.
func (r *Roots) WithSystem() *x509.CertPool {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if len(r.pem) > 0 {
		pool.AppendCertsFromPEM(r.pem)
	}
	return pool
}
