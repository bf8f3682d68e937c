package tlspeek

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// goClient dials addr through a tap, runs a crypto/tls handshake, reads the
// server's greeting and closes. It returns the bytes it put on the wire.
func goClient(t *testing.T, addr string, cfg *tls.Config, wrap func(net.Conn) net.Conn) ([]byte, error) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tap := &tapConn{Conn: raw}
	var conn net.Conn = tap
	if wrap != nil {
		conn = wrap(tap)
	}
	tc := tls.Client(conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(20 * time.Second))
	err = tc.Handshake()
	if err == nil {
		var line string
		line, err = bufio.NewReader(tc).ReadString('\n')
		if err == nil && line != "hello\n" {
			err = errors.New("unexpected greeting " + line)
		}
	}
	tc.Close()
	return tap.writtenBytes(), err
}

func clientConfig(p *testPKI, version uint16, withCert bool) *tls.Config {
	cfg := &tls.Config{ServerName: p.serverName, RootCAs: p.pool, MinVersion: version, MaxVersion: version}
	if withCert {
		cfg.Certificates = []tls.Certificate{p.client}
	}
	return cfg
}

func serverConfig(p *testPKI, auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		MinVersion:   tls.VersionTLS10, // lowered so 1.0 and 1.1 clients get a ServerHello
		ClientAuth:   auth,
		ClientCAs:    p.pool,
	}
}

