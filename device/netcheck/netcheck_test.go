package netcheck

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream is a real TLS server on loopback with its own CA.
type upstream struct {
	ln   net.Listener
	pool *x509.CertPool
	port int
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "upstream.test"},
		DNSNames:     []string{"upstream.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serve(ln, func(c net.Conn) {
		_ = c.(*tls.Conn).Handshake()
		_, _ = io.Copy(io.Discard, c)
	})
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &upstream{ln: ln, pool: pool, port: ln.Addr().(*net.TCPAddr).Port}
}

// serve accepts connections on ln until it is closed, handling each in a
// goroutine of its own and closing it after handle returns.
func serve(ln net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// relay is a tiny CONNECT proxy that maps the name upstream.test to loopback.
func newRelay(t *testing.T) (addr string, connects func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var seen []string
	serve(ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			return
		}
		mu.Lock()
		seen = append(seen, req.Host)
		mu.Unlock()
		host, port, _ := net.SplitHostPort(req.Host)
		if host == "upstream.test" {
			host = "127.0.0.1"
		}
		up, err := net.Dial("tcp", net.JoinHostPort(host, port))
		if err != nil {
			fmt.Fprint(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
			return
		}
		defer up.Close()
		fmt.Fprint(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { _, _ = io.Copy(up, br); up.(*net.TCPConn).CloseWrite() }()
		_, _ = io.Copy(c, up)
	})
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// relayDial is what the gateway's relay dial does, reduced to the protocol.
func relayDial(relay string) func(ctx context.Context, host string, port int) (net.Conn, error) {
	return func(ctx context.Context, host string, port int) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", relay)
		if err != nil {
			return nil, err
		}
		target := net.JoinHostPort(host, strconv.Itoa(port))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			c.Close()
			return nil, err
		}
		if resp.StatusCode != 200 {
			c.Close()
			return nil, fmt.Errorf("relay refused: %s", resp.Status)
		}
		return c, nil
	}
}

