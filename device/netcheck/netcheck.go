// Package netcheck runs the console's "check HOST[:PORT]" diagnosis: resolve,
// connect through the gateway's configured path, TLS handshake, each step timed.
package netcheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is the port checked when the target names none.
const DefaultPort = 443

// Step names, in the order they run.
const (
	StepResolve = "resolve"
	StepConnect = "connect"
	StepTLS     = "tls"
	StepVerify  = "verify"
)

// Config is what a check needs from the gateway. The zero value checks a
// direct path with the system resolver and system roots.
type Config struct {
	// Dial opens a TCP connection to host:port the way the gateway would (directly
	// or through its relay). Nil means a direct net.Dialer connection.
	Dial func(ctx context.Context, host string, port int) (net.Conn, error)
	// Via describes the path for the report ("direct", "relay http://proxy:3128").
	// Empty means "direct". It must not contain credentials.
	Via string
	// Resolve looks a name up. Nil means net.DefaultResolver.LookupNetIP.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Roots are extra trust anchors (the policy's tls.ca_file); a chain that
	// verifies against either the system roots or these is accepted. Nil means
	// system roots only.
	Roots *x509.CertPool
	// SystemRoots overrides the system pool (tests); nil means x509.SystemCertPool.
	SystemRoots *x509.CertPool
	// Now is the clock used for timings and certificate validity; nil means time.Now.
	Now func() time.Time
	// Timeout bounds each step; zero means 10 seconds.
	Timeout time.Duration
}

// Step is the outcome of one stage of a check.
type Step struct {
	Name     string
	OK       bool
	Skipped  bool // not run because an earlier step failed
	Detail   string
	Duration time.Duration
}

// Report is the whole check. OK is true only when every step succeeded,
// except that a failed local resolve is tolerated on a relay path (the relay
// resolves names itself).
type Report struct {
	Host  string
	Port  int
	Via   string
	Steps []Step
	OK    bool
}

// ParseTarget splits "HOST[:PORT]" ("[v6]:port" for IPv6 literals with a
// port), defaulting the port to 443. It accepts DNS names and IP literals only.
func ParseTarget(s string) (host string, port int, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", 0, errors.New("missing host: use check HOST[:PORT]")
	}
	if len(s) > 260 {
		return "", 0, errors.New("target too long")
	}
	host, portStr := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("bad target %q: missing ]", s)
		}
		host, portStr = s[1:end], s[end+1:]
		if portStr != "" {
			if portStr[0] != ':' {
				return "", 0, fmt.Errorf("bad target %q: expected :PORT after ]", s)
			}
			portStr = portStr[1:]
			if portStr == "" {
				return "", 0, fmt.Errorf("bad target %q: empty port", s)
			}
		}
		if _, err := netip.ParseAddr(host); err != nil || !strings.Contains(host, ":") {
			return "", 0, fmt.Errorf("bad target %q: [%s] is not an IPv6 address", s, host)
		}
	case strings.Count(s, ":") == 1:
		i := strings.IndexByte(s, ':')
		host, portStr = s[:i], s[i+1:]
		if portStr == "" {
			return "", 0, fmt.Errorf("bad target %q: empty port", s)
		}
	case strings.Count(s, ":") > 1:
		if _, err := netip.ParseAddr(s); err != nil {
			return "", 0, fmt.Errorf("bad target %q: write IPv6 with a port as [ADDR]:PORT", s)
		}
	}
	port = DefaultPort
	if portStr != "" {
		p, err := strconv.Atoi(portStr)
		if err != nil || p < 1 || p > 65535 || portStr[0] == '+' || portStr[0] == '0' {
			return "", 0, fmt.Errorf("bad port %q: want 1-65535", portStr)
		}
		port = p
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", 0, fmt.Errorf("bad host %q: IPv6 zones are not supported", host)
		}
		return host, port, nil
	}
	if err := validName(host); err != nil {
		return "", 0, fmt.Errorf("bad host %q: %v", host, err)
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), port, nil
}

// validName accepts LDH names (and underscores, which exist in the wild).
func validName(h string) error {
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return errors.New("empty name")
	}
	if len(h) > 253 {
		return errors.New("name longer than 253 characters")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("each label must be 1-63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("a label may not start or end with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed in a host name", c)
			}
		}
	}
	return nil
}