func mustSubjects(t testing.TB, list ...string) *Subjects {
	t.Helper()
	s, err := ParseSubjects(list)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGoClients(t *testing.T) {
	p := newPKI(t)
	allowed := mustSubjects(t, p.clientDN)
	cases := []struct {
		name       string
		version    uint16
		auth       tls.ClientAuthType
		withCert   bool
		cfg        Config
		rules      Rules
		wantOK     bool
		wantEvent  events.ID
		wantReason string
		check      func(t *testing.T, r Result)
	}{
		{name: "tls1.0 allowed by policy", version: tls.VersionTLS10, rules: Rules{MinVersion: VersionTLS10},
			wantOK: true, wantEvent: events.TLSVerified, wantReason: ReasonOK},
		{name: "tls1.0 refused by default", version: tls.VersionTLS10,
			wantEvent: events.TLSVersion, wantReason: ReasonVersion},
		{name: "tls1.1 refused by default", version: tls.VersionTLS11,
			wantEvent: events.TLSVersion, wantReason: ReasonVersion},
		{name: "tls1.1 allowed by policy", version: tls.VersionTLS11, rules: Rules{MinVersion: VersionTLS11},
			wantOK: true, wantEvent: events.TLSVerified, wantReason: ReasonOK},
		{name: "tls1.2", version: tls.VersionTLS12, wantOK: true, wantEvent: events.TLSVerified, wantReason: ReasonOK},
		{name: "tls1.3 post-quantum hello", version: tls.VersionTLS13, wantOK: true, wantEvent: events.TLSVerified,
			wantReason: ReasonOK, check: func(t *testing.T, r Result) {
				if r.BytesUp < 1400 {
					t.Errorf("ClientHello of %d bytes; Go's default X25519MLKEM768 share should make it ~1.5 KB", r.BytesUp)
				}
				if r.CipherSuite == 0 || r.ClientMaxVersion != VersionTLS13 {
					t.Errorf("suite %#x, client max %#x", r.CipherSuite, r.ClientMaxVersion)
				}
			}},
		{name: "tls1.3 min version 1.3", version: tls.VersionTLS12, rules: Rules{MinVersion: VersionTLS13},
			wantEvent: events.TLSVersion, wantReason: ReasonVersion},
		{name: "sni mismatch refused", version: tls.VersionTLS13, rules: Rules{Host: "other.test"},
			wantEvent: events.NotAllowed, wantReason: ReasonSNIMismatch},
		{name: "sni mismatch allowed by policy", version: tls.VersionTLS13, rules: Rules{Host: "other.test", AllowSNIMismatch: true},
			wantOK: true, wantEvent: events.TLSVerified, wantReason: ReasonOK},
		{name: "tls1.2 client cert allowed", version: tls.VersionTLS12, auth: tls.RequireAndVerifyClientCert, withCert: true,
			cfg: Config{NeedClientCert: true}, rules: Rules{AllowedSubjects: allowed},
			wantOK: true, wantEvent: events.TLSVerified, wantReason: ReasonOK, check: func(t *testing.T, r Result) {
				if r.ClientCert == nil || r.ClientCert.Subject != p.clientDN || !r.CertObservable || !r.CertRequested {
					t.Errorf("client cert %+v observable %v requested %v", r.ClientCert, r.CertObservable, r.CertRequested)
				}
			}},
		{name: "tls1.2 client cert by bare CN", version: tls.VersionTLS12, auth: tls.RequireAndVerifyClientCert, withCert: true,
			cfg: Config{NeedClientCert: true}, rules: Rules{AllowedSubjects: mustSubjects(t, "pos-0001")},
			wantOK: true, wantEvent: events.TLSVerified, wantReason: ReasonOK},
		{name: "tls1.2 client cert not allowed", version: tls.VersionTLS12, auth: tls.RequireAndVerifyClientCert, withCert: true,
			cfg: Config{NeedClientCert: true}, rules: Rules{AllowedSubjects: mustSubjects(t, "CN=pos-0002,O=Contoso,C=SE")},
			wantEvent: events.NotAllowed, wantReason: ReasonCertNotAllowed},
		{name: "tls1.2 no client cert sent", version: tls.VersionTLS12, auth: tls.RequestClientCert,
			cfg: Config{NeedClientCert: true}, rules: Rules{AllowedSubjects: allowed},
			wantEvent: events.NotAllowed, wantReason: ReasonNoClientCert, check: func(t *testing.T, r Result) {
				if !r.CertObservable || !r.CertRequested || r.ClientCert != nil {
					t.Errorf("%+v", r)
				}
			}},
		{name: "tls1.2 no cert requested", version: tls.VersionTLS12,
			cfg: Config{NeedClientCert: true}, rules: Rules{AllowedSubjects: allowed},
			wantEvent: events.NotAllowed, wantReason: ReasonNoClientCert, check: func(t *testing.T, r Result) {
				if !r.CertObservable || r.CertRequested {
					t.Errorf("%+v", r)
				}
			}},
		{name: "tls1.3 client cert not observable refused", version: tls.VersionTLS13, auth: tls.RequireAndVerifyClientCert,
			withCert: true, cfg: Config{NeedClientCert: true}, rules: Rules{AllowedSubjects: allowed},
			wantEvent: events.NotAllowed, wantReason: ReasonCertNotObservable, check: func(t *testing.T, r Result) {
				if r.CertObservable || r.ClientCert != nil {
					t.Errorf("%+v", r)
				}
			}},
		{name: "tls1.3 client cert not observable allowed with event", version: tls.VersionTLS13,
			auth: tls.RequireAndVerifyClientCert, withCert: true, cfg: Config{NeedClientCert: true},
			rules:  Rules{AllowedSubjects: allowed, AllowUnobservableCert: true},
			wantOK: true, wantEvent: events.TLSVerified, wantReason: ReasonCertNotObservable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startTLSServer(t, serverConfig(p, tc.auth))
			if tc.rules.Host == "" {
				tc.rules.Host = p.serverName
			}
			rl := startRelay(t, srv.ln.Addr().String(), relayOpts{cfg: tc.cfg, rules: tc.rules})
			sent, cerr := goClient(t, rl.addr(), clientConfig(p, tc.version, tc.withCert), nil)
			o := rl.next(t)
			sc := srv.next(t)
			if o.err != nil {
				t.Fatalf("Inspect: %v", o.err)
			}
			d := o.decision
			if d.OK != tc.wantOK || d.Event != tc.wantEvent || d.Reason != tc.wantReason {
				t.Fatalf("decision %+v, want ok=%v event=%d reason=%s", d, tc.wantOK, tc.wantEvent, tc.wantReason)
			}
			if o.res.Version != tc.version || o.res.SNI != p.serverName {
				t.Errorf("version %s sni %q", VersionName(o.res.Version), o.res.SNI)
			}
			got := sc.tap.readBytes()
			if tc.wantOK {
				if cerr != nil || sc.handshakeErr != nil {
					t.Fatalf("client %v, server %v", cerr, sc.handshakeErr)
				}
				if !bytes.Equal(got, sent) {
					t.Errorf("upstream received %d bytes, client sent %d: not identical", len(got), len(sent))
				}
			} else {
				if cerr == nil {
					t.Errorf("client finished a refused session")
				}
				if !bytes.HasPrefix(sent, got) {
					t.Errorf("upstream received bytes the client did not send")
				}
			}
			if sent := o.clientIn.readBytes(); int64(len(sent)) != o.res.BytesUp {
				t.Errorf("read %d client bytes during inspection, forwarded %d", len(sent), o.res.BytesUp)
			}
			if tc.check != nil {
				tc.check(t, o.res)
			}
		})
	}
}