func loopbackResolver(names ...string) func(ctx context.Context, host string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		for _, n := range names {
			if n == host {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
}

// directDial maps upstream.test to loopback the way a resolver would.
func directDial(ctx context.Context, host string, port int) (net.Conn, error) {
	if host == "upstream.test" {
		host = "127.0.0.1"
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
}

func stepSummary(r Report) string {
	var parts []string
	for _, s := range r.Steps {
		state := "ok"
		if s.Skipped {
			state = "skipped"
		} else if !s.OK {
			state = "FAIL"
		}
		parts = append(parts, s.Name+"="+state)
	}
	return strings.Join(parts, " ")
}

func TestRun(t *testing.T) {
	up := newUpstream(t)
	relayAddr, relaySeen := newRelay(t)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	plain, _ := net.Listen("tcp", "127.0.0.1:0")
	defer plain.Close()
	serve(plain, func(c net.Conn) { fmt.Fprint(c, "SSH-2.0-not-tls\r\n") })
	plainPort := plain.Addr().(*net.TCPAddr).Port
	empty := x509.NewCertPool()

	tests := []struct {
		name       string
		cfg        Config
		host       string
		port       int
		want       string
		wantOK     bool
		wantDetail map[string]string // step -> substring of its detail
	}{
		{
			name: "direct ok",
			cfg:  Config{Dial: directDial, Resolve: loopbackResolver("upstream.test"), Roots: up.pool, SystemRoots: empty},
			host: "upstream.test", port: up.port,
			want: "resolve=ok connect=ok tls=ok verify=ok", wantOK: true,
			wantDetail: map[string]string{StepResolve: "127.0.0.1", StepVerify: "CN=upstream.test", StepTLS: "TLS 1.3"},
		},
		{
			name: "direct ip literal with default dialer",
			cfg:  Config{Roots: up.pool, SystemRoots: empty},
			host: "127.0.0.1", port: up.port,
			want: "resolve=ok connect=ok tls=ok verify=ok", wantOK: true,
			wantDetail: map[string]string{StepConnect: "to 127.0.0.1:"},
		},
		{
			name: "through relay",
			cfg:  Config{Dial: relayDial(relayAddr), Via: "relay http://" + relayAddr, Resolve: loopbackResolver("upstream.test"), Roots: up.pool, SystemRoots: empty},
			host: "upstream.test", port: up.port,
			want: "resolve=ok connect=ok tls=ok verify=ok", wantOK: true,
			wantDetail: map[string]string{StepConnect: "via relay http://" + relayAddr},
		},
		{
			name: "through relay, name unknown locally",
			cfg:  Config{Dial: relayDial(relayAddr), Via: "relay http://" + relayAddr, Resolve: loopbackResolver(), Roots: up.pool, SystemRoots: empty},
			host: "upstream.test", port: up.port,
			want: "resolve=FAIL connect=ok tls=ok verify=ok", wantOK: true,
			wantDetail: map[string]string{StepResolve: "the relay resolves names itself"},
		},
		{
			name: "name does not resolve",
			cfg:  Config{Dial: directDial, Resolve: loopbackResolver(), Roots: up.pool},
			host: "nowhere.test", port: 443,
			want:       "resolve=FAIL connect=skipped tls=skipped verify=skipped",
			wantDetail: map[string]string{StepResolve: "no such host nowhere.test"},
		},
		{
			name: "port closed",
			cfg:  Config{Dial: directDial, Resolve: loopbackResolver("upstream.test"), Roots: up.pool},
			host: "upstream.test", port: closedPort,
			want:       "resolve=ok connect=FAIL tls=skipped verify=skipped",
			wantDetail: map[string]string{StepConnect: "connection refused"},
		},
		{
			name: "relay refuses unreachable target",
			cfg:  Config{Dial: relayDial(relayAddr), Via: "relay", Resolve: loopbackResolver("upstream.test"), Roots: up.pool},
			host: "upstream.test", port: closedPort,
			want:       "resolve=ok connect=FAIL tls=skipped verify=skipped",
			wantDetail: map[string]string{StepConnect: "502"},
		},
		{
			name: "not TLS",
			cfg:  Config{Dial: directDial, Resolve: loopbackResolver("upstream.test"), Roots: up.pool},
			host: "upstream.test", port: plainPort,
			want: "resolve=ok connect=ok tls=FAIL verify=skipped",
		},
		{
			name: "untrusted certificate",
			cfg:  Config{Dial: directDial, Resolve: loopbackResolver("upstream.test"), SystemRoots: empty},
			host: "upstream.test", port: up.port,
			want:       "resolve=ok connect=ok tls=ok verify=FAIL",
			wantDetail: map[string]string{StepVerify: "unknown authority"},
		},
		{
			name: "wrong name",
			cfg: Config{Dial: func(ctx context.Context, _ string, port int) (net.Conn, error) {
				return directDial(ctx, "127.0.0.1", port)
			}, Resolve: loopbackResolver("other.test"), Roots: up.pool, SystemRoots: empty},
			host: "other.test", port: up.port,
			want:       "resolve=ok connect=ok tls=ok verify=FAIL",
			wantDetail: map[string]string{StepVerify: "other.test"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Run(context.Background(), tc.cfg, tc.host, tc.port)
			if got := stepSummary(r); got != tc.want {
				t.Fatalf("steps: got %s, want %s\n%+v", got, tc.want, r.Steps)
			}
			if r.OK != tc.wantOK {
				t.Errorf("OK = %v, want %v", r.OK, tc.wantOK)
			}
			for _, s := range r.Steps {
				if want, ok := tc.wantDetail[s.Name]; ok && !strings.Contains(s.Detail, want) {
					t.Errorf("step %s detail %q, want it to contain %q", s.Name, s.Detail, want)
				}
				if !s.Skipped && !s.OK && s.Detail == "" {
					t.Errorf("step %s failed without saying why", s.Name)
				}
			}
		})
	}
	if seen := relaySeen(); len(seen) < 2 || seen[0] != net.JoinHostPort("upstream.test", strconv.Itoa(up.port)) {
		t.Errorf("relay saw %v, want CONNECT upstream.test:%d", seen, up.port)
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := Run(ctx, Config{Dial: func(ctx context.Context, _ string, _ int) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}, "127.0.0.1", 443)
	if r.OK || r.Steps[1].Detail != "cancelled" {
		t.Fatalf("got %+v", r.Steps)
	}
}

func TestRunStepTimeout(t *testing.T) {
	r := Run(context.Background(), Config{Timeout: time.Millisecond, Dial: func(ctx context.Context, _ string, _ int) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}, "127.0.0.1", 443)
	if got := stepSummary(r); got != "resolve=ok connect=FAIL tls=skipped verify=skipped" || r.Steps[1].Detail != "timed out" {
		t.Fatalf("got %s %+v", got, r.Steps)
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port int
		err  string
	}{
		{"example.com", "example.com", 443, ""},
		{"Example.COM.", "example.com", 443, ""},
		{"example.com:8443", "example.com", 8443, ""},
		{"  we-jobruntimedata-prod-su1.azure-automation.net ", "we-jobruntimedata-prod-su1.azure-automation.net", 443, ""},
		{"203.0.113.7", "203.0.113.7", 443, ""},
		{"203.0.113.7:80", "203.0.113.7", 80, ""},
		{"::1", "::1", 443, ""},
		{"[::1]:8443", "::1", 8443, ""},
		{"[::1]", "::1", 443, ""},
		{"", "", 0, "missing host"},
		{"example.com:", "", 0, "empty port"},
		{"example.com:0", "", 0, "bad port"},
		{"example.com:65536", "", 0, "bad port"},
		{"example.com:+1", "", 0, "bad port"},
		{"example.com:https", "", 0, "bad port"},
		{"exa mple.com", "", 0, "not allowed"},
		{"-bad.com", "", 0, "start or end"},
		{"a..b", "", 0, "1-63"},
		{"[example.com]:1", "", 0, "not an IPv6"},
		{"[::1", "", 0, "missing ]"},
		{"[::1]x", "", 0, "expected :PORT"},
		{"fe80::1::2", "", 0, "IPv6"},
		{strings.Repeat("a", 300), "", 0, "too long"},
		{strings.Repeat("a", 64) + ".com", "", 0, "1-63"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			host, port, err := ParseTarget(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseTarget(%q) = %q, %d, %v; want error containing %q", tc.in, host, port, err, tc.err)
				}
				return
			}
			if err != nil || host != tc.host || port != tc.port {
				t.Fatalf("ParseTarget(%q) = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
			}
		})
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"example.com", "example.com:8443", "[::1]:443", "::1", "1.2.3.4:0", "[", "a:b:c", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := ParseTarget(s)
		if err != nil {
			if host != "" || port != 0 {
				t.Fatalf("error with a result: %q %d", host, port)
			}
			return
		}
		if port < 1 || port > 65535 || host == "" {
			t.Fatalf("ParseTarget(%q) = %q, %d", s, host, port)
		}
		for i := 0; i < len(host); i++ {
			if host[i] <= ' ' || host[i] >= 0x7f {
				t.Fatalf("host %q has byte %#x", host, host[i])
			}
		}
		// The result round-trips.
		h2, p2, err := ParseTarget(net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("round trip of %q:%d gave %q %d %v", host, port, h2, p2, err)
		}
	})
}
