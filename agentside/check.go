package agentside

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Check step names, in the order they run.
const (
	StepTCP        = "tcp"         // TCP connection to the gateway
	StepGatewayTLS = "gateway-tls" // TLS to an https:// gateway (its TLS listener)
	StepConnect    = "connect"     // CONNECT to the target through the gateway
	StepTLS        = "tls"         // TLS handshake with the target, through the tunnel
	StepVerify     = "verify"      // the target's certificate: chain and name
	StepStatus     = "status"      // GET /spool/v1/status when there is no target
)

// CheckOptions say what to check.
type CheckOptions struct {
	// Gateway is the gateway's proxy listener, http://host:port or
	// https://host:port; user:password in it is sent as Proxy-Authorization.
	// Required.
	Gateway string
	// Target is https://host[:port] or host[:port] (port 443 by default).
	// Empty checks the gateway's spool status instead.
	Target string
	// Roots verify the target's certificate and an https:// gateway's. Nil
	// means the system roots.
	Roots *x509.CertPool
	// Dial opens the TCP connection to the gateway. Nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock for timings and certificate validity; nil means time.Now.
	Now func() time.Time
	// Timeout bounds each step; zero means 10 seconds.
	Timeout time.Duration
}

// CheckStep is the outcome of one step.
type CheckStep struct {
	Name     string
	OK       bool
	Skipped  bool // not run because an earlier step failed
	Detail   string
	Duration time.Duration
}

// CheckReport is a whole check. OK is true when every step succeeded.
type CheckReport struct {
	Gateway string // credentials masked
	Target  string // host:port, or the status URL
	Steps   []CheckStep
	OK      bool
}

// Failed returns the first step that failed.
func (r CheckReport) Failed() (CheckStep, bool) {
	for _, s := range r.Steps {
		if !s.OK && !s.Skipped {
			return s, true
		}
	}
	return CheckStep{}, false
}

// ParseCheckTarget reads https://host[:port] or host[:port] into host and
// port (443 when none is given).
func ParseCheckTarget(s string) (host string, port int, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", 0, errors.New("--to: empty target; want https://host[:port]")
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", 0, fmt.Errorf("--to %q: %v", s, err)
		}
		if u.Scheme != "https" {
			return "", 0, fmt.Errorf("--to %q: want https://host[:port]", s)
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return "", 0, fmt.Errorf("--to %q: give only https://host[:port]", s)
		}
		s = u.Host
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		host, portStr = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "443"
	}
	port, err = strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("--to %q: port %q: want 1-65535", s, portStr)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", 0, fmt.Errorf("--to %q: IPv6 zones are not supported", s)
		}
		return a.String(), port, nil
	}
	if err := checkHostName(host); err != nil || strings.Contains(host, ":") {
		return "", 0, fmt.Errorf("--to %q: bad host %q", s, host)
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), port, nil
}

// Check tests the path a terminal's agents take: TCP to the gateway, then
// either a CONNECT to the target with a verified TLS handshake through the
// tunnel, or the gateway's spool status. It stops at the first failing step
// and says which and why. The error is only for options that make no sense.
func Check(ctx context.Context, o CheckOptions) (CheckReport, error) {
	gw, err := ProxyURL(o.Gateway)
	if err != nil {
		return CheckReport{}, err
	}
	var host string
	var port int
	if o.Target != "" {
		if host, port, err = ParseCheckTarget(o.Target); err != nil {
			return CheckReport{}, err
		}
	}
	c := &checker{o: o, ctx: ctx, now: o.Now, timeout: o.Timeout}
	if c.now == nil {
		c.now = time.Now
	}
	if c.timeout <= 0 {
		c.timeout = 10 * time.Second
	}
	c.r = CheckReport{Gateway: MaskCredentials(gw.String()), Target: "http://" + gw.Host + "/spool/v1/status"}
	if o.Target != "" {
		c.r.Target = net.JoinHostPort(host, strconv.Itoa(port))
	}
	c.run(ctx, gw, host, port)
	_, failed := c.r.Failed()
	c.r.OK = !failed && len(c.r.Steps) > 0
	return c.r, nil
}

type checker struct {
	o       CheckOptions
	ctx     context.Context
	now     func() time.Time
	timeout time.Duration
	r       CheckReport
	start   time.Time
}

func (c *checker) begin(conn net.Conn) {
	c.start = c.now()
	if conn == nil {
		return
	}
	deadline := time.Now().Add(c.timeout)
	if c.ctx.Err() != nil {
		deadline = time.Unix(1, 0) // cancelled: fail the step at once
	}
	_ = conn.SetDeadline(deadline)
}

func (c *checker) end(name string, ok bool, detail string) bool {
	c.r.Steps = append(c.r.Steps, CheckStep{Name: name, OK: ok, Detail: detail, Duration: c.now().Sub(c.start)})
	return ok
}

func (c *checker) skip(names ...string) {
	for _, n := range names {
		c.r.Steps = append(c.r.Steps, CheckStep{Name: n, Skipped: true, Detail: "skipped"})
	}
}

