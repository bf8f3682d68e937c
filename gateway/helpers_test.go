package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// recorder is an events.Emitter that keeps every event for assertions.
type recorder struct {
	mu  sync.Mutex
	evs []recorded
}

type recorded struct {
	id     events.ID
	msg    string
	fields map[string]string
}

func (r *recorder) Emit(id events.ID, msg string, fields ...events.Field) {
	m := map[string]string{}
	for _, f := range fields {
		if f.Str != "" {
			m[f.Key] = f.Str
		} else {
			m[f.Key] = fmt.Sprint(f.Int)
		}
	}
	r.mu.Lock()
	r.evs = append(r.evs, recorded{id, msg, m})
	r.mu.Unlock()
}

// waitFor returns the first event with id whose fields contain want, waiting
// up to 5 seconds for it.
func (r *recorder) waitFor(t *testing.T, id events.ID, want map[string]string) recorded {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		for _, e := range r.evs {
			if e.id != id {
				continue
			}
			ok := true
			for k, v := range want {
				if e.fields[k] != v {
					ok = false
				}
			}
			if ok {
				r.mu.Unlock()
				return e
			}
		}
		all := fmt.Sprint(r.evs)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no event %d with %v; have %s", id, want, all)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mapResolver resolves test names to chosen addresses.
type mapResolver map[string][]string

func (m mapResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	addrs, ok := m[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

type testGW struct {
	srv  *Server
	rec  *recorder
	addr string // proxy host:port
}

// startGW runs a gateway on loopback with the given policy body (version,
// listen and admin keys are added).
func startGW(t *testing.T, body string, mod func(*Config)) *testGW {
	t.Helper()
	snap := testSnap(t, body)
	rec := &recorder{}
	cfg := Config{Version: "test", Events: rec}
	if mod != nil {
		mod(&cfg)
	}
	srv := New(cfg)
	if err := srv.Apply(snap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &testGW{srv: srv, rec: rec, addr: srv.Addr("proxy").String()}
}

// testSnap compiles a test policy: body after a header that listens on any
// free loopback ports (applied again to the same gateway, it keeps them).
func testSnap(t *testing.T, body string) *policy.Snapshot {
	t.Helper()
	yaml := "version: 1\nlisten_address: 127.0.0.1\nlisten_port: 1\nadmin_address: 127.0.0.1:1\n" + body
	f, err := policy.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, yaml)
	}
	f.ListenPort, f.AdminAddress = 0, "127.0.0.1:0" // any free ports; Parse refuses 0 on purpose
	snap, err := policy.Compile(f, []byte(yaml), "test.yaml", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// testPKI is a CA and a server certificate for the given names.
type testPKI struct {
	caPEM   []byte
	pool    *x509.CertPool
	cert    tls.Certificate
	dir     string
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	caFile  string
	crtFile string
	keyFile string
}

func newPKI(t testing.TB, names ...string) *testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "storegate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{ca: ca, caKey: caKey, dir: t.TempDir()}
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	p.cert, p.crtFile, p.keyFile = p.issue(t, pkix.Name{CommonName: names[0]}, names, false)
	p.caFile = filepath.Join(p.dir, "ca.pem")
	os.WriteFile(p.caFile, p.caPEM, 0o644)
	return p
}

var serial int64 = 100

func (p *testPKI) issue(t testing.TB, subj pkix.Name, names []string, client bool) (tls.Certificate, string, string) {
	t.Helper()
	return p.issueRaw(t, subj, nil, names, client)
}

// issueRaw is issue with the subject given as DER (rawSubject), when it
// needs what pkix.Name cannot say, such as a multi-valued RDN.
func (p *testPKI) issueRaw(t testing.TB, subj pkix.Name, rawSubject []byte, names []string, client bool) (tls.Certificate, string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: subj, RawSubject: rawSubject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	crtPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	base := filepath.Join(p.dir, fmt.Sprintf("c%d", serial))
	os.WriteFile(base+".crt", crtPEM, 0o644)
	os.WriteFile(base+".key", keyPEM, 0o600)
	cert, err := tls.X509KeyPair(crtPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, base + ".crt", base + ".key"
}

// tlsUpstream is a real HTTPS server on loopback that answers with its name.
func tlsUpstream(t *testing.T, pki *testPKI, body string) (port int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, body)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pki.cert}},
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// freePort returns a loopback port that was free a moment ago; policy files
// need a real port (Parse refuses 0).
// randomBytes is size pseudo-random bytes, different for each seed, for
// checking that a tunnel neither loses, reorders nor duplicates bytes.
func randomBytes(size int, seed byte) []byte {
	b := make([]byte, size)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func freePort(t testing.TB) int {
	t.Helper()
	ln := loopback(t)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// loopback listens on a free port of 127.0.0.1.
func loopback(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

// serve accepts on ln until the test ends, running handle for each
// connection on its own goroutine, and returns ln's port.
func serve(tb testing.TB, ln net.Listener, handle func(net.Conn)) int {
	tb.Helper()
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// bulkPeer is an upstream that writes down and half-closes while it reads
// to EOF; what it read comes on got.
func bulkPeer(t testing.TB, down []byte) (port int, got <-chan []byte) {
	t.Helper()
	ch := make(chan []byte, 1)
	port = serve(t, loopback(t), func(c net.Conn) {
		defer c.Close()
		wrote := make(chan struct{})
		go func() { c.Write(down); c.(*net.TCPConn).CloseWrite(); close(wrote) }()
		b, _ := io.ReadAll(c)
		ch <- b
		<-wrote
	})
	return port, ch
}

// sendBothWays writes up on c and half-closes it (close_notify on TLS)
// while it reads r to EOF, and wants down from r and up at the peer.
func sendBothWays(t *testing.T, c net.Conn, r io.Reader, up, down []byte, peerGot <-chan []byte) {
	t.Helper()
	go func() { c.Write(up); closeWrite(c) }()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, down) {
		t.Fatalf("downstream: %d bytes, equal=false", len(got))
	}
	select {
	case b := <-peerGot:
		if !bytes.Equal(b, up) {
			t.Fatalf("upstream: %d bytes, equal=false", len(b))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("upstream did not finish")
	}
}

// echoServer echoes what it reads; after the client half-closes it writes
// "bye" and closes.
func echoServer(t *testing.T) int {
	t.Helper()
	return serve(t, loopback(t), func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
		io.WriteString(c, "bye")
	})
}

// rawConnect sends a CONNECT and returns the connection and the response's
// status line.
func rawConnect(t *testing.T, proxy, request string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading status after %q: %v", request, err)
	}
	return c, br, strings.TrimRight(line, "\r\n")
}

// openTunnel sends CONNECT target, requires the 200 and reads past the blank
// line after it, so that br holds only bytes from the tunnel.
func openTunnel(t *testing.T, proxy, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br, status := rawConnect(t, proxy, "CONNECT "+target+" HTTP/1.1\r\n\r\n")
	if status != "HTTP/1.1 200 Connection established" {
		t.Fatalf("CONNECT %s: %q", target, status)
	}
	br.ReadString('\n')
	return c, br
}

// getVia fetches url through the proxy with a Go client and returns the body.
func getVia(t *testing.T, proxy string, roots *x509.CertPool, url string) string {
	t.Helper()
	resp, err := proxyClient(proxy, roots).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func proxyClient(proxy string, roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:             http.ProxyURL(mustURL("http://" + proxy)),
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			DisableKeepAlives: true,
		},
	}
}