// A server that only takes P-256 makes a Go client (which leads with
// X25519MLKEM768 and X25519 key shares) go through a HelloRetryRequest.
func TestHelloRetryRequest(t *testing.T) {
	p := newPKI(t)
	scfg := serverConfig(p, tls.NoClientCert)
	scfg.CurvePreferences = []tls.CurveID{tls.CurveP256}
	srv := startTLSServer(t, scfg)
	rl := startRelay(t, srv.ln.Addr().String(), relayOpts{rules: Rules{Host: p.serverName}})
	sent, cerr := goClient(t, rl.addr(), clientConfig(p, tls.VersionTLS13, false), nil)
	o := rl.next(t)
	sc := srv.next(t)
	if o.err != nil || cerr != nil || sc.handshakeErr != nil {
		t.Fatalf("inspect %v, client %v, server %v", o.err, cerr, sc.handshakeErr)
	}
	if !o.res.HelloRetry || o.res.Version != VersionTLS13 || !o.decision.OK || o.res.SNI != p.serverName {
		t.Fatalf("result %+v decision %+v", o.res, o.decision)
	}
	if got := sc.tap.readBytes(); !bytes.Equal(got, sent) {
		t.Errorf("upstream bytes differ from the client's")
	}
}

// A resumed TLS 1.2 session carries no certificate: not observable.
func TestTLS12Resumption(t *testing.T) {
	p := newPKI(t)
	srv := startTLSServer(t, serverConfig(p, tls.RequireAndVerifyClientCert))
	rl := startRelay(t, srv.ln.Addr().String(), relayOpts{cfg: Config{NeedClientCert: true},
		rules: Rules{Host: p.serverName, AllowedSubjects: mustSubjects(t, p.clientDN), AllowUnobservableCert: true}})
	ccfg := clientConfig(p, tls.VersionTLS12, true)
	ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i, wantResumed := range []bool{false, true} {
		_, cerr := goClient(t, rl.addr(), ccfg, nil)
		o := rl.next(t)
		sc := srv.next(t)
		if cerr != nil || o.err != nil {
			t.Fatalf("connection %d: client %v inspect %v", i, cerr, o.err)
		}
		if o.res.Resumed != wantResumed || sc.state.DidResume != wantResumed || o.res.CertObservable == wantResumed {
			t.Fatalf("connection %d: result %+v, server resumed %v", i, o.res, sc.state.DidResume)
		}
		wantReason := ReasonOK
		if wantResumed {
			wantReason = ReasonCertNotObservable
		}
		if !o.decision.OK || o.decision.Reason != wantReason {
			t.Fatalf("connection %d: decision %+v", i, o.decision)
		}
	}
}

// rawServer records what reaches the upstream when Inspect refuses early.
func rawServer(t *testing.T) (addr string, got func() []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []byte, 1)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		var buf bytes.Buffer
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_, _ = buf.ReadFrom(c)
		c.Close()
		ch <- buf.Bytes()
	}()
	return ln.Addr().String(), func() []byte {
		select {
		case b := <-ch:
			return b
		case <-time.After(20 * time.Second):
			t.Fatal("raw server got nothing")
			return nil
		}
	}
}

// sslv2Hello is an SSL 2.0-format CLIENT-HELLO (RFC 6101 appendix E) as
// compatibility clients sent it, offering TLS 1.0.
func sslv2Hello(version uint16) []byte {
	suites := []byte{0x00, 0x00, 0x2f, 0x01, 0x00, 0x80} // TLS_RSA_WITH_AES_128_CBC_SHA, SSL_CK_RC4_128_WITH_MD5
	challenge := bytes.Repeat([]byte{0x5a}, 16)
	body := []byte{1, byte(version >> 8), byte(version), 0, byte(len(suites)), 0, 0, 0, byte(len(challenge))}
	body = append(body, suites...)
	body = append(body, challenge...)
	return append([]byte{0x80 | byte(len(body)>>8), byte(len(body))}, body...)
}

