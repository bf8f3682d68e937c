package agentside

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// miniProxy is a small CONNECT proxy on loopback, enough to stand in for the
// gateway: an allowlist, optional Basic auth, and the spool status page.
type miniProxy struct {
	ln       net.Listener
	allow    func(target string) bool
	wantAuth string // Proxy-Authorization required, if set
	status   string // body of /spool/v1/status
	wg       sync.WaitGroup
}

func startMiniProxy(t *testing.T, tlsCfg *tls.Config, p *miniProxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return ln.Addr().String()
}

func (p *miniProxy) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	answer := func(status int, body string) {
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", status, http.StatusText(status), len(body), body)
	}
	if req.Method != http.MethodConnect {
		if req.URL.Path == "/spool/v1/status" && p.status != "" {
			answer(200, p.status)
			return
		}
		answer(404, "not found")
		return
	}
	if p.wantAuth != "" && req.Header.Get("Proxy-Authorization") != p.wantAuth {
		answer(407, "proxy authentication required")
		return
	}
	if p.allow != nil && !p.allow(req.Host) {
		answer(403, "host not allowed: "+req.Host)
		return
	}
	up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
	if err != nil {
		answer(502, "upstream unreachable")
		return
	}
	defer up.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() { io.Copy(up, br); up.Close(); close(done) }()
	io.Copy(c, up)
	c.Close()
	<-done
}

func tlsTarget(t *testing.T) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(ts.Close)
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	return ts, pool
}

// stepClock advances a millisecond each time it is read, so every step has
// a duration without a test depending on real time.
func stepClock() func() time.Time {
	var mu sync.Mutex
	now := time.Now()
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
}

func summary(r CheckReport) string {
	var b strings.Builder
	for _, s := range r.Steps {
		state := "ok"
		switch {
		case s.Skipped:
			state = "skip"
		case !s.OK:
			state = "FAIL"
		}
		fmt.Fprintf(&b, "%s:%s ", s.Name, state)
	}
	return strings.TrimSpace(b.String())
}

func TestCheck(t *testing.T) {
	ts, pool := tlsTarget(t)
	target := ts.Listener.Addr().String()
	plain, err := net.Listen("tcp", "127.0.0.1:0") // answers, but not with TLS
	must(t, err)
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "220 smtp.example ESMTP\r\n")
			c.Close()
		}
	}()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	open := startMiniProxy(t, nil, &miniProxy{status: `{"available":true,"depth":3,"link":{"state":"up"}}`})
	strict := startMiniProxy(t, nil, &miniProxy{allow: func(string) bool { return false }})
	authed := startMiniProxy(t, nil, &miniProxy{wantAuth: "Basic dTpwQHNz"}) // u:p@ss
	broken := startMiniProxy(t, nil, &miniProxy{status: `{"available":false,"error":"disk full","depth":0}`})
	secure := startMiniProxy(t, &tls.Config{Certificates: ts.TLS.Certificates}, &miniProxy{})

	cases := []struct {
		name     string
		o        CheckOptions
		want     string
		failAt   string
		inDetail string
	}{
		{"through to a verified target", CheckOptions{Gateway: "http://" + open, Target: "https://" + target, Roots: pool},
			"tcp:ok connect:ok tls:ok verify:ok", "", ""},
		{"untrusted certificate", CheckOptions{Gateway: "http://" + open, Target: target, Roots: x509.NewCertPool()},
			"tcp:ok connect:ok tls:ok verify:FAIL", StepVerify, "unknown authority"},
		{"name not in certificate", CheckOptions{Gateway: "http://" + open, Target: strings.Replace(target, "127.0.0.1", "localhost", 1), Roots: pool},
			"tcp:ok connect:ok tls:ok verify:FAIL", StepVerify, "localhost"},
		{"refused by the gateway", CheckOptions{Gateway: "http://" + strict, Target: target, Roots: pool},
			"tcp:ok connect:FAIL tls:skip verify:skip", StepConnect, "403 Forbidden: host not allowed: " + target},
		{"target down", CheckOptions{Gateway: "http://" + open, Target: closedAddr, Roots: pool},
			"tcp:ok connect:FAIL tls:skip verify:skip", StepConnect, "502"},
		{"target not TLS", CheckOptions{Gateway: "http://" + open, Target: plain.Addr().String(), Roots: pool},
			"tcp:ok connect:ok tls:FAIL verify:skip", StepTLS, ""},
		{"gateway down", CheckOptions{Gateway: "http://" + closedAddr, Target: target, Roots: pool},
			"tcp:FAIL connect:skip tls:skip verify:skip", StepTCP, "refused"},
		{"credentials sent", CheckOptions{Gateway: "http://u:p%40ss@" + authed, Target: target, Roots: pool},
			"tcp:ok connect:ok tls:ok verify:ok", "", ""},
		{"credentials missing", CheckOptions{Gateway: "http://" + authed, Target: target, Roots: pool},
			"tcp:ok connect:FAIL tls:skip verify:skip", StepConnect, "407"},
		{"spool status", CheckOptions{Gateway: "http://" + open},
			"tcp:ok status:ok", "", ""},
		{"spool unavailable", CheckOptions{Gateway: "http://" + broken},
			"tcp:ok status:FAIL", StepStatus, "disk full"},
		{"no status page", CheckOptions{Gateway: "http://" + strict},
			"tcp:ok status:FAIL", StepStatus, "404"},
		{"https gateway", CheckOptions{Gateway: "https://" + secure, Target: target, Roots: pool},
			"tcp:ok gateway-tls:ok connect:ok tls:ok verify:ok", "", ""},
		{"https gateway untrusted", CheckOptions{Gateway: "https://" + secure, Target: target, Roots: x509.NewCertPool()},
			"tcp:ok gateway-tls:FAIL connect:skip tls:skip verify:skip", StepGatewayTLS, "certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Now = stepClock()
			tc.o.Timeout = 5 * time.Second
			r, err := Check(context.Background(), tc.o)
			must(t, err)
			if got := summary(r); got != tc.want {
				t.Fatalf("steps %s, want %s: %+v", got, tc.want, r.Steps)
			}
			f, failed := r.Failed()
			if r.OK != (tc.failAt == "") || failed != !r.OK || f.Name != tc.failAt {
				t.Fatalf("OK=%v failed at %q, want %q: %+v", r.OK, f.Name, tc.failAt, r.Steps)
			}
			if !strings.Contains(f.Detail, tc.inDetail) {
				t.Errorf("detail %q does not say %q", f.Detail, tc.inDetail)
			}
			for _, s := range r.Steps {
				if !s.Skipped && s.Duration <= 0 {
					t.Errorf("step %s has no duration", s.Name)
				}
			}
			if strings.Contains(r.Gateway, "p%40ss") || strings.Contains(fmt.Sprint(r.Steps), "p%40ss") {
				t.Errorf("the password shows in the report: %s %v", r.Gateway, r.Steps)
			}
		})
	}
}