// Run checks host:port step by step and never returns early without saying
// which step failed and why. It respects ctx and Config.Timeout per step.
func Run(ctx context.Context, cfg Config, host string, port int) Report {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	via := cfg.Via
	if via == "" {
		via = "direct"
	}
	relayed := via != "direct"
	r := Report{Host: host, Port: port, Via: via}
	skipRest := func(names ...string) {
		for _, n := range names {
			r.Steps = append(r.Steps, Step{Name: n, Skipped: true, Detail: "skipped"})
		}
	}

	// Resolve.
	start := now()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	addrs, err := resolve(sctx, cfg, host)
	cancel()
	st := Step{Name: StepResolve, Duration: now().Sub(start)}
	if err != nil {
		st.Detail = cleanErr(err)
		if relayed {
			st.Detail += " (the relay resolves names itself; continuing)"
		}
	} else {
		st.OK = true
		st.Detail = joinAddrs(addrs)
	}
	r.Steps = append(r.Steps, st)
	if !st.OK && !relayed {
		skipRest(StepConnect, StepTLS, StepVerify)
		return r
	}
	resolveOK := st.OK

	// Connect.
	start = now()
	sctx, cancel = context.WithTimeout(ctx, timeout)
	conn, err := dial(sctx, cfg, host, port)
	cancel()
	st = Step{Name: StepConnect, Duration: now().Sub(start)}
	if err != nil {
		st.Detail = cleanErr(err)
		r.Steps = append(r.Steps, st)
		skipRest(StepTLS, StepVerify)
		return r
	}
	defer conn.Close()
	st.OK = true
	st.Detail = "via " + via
	if !relayed && conn.RemoteAddr() != nil {
		st.Detail = "to " + conn.RemoteAddr().String()
	}
	r.Steps = append(r.Steps, st)

	// TLS handshake; verification is reported as its own step so a
	// technician sees "the network works, the certificate does not".
	var state tls.ConnectionState
	tc := tls.Client(conn, &tls.Config{
		ServerName:         host,
		InsecureSkipVerify: true, // verified below against system + policy roots
		MinVersion:         tls.VersionTLS12,
		Time:               now,
	})
	start = now()
	sctx, cancel = context.WithTimeout(ctx, timeout)
	err = tc.HandshakeContext(sctx)
	cancel()
	st = Step{Name: StepTLS, Duration: now().Sub(start)}
	if err != nil {
		st.Detail = cleanErr(err)
		r.Steps = append(r.Steps, st)
		skipRest(StepVerify)
		return r
	}
	state = tc.ConnectionState()
	st.OK = true
	st.Detail = tls.VersionName(state.Version) + " " + tls.CipherSuiteName(state.CipherSuite)
	r.Steps = append(r.Steps, st)

	start = now()
	detail, err := verify(cfg, host, state, now())
	st = Step{Name: StepVerify, Duration: now().Sub(start), Detail: detail}
	if err != nil {
		st.Detail = cleanErr(err)
	} else {
		st.OK = true
	}
	r.Steps = append(r.Steps, st)
	_ = tc.Close()
	r.OK = st.OK && (resolveOK || relayed)
	return r
}

func resolve(ctx context.Context, cfg Config, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	var addrs []netip.Addr
	var err error
	if cfg.Resolve != nil {
		addrs, err = cfg.Resolve(ctx, host)
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	return addrs, err
}

func dial(ctx context.Context, cfg Config, host string, port int) (net.Conn, error) {
	if cfg.Dial != nil {
		return cfg.Dial(ctx, host, port)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
}

func verify(cfg Config, host string, st tls.ConnectionState, now time.Time) (string, error) {
	if len(st.PeerCertificates) == 0 {
		return "", errors.New("server sent no certificate")
	}
	leaf := st.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	// x509 matches IP SANs when DNSName is an IP literal, so host serves for both.
	opts := x509.VerifyOptions{DNSName: host, Intermediates: inter, CurrentTime: now}
	system := cfg.SystemRoots
	if system == nil {
		var err error
		if system, err = x509.SystemCertPool(); err != nil {
			system = nil
		}
	}
	var firstErr error
	for _, c := range []struct {
		name string
		pool *x509.CertPool
	}{{"system roots", system}, {"policy tls.ca_file", cfg.Roots}} {
		if c.pool == nil {
			continue
		}
		opts.Roots = c.pool
		if _, err := leaf.Verify(opts); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		return fmt.Sprintf("%s, expires %s, by %s", subjectName(leaf), leaf.NotAfter.UTC().Format("2006-01-02"), c.name), nil
	}
	if firstErr == nil {
		firstErr = errors.New("no trust anchors available")
	}
	return "", fmt.Errorf("%s: %w", subjectName(leaf), firstErr)
}

func subjectName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	if len(c.DNSNames) > 0 {
		return "DNS:" + c.DNSNames[0]
	}
	return c.Subject.String()
}

func joinAddrs(addrs []netip.Addr) string {
	const max = 4
	var b strings.Builder
	for i, a := range addrs {
		if i == max {
			fmt.Fprintf(&b, " (+%d more)", len(addrs)-max)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a.String())
	}
	return b.String()
}

// cleanErr shortens Go's wrapped network errors to what a technician needs.
func cleanErr(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsNotFound {
			return "no such host " + dnsErr.Name
		}
		if dnsErr.IsTimeout {
			return "DNS timed out for " + dnsErr.Name
		}
		return "DNS error: " + dnsErr.Err
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		msg := opErr.Err.Error()
		if opErr.Addr != nil {
			msg = opErr.Addr.String() + ": " + msg
		}
		return strings.TrimPrefix(msg, "connect: ")
	}
	return err.Error()
}