// sslv3Hello is a ClientHello in an SSL 3.0 record offering only SSL 3.0.
func sslv3Hello() []byte {
	body := []byte{3, 0}
	body = append(body, bytes.Repeat([]byte{0x11}, 32)...)  // random
	body = append(body, 0)                                  // session id
	body = append(body, 0, 4, 0x00, 0x2f, 0x00, 0x0a, 1, 0) // suites, compression
	msg := append([]byte{1, 0, 0, byte(len(body))}, body...)
	return append([]byte{22, 3, 0, 0, byte(len(msg))}, msg...)
}

func TestRefusedBeforeForwarding(t *testing.T) {
	cases := []struct {
		name     string
		input    []byte
		chunk    int
		cfg      Config
		kind     Kind
		version  uint16
		event    events.ID
		forwards bool
	}{
		{name: "sslv2 hello", input: sslv2Hello(VersionTLS10), kind: KindSSLv2, version: VersionTLS10, event: events.TLSVersion},
		{name: "sslv2 hello 1-byte reads", input: sslv2Hello(0x0002), chunk: 1, kind: KindSSLv2, version: 0x0002, event: events.TLSVersion},
		{name: "sslv3 hello", input: sslv3Hello(), kind: KindSSL3, version: VersionSSL30, event: events.TLSVersion},
		{name: "sslv3 hello 1-byte reads", input: sslv3Hello(), chunk: 1, kind: KindSSL3, version: VersionSSL30, event: events.TLSVersion},
		{name: "http not tls", input: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), kind: KindNotTLS, event: events.TLSParse},
		{name: "high bit not sslv2", input: []byte{0x80, 0x10, 0x02, 0x03, 0x00, 0x00}, chunk: 1, kind: KindNotTLS, event: events.TLSParse},
		{name: "not tls forwarded when allowed", input: []byte("SSH-2.0-OpenSSH_9.6\r\n"), cfg: Config{AllowNotTLS: true},
			kind: KindNotTLS, event: events.TLSParse, forwards: true},
		{name: "high bit held then forwarded", input: []byte{0x80, 0x10, 0x02, 0x03}, chunk: 1, cfg: Config{AllowNotTLS: true},
			kind: KindNotTLS, event: events.TLSParse, forwards: true},
		{name: "alert first", input: []byte{21, 3, 3, 0, 2, 2, 40}, kind: KindParse, event: events.TLSParse},
		{name: "record too long", input: []byte{22, 3, 1, 0xff, 0xff}, kind: KindParse, event: events.TLSParse},
		{name: "not a client hello", input: []byte{22, 3, 1, 0, 4, 2, 0, 0, 0}, kind: KindParse, event: events.TLSParse},
		{name: "hello over the cap", input: []byte{22, 3, 1, 0, 4, 1, 0, 0x50, 0}, cfg: Config{MaxBytes: 1024},
			kind: KindTooLarge, event: events.TLSParse},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, received := rawServer(t)
			rl := startRelay(t, addr, relayOpts{cfg: tc.cfg, maxChunk: tc.chunk})
			c, err := net.Dial("tcp", rl.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.(*net.TCPConn).SetNoDelay(true)
			if tc.chunk == 1 {
				for i := range tc.input { // one byte per TCP segment
					if _, err := c.Write(tc.input[i : i+1]); err != nil {
						break // the relay refused and closed early
					}
				}
			} else if _, err := c.Write(tc.input); err != nil {
				t.Fatal(err)
			}
			_ = c.(*net.TCPConn).CloseWrite()
			o := rl.next(t)
			var e *Error
			if !errors.As(o.err, &e) || e.Kind != tc.kind || e.Version != tc.version {
				t.Fatalf("error %v, want kind %s version %#x", o.err, tc.kind, tc.version)
			}
			if d := ErrorDecision(o.err); d.OK || d.Event != tc.event {
				t.Errorf("decision %+v", d)
			}
			got := received()
			switch {
			case tc.forwards && !bytes.Equal(got, tc.input):
				t.Errorf("upstream got %q, want %q", got, tc.input)
			case !tc.forwards && len(got) != 0:
				t.Errorf("upstream got %q, want nothing", got)
			}
		})
	}
}