func TestCheckCancelled(t *testing.T) {
	ts, pool := tlsTarget(t)
	open := startMiniProxy(t, nil, &miniProxy{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := Check(ctx, CheckOptions{Gateway: "http://" + open, Target: ts.Listener.Addr().String(), Roots: pool})
	must(t, err)
	if r.OK {
		t.Fatalf("a cancelled check passed: %+v", r.Steps)
	}
}

func TestCheckBadOptions(t *testing.T) {
	for _, o := range []CheckOptions{
		{Gateway: ""},
		{Gateway: "ftp://gw:21"},
		{Gateway: "http://gw:8080", Target: "http://plain.example"},
		{Gateway: "http://gw:8080", Target: "https://u:p@x.example"},
		{Gateway: "http://gw:8080", Target: "x.example:0"},
		{Gateway: "http://gw:8080", Target: "bad host:443"},
	} {
		if r, err := Check(context.Background(), o); err == nil {
			t.Errorf("%+v: no error (report %+v)", o, r)
		}
	}
}

func TestParseCheckTarget(t *testing.T) {
	cases := []struct {
		in   string
		host string
		port int
	}{
		{"https://Example.COM", "example.com", 443},
		{"https://example.com:8443/", "example.com", 8443},
		{"example.com", "example.com", 443},
		{"203.0.113.7:444", "203.0.113.7", 444},
		{"[2001:db8::1]:8443", "2001:db8::1", 8443},
		{"2001:db8::1", "2001:db8::1", 443},
		{"https://[::1]", "::1", 443},
	}
	for _, tc := range cases {
		h, p, err := ParseCheckTarget(tc.in)
		if err != nil || h != tc.host || p != tc.port {
			t.Errorf("ParseCheckTarget(%q) = %q %d %v, want %q %d", tc.in, h, p, err, tc.host, tc.port)
		}
	}
}

func FuzzParseCheckTarget(f *testing.F) {
	for _, s := range []string{"https://example.com:443", "[::1]:1", "a:b:c", "https://%zz", "x.example:99999", "[fe80::1%eth0]:443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := ParseCheckTarget(s)
		if err != nil {
			return
		}
		if host == "" || port < 1 || port > 65535 {
			t.Fatalf("ParseCheckTarget(%q) = %q %d", s, host, port)
		}
		// What it returns is a valid CONNECT authority and reads back the same.
		h2, p2, err := ParseCheckTarget(net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("ParseCheckTarget(%q) = %q %d, which reads back as %q %d %v", s, host, port, h2, p2, err)
		}
	})
}
