package tlspeek

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testPKI is a CA with a server certificate for example.test and a client
// certificate for CN=pos-0001,O=Contoso,C=SE.
type testPKI struct {
	pool       *x509.CertPool
	server     tls.Certificate
	client     tls.Certificate
	clientDN   string
	caPEM      []byte
	clientPEM  []byte
	clientKey  []byte
	serverName string
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey := mustKey(t)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "storegate test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{pool: x509.NewCertPool(), serverName: "example.test"}
	p.pool.AddCert(ca)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	issue := func(serial int64, subj pkix.Name, usage x509.ExtKeyUsage, dns []string) (tls.Certificate, []byte, []byte) {
		key := mustKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      subj,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c, certPEM, keyPEM
	}
	p.server, _, _ = issue(2, pkix.Name{CommonName: "example.test"}, x509.ExtKeyUsageServerAuth, []string{"example.test"})
	p.client, p.clientPEM, p.clientKey = issue(3, pkix.Name{
		CommonName: "pos-0001", Organization: []string{"Contoso"}, Country: []string{"SE"},
	}, x509.ExtKeyUsageClientAuth, nil)
	p.clientDN = "CN=pos-0001,O=Contoso,C=SE"
	return p
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// files writes the CA and the client's certificate and key for openssl.
func (p *testPKI) files(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	for name, data := range map[string][]byte{ca: p.caPEM, cert: p.clientPEM, key: p.clientKey} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// tapConn records every byte read from and written to a connection.
type tapConn struct {
	net.Conn
	mu       sync.Mutex
	read     bytes.Buffer
	written  bytes.Buffer
	maxChunk int // if > 0, each Read returns at most this many bytes
}

func (c *tapConn) Read(p []byte) (int, error) {
	if c.maxChunk > 0 && len(p) > c.maxChunk {
		p = p[:c.maxChunk]
	}
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.written.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) readBytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.read.Bytes())
}

func (c *tapConn) writtenBytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.written.Bytes())
}

// tlsServer is a real crypto/tls server on loopback whose raw bytes are
// recorded. Each connection: handshake, write "hello\n", read to EOF.
type tlsServer struct {
	ln    net.Listener
	conns chan *serverConn
}

type serverConn struct {
	tap          *tapConn
	handshakeErr error
	state        tls.ConnectionState
}

func startTLSServer(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	return startTLSServerOpts(t, cfg, false)
}

// startTLSServerOpts with closeAfterGreeting closes right after "hello\n",
// for clients (curl) that wait for the server to end the response.
func startTLSServerOpts(t *testing.T, cfg *tls.Config, closeAfterGreeting bool) *tlsServer {
	t.Helper()
	s := &tlsServer{conns: make(chan *serverConn, 16)}
	s.ln = serveLoopback(t, func(raw net.Conn) {
		tap := &tapConn{Conn: raw}
		sc := &serverConn{tap: tap}
		tc := tls.Server(tap, cfg)
		_ = tc.SetDeadline(time.Now().Add(20 * time.Second))
		sc.handshakeErr = tc.Handshake()
		if sc.handshakeErr == nil {
			sc.state = tc.ConnectionState()
			if _, err := tc.Write([]byte("hello\n")); err == nil && !closeAfterGreeting {
				_, _ = io.Copy(io.Discard, tc)
			}
		}
		tc.Close()
		s.conns <- sc
	})
	return s
}

// serveLoopback listens on loopback and runs handle, in a goroutine of its
// own, for every connection; when the test ends it closes the listener and
// waits for the handlers.
func serveLoopback(t *testing.T, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	return ln
}

// next waits for the next finished server connection.
func (s *tlsServer) next(t *testing.T) *serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(30 * time.Second):
		t.Fatal("server connection did not finish")
		return nil
	}
}

// outcome is what the relay saw for one tunnel.
type outcome struct {
	res      Result
	err      error
	decision Decision
	clientIn *tapConn // the relay's side of the client connection
}

// relay is the tiny tunnel of the tests: accept, dial upstream, Inspect,
// Decide, then io.Copy both ways on the raw TCP connections.
type relay struct {
	ln       net.Listener
	outcomes chan outcome
}

type relayOpts struct {
	cfg      Config
	rules    Rules
	maxChunk int // cap each Read of the client to force split reads
}

func startRelay(t *testing.T, upstream string, o relayOpts) *relay {
	t.Helper()
	r := &relay{outcomes: make(chan outcome, 16)}
	r.ln = serveLoopback(t, func(c net.Conn) { r.serve(c.(*net.TCPConn), upstream, o) })
	return r
}

func (r *relay) serve(client *net.TCPConn, upstream string, o relayOpts) {
	defer client.Close()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		r.outcomes <- outcome{err: err}
		return
	}
	defer up.Close()
	tap := &tapConn{Conn: client, maxChunk: o.maxChunk}
	res, err := Inspect(tap, up, o.cfg)
	var d Decision
	var e *Error
	switch {
	case errors.As(err, &e) && e.Kind == KindNotTLS && o.cfg.AllowNotTLS:
		d = Decision{OK: true, Reason: ReasonNotTLS} // raw TCP allowed for this host
	case err != nil:
		d = ErrorDecision(err)
	default:
		d = Decide(res, o.rules)
	}
	r.outcomes <- outcome{res: res, err: err, decision: d, clientIn: tap}
	if !d.OK {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, client) // raw TCP pair: splice path
		_ = up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(client, up)
	_ = client.CloseWrite()
	<-done
}

func (r *relay) next(t *testing.T) outcome {
	t.Helper()
	select {
	case o := <-r.outcomes:
		return o
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not decide")
		return outcome{}
	}
}

func (r *relay) addr() string { return r.ln.Addr().String() }

// captureConn is a net.Conn that records writes and fails reads, so a
// crypto/tls client writes its ClientHello into it and stops.
type captureConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error)      { return c.buf.Write(p) }
func (c *captureConn) Read([]byte) (int, error)         { return 0, errors.New("capture only") }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// goClientHello returns the bytes a crypto/tls client sends first.
func goClientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := &captureConn{}
	_ = tls.Client(c, cfg).Handshake()
	if c.buf.Len() == 0 {
		t.Fatal("no ClientHello captured")
	}
	return c.buf.Bytes()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