// deadlineConn records the deadlines set on a connection.
type deadlineConn struct {
	net.Conn
	last time.Time
	sets int
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.last, c.sets = t, c.sets+1
	return c.Conn.SetDeadline(t)
}

func TestTimeoutAndDeadlinesCleared(t *testing.T) {
	up, upPeer := tcpPair(t)
	clientPeer, clientSide := tcpPair(t)
	hello := goClientHello(t, &tls.Config{ServerName: "example.test"})
	if _, err := clientPeer.Write(hello[:len(hello)/2]); err != nil { // then stall
		t.Fatal(err)
	}
	cw, uw := &deadlineConn{Conn: clientSide}, &deadlineConn{Conn: up}
	done := make(chan error, 1)
	go func() {
		_, err := Inspect(cw, uw, Config{Timeout: 200 * time.Millisecond})
		done <- err
	}()
	var ierr error
	select {
	case ierr = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Inspect blocked past its deadline")
	}
	var e *Error
	if !errors.As(ierr, &e) || e.Kind != KindTimeout || e.Side != SideClient {
		t.Fatalf("got %v, want a client timeout", ierr)
	}
	if ErrorDecision(ierr).Reason != ReasonTimeout {
		t.Errorf("decision %+v", ErrorDecision(ierr))
	}
	for _, c := range []*deadlineConn{cw, uw} {
		if c.sets != 2 || !c.last.IsZero() {
			t.Errorf("deadline set %d times, last %v; want set then cleared", c.sets, c.last)
		}
	}
	// The deadlines are gone: the client connection still reads.
	if _, err := clientPeer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(clientSide, one); err != nil {
		t.Fatalf("read after Inspect: %v", err)
	}
	// The unfinished hello was held back, never forwarded.
	up.Close()
	got, _ := io.ReadAll(upPeer)
	if len(got) != 0 {
		t.Fatalf("upstream got %d bytes of an unfinished ClientHello", len(got))
	}
}

func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A cap smaller than Go's post-quantum ClientHello stops the read at the cap.
func TestCapNeverExceeded(t *testing.T) {
	clientPeer, clientSide := tcpPair(t)
	_, upSide := tcpPair(t)
	hello := goClientHello(t, &tls.Config{ServerName: "example.test"})
	if _, err := clientPeer.Write(hello); err != nil {
		t.Fatal(err)
	}
	tap := &tapConn{Conn: clientSide}
	res, err := Inspect(tap, upSide, Config{MaxBytes: 1000})
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindTooLarge {
		t.Fatalf("got %v, want too large", err)
	}
	if n := len(tap.readBytes()); n > 1000 {
		t.Errorf("read %d bytes past the cap of 1000", n)
	}
	if res.BytesUp > 1000 {
		t.Errorf("forwarded %d", res.BytesUp)
	}
}

// A TLS 1.0 client meets a server that wants 1.2: the server's
// protocol_version alert is passed to the client and maps to event 106.
func TestServerAlertForwarded(t *testing.T) {
	p := newPKI(t)
	scfg := serverConfig(p, tls.NoClientCert)
	scfg.MinVersion = tls.VersionTLS12
	srv := startTLSServer(t, scfg)
	rl := startRelay(t, srv.ln.Addr().String(), relayOpts{rules: Rules{Host: p.serverName}})
	_, cerr := goClient(t, rl.addr(), clientConfig(p, tls.VersionTLS10, false), nil)
	o := rl.next(t)
	srv.next(t)
	var e *Error
	if !errors.As(o.err, &e) || e.Kind != KindAlert || e.Side != SideUpstream || e.Alert != 70 {
		t.Fatalf("got %v, want the server's protocol_version alert", o.err)
	}
	if o.decision.Event != events.TLSVersion || o.decision.Reason != ReasonVersion {
		t.Errorf("decision %+v", o.decision)
	}
	if cerr == nil || !strings.Contains(cerr.Error(), "protocol version") {
		t.Errorf("client error %v: the alert did not reach it", cerr)
	}
	if o.res.BytesDown != 7 {
		t.Errorf("forwarded %d bytes down, want the 7-byte alert record", o.res.BytesDown)
	}
}