func (c *checker) run(ctx context.Context, gw *url.URL, host string, port int) {
	rest := []string{StepConnect, StepTLS, StepVerify}
	if host == "" {
		rest = []string{StepStatus}
	}
	if gw.Scheme == "https" {
		rest = append([]string{StepGatewayTLS}, rest...)
	}

	dial := c.o.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	c.begin(nil)
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	conn, err := dial(dctx, "tcp", gw.Host)
	cancel()
	if err != nil {
		c.end(StepTCP, false, "gateway "+gw.Host+": "+shortErr(err))
		c.skip(rest...)
		return
	}
	defer func() { conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.end(StepTCP, true, "to "+conn.RemoteAddr().String())

	if gw.Scheme == "https" {
		rest = rest[1:]
		tc := tls.Client(conn, &tls.Config{ServerName: gw.Hostname(), RootCAs: c.o.Roots, MinVersion: tls.VersionTLS12, Time: c.now})
		c.begin(conn)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.end(StepGatewayTLS, false, shortErr(err))
			c.skip(rest...)
			return
		}
		st := tc.ConnectionState()
		c.end(StepGatewayTLS, true, tls.VersionName(st.Version)+", certificate verified")
		conn = tc
	}
	if host == "" {
		c.status(conn, gw)
		return
	}

	target := net.JoinHostPort(host, strconv.Itoa(port))
	c.begin(conn)
	tunnel, detail, ok := connect(conn, gw, target)
	if !c.end(StepConnect, ok, detail) {
		c.skip(StepTLS, StepVerify)
		return
	}

	tc := tls.Client(tunnel, &tls.Config{
		ServerName:         host,
		InsecureSkipVerify: true, // verified below, as its own step
		MinVersion:         tls.VersionTLS12,
		Time:               c.now,
	})
	c.begin(conn)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.end(StepTLS, false, shortErr(err))
		c.skip(StepVerify)
		return
	}
	st := tc.ConnectionState()
	c.end(StepTLS, true, tls.VersionName(st.Version)+" "+tls.CipherSuiteName(st.CipherSuite))

	c.begin(nil)
	detail, err = verifyPeer(st, host, c.o.Roots, c.now())
	if err != nil {
		detail = shortErr(err)
	}
	c.end(StepVerify, err == nil, detail)
	_ = tc.Close()
}

// connect asks the gateway for a tunnel to target and returns the tunnel.
func connect(conn net.Conn, gw *url.URL, target string) (net.Conn, string, bool) {
	var req bytes.Buffer
	fmt.Fprintf(&req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if gw.User != nil {
		pass, _ := gw.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(gw.User.Username() + ":" + pass))
		req.WriteString("Proxy-Authorization: Basic " + cred + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := conn.Write(req.Bytes()); err != nil {
		return nil, shortErr(err), false
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, "no answer to CONNECT: " + shortErr(err), false
	}
	if resp.StatusCode != http.StatusOK {
		detail := "gateway answered " + resp.Status
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if b := strings.TrimSpace(string(body)); b != "" {
			detail += ": " + b
		}
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			detail += " (retry after " + ra + "s)"
		}
		return nil, detail, false
	}
	if n := br.Buffered(); n > 0 { // bytes from the target already arrived
		early, _ := br.Peek(n)
		return &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn)}, resp.Status, true
	}
	return conn, resp.Status, true
}

// prefixConn replays bytes read past the CONNECT answer.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// status asks the gateway for its spool's status over conn.
func (c *checker) status(conn net.Conn, gw *url.URL) {
	c.begin(conn)
	req := "GET /spool/v1/status HTTP/1.1\r\nHost: " + gw.Host + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		c.end(StepStatus, false, shortErr(err))
		return
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		c.end(StepStatus, false, "no answer: "+shortErr(err))
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		c.end(StepStatus, false, shortErr(err))
		return
	}
	if resp.StatusCode != http.StatusOK {
		detail := "gateway answered " + resp.Status
		if l := firstLine(body); l != "" {
			detail += ": " + l
		}
		c.end(StepStatus, false, detail)
		return
	}
	var st struct {
		Available bool   `json:"available"`
		Error     string `json:"error"`
		Depth     int    `json:"depth"`
		Link      *struct {
			State string `json:"state"`
		} `json:"link"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		c.end(StepStatus, false, "not a spool status: "+err.Error())
		return
	}
	detail := fmt.Sprintf("spool available, %d waiting", st.Depth)
	if !st.Available {
		detail = "spool unavailable: " + st.Error
	}
	if st.Link != nil && st.Link.State != "" {
		detail += ", uplink " + st.Link.State
	}
	c.end(StepStatus, st.Available, detail)
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// verifyPeer checks the chain the target sent against roots (nil: the
// system's) and the host name.
func verifyPeer(st tls.ConnectionState, host string, roots *x509.CertPool, now time.Time) (string, error) {
	if len(st.PeerCertificates) == 0 {
		return "", errors.New("the server sent no certificate")
	}
	leaf := st.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter, CurrentTime: now}); err != nil {
		return "", err
	}
	name := leaf.Subject.CommonName
	if name == "" && len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	return fmt.Sprintf("%s, issued by %s, expires %s", name, leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format("2006-01-02")), nil
}

// shortErr keeps what a technician needs from Go's wrapped network errors.
func shortErr(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return strings.TrimPrefix(op.Err.Error(), "connect: ")
	}
	return err.Error()
}
