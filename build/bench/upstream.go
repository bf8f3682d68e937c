package main

import (
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
	"sync/atomic"
	"time"
)

// Bulk protocol: the client's first byte picks the direction.
const (
	modeDownload = 'D' // the server writes until the client goes away
	modeUpload   = 'U' // the server reads and counts until EOF
)

// echoSize is the size of the small request and response of a round trip.
const echoSize = 32

// echoQuit as a message's first byte asks the echo server to close after its
// reply. The server then closes first, so TIME_WAIT lands on the listening
// side and thousands of round trips a second do not use up the ephemeral
// ports that every later connection to the same upstream needs.
const echoQuit = 'Q'

// upstream is the local destination every subject tunnels to: a bulk
// source/sink and an echo server, each plain and in TLS 1.3, all on loopback.
type upstream struct {
	bulk, echo, tlsBulk, tlsEcho net.Listener

	received  atomic.Int64 // bytes the bulk sink has read
	echoConns atomic.Int64 // open echo connections (plain and TLS)
	echoSet   map[net.Conn]struct{}
	clientTLS *tls.Config // trusts the server's certificate; TLS 1.3 only, no resumption

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startUpstream listens on four free loopback ports and serves until close.
func startUpstream() (*upstream, error) {
	serverTLS, clientTLS, err := selfSignedTLS(time.Now())
	if err != nil {
		return nil, err
	}
	u := &upstream{conns: map[net.Conn]struct{}{}, echoSet: map[net.Conn]struct{}{}, clientTLS: clientTLS}
	lns := make([]net.Listener, 0, 4)
	for range 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	u.bulk, u.echo = lns[0], lns[1]
	u.tlsBulk, u.tlsEcho = tls.NewListener(lns[2], serverTLS), tls.NewListener(lns[3], serverTLS)
	u.serve(u.bulk, u.handleBulk)
	u.serve(u.echo, u.handleEcho)
	u.serve(u.tlsBulk, u.handleBulk)
	u.serve(u.tlsEcho, u.handleEcho)
	return u, nil
}

// ports are the upstream ports a proxy must allow CONNECT to.
func (u *upstream) ports() []int {
	return []int{port(u.bulk.Addr()), port(u.echo.Addr()), port(u.tlsBulk.Addr()), port(u.tlsEcho.Addr())}
}

func port(a net.Addr) int { return a.(*net.TCPAddr).Port }

func (u *upstream) serve(ln net.Listener, handle func(net.Conn)) {
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. EMFILE: the client side counts the failure
			}
			if !u.track(c) {
				c.Close()
				return
			}
			u.wg.Go(func() {
				defer u.untrack(c)
				handle(c)
			})
		}
	})
}

func (u *upstream) track(c net.Conn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.conns[c] = struct{}{}
	return true
}

func (u *upstream) untrack(c net.Conn) {
	c.Close()
	u.mu.Lock()
	delete(u.conns, c)
	u.mu.Unlock()
}

func (u *upstream) handleBulk(c net.Conn) {
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	buf := make([]byte, 256<<10)
	switch mode[0] {
	case modeDownload:
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	case modeUpload:
		for {
			n, err := c.Read(buf)
			u.received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
}

// handleEcho answers every echoSize bytes with the same bytes until the
// client closes or asks it to (echoQuit); an idle tunnel simply waits here.
func (u *upstream) handleEcho(c net.Conn) {
	u.echoConns.Add(1)
	u.mu.Lock()
	u.echoSet[c] = struct{}{}
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		delete(u.echoSet, c)
		u.mu.Unlock()
		u.echoConns.Add(-1)
	}()
	var buf [echoSize]byte
	for {
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			return
		}
		if _, err := c.Write(buf[:]); err != nil {
			return
		}
		if buf[0] == echoQuit {
			return // the caller closes the connection
		}
	}
}

// closeEcho closes every open echo connection from the server side, so a
// test's idle tunnels end with the upstream closing first (see echoQuit).
func (u *upstream) closeEcho() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for c := range u.echoSet {
		c.Close()
	}
}

// close stops the listeners and every open connection, waiting at most wait.
func (u *upstream) close(wait time.Duration) {
	u.mu.Lock()
	u.closed = true
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	for _, ln := range []net.Listener{u.bulk, u.echo, u.tlsBulk, u.tlsEcho} {
		ln.Close()
	}
	done := make(chan struct{})
	go func() { u.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
}

// selfSignedTLS makes a throwaway ECDSA certificate for 127.0.0.1 and the
// matching server and client configurations, both TLS 1.3 only. The client
// keeps no session cache, so every handshake is a full one.
func selfSignedTLS(now time.Time) (server, client *tls.Config, err error) {
	der, key, cert, err := selfSigned(now, "storegate bench upstream")
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{
		Certificates:           []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
	}
	return server, clientFor(cert), nil
}

func selfSigned(now time.Time, cn string) ([]byte, *ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return der, key, cert, nil
}

// clientFor trusts cert alone for 127.0.0.1, TLS 1.3 only, with no session
// cache.
func clientFor(cert *x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{
		RootCAs:    pool,
		ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
	}
}

// directTLS is the client configuration for the direct equivalent of the
// tests over TLS to the proxy: the upstream's, with the same key exchange as
// the proxies' client (writeProxyCert).
func directTLS(upstream *tls.Config) *tls.Config {
	c := upstream.Clone()
	c.CurvePreferences = []tls.CurveID{tls.X25519}
	return c
}

// writeProxyCert writes a throwaway certificate and key for the proxies' TLS
// listeners into dir, readable by squid's user, and returns their paths and a
// client configuration that trusts the certificate.
//
// That client offers X25519 alone: squid's GnuTLS (3.7 in Debian 12) has no
// ML-KEM, so a client offering Go's default X25519MLKEM768 would make
// storegate do more work per handshake than squid. A store's storegate does
// offer the hybrid, so these handshakes are cheaper than that.
func writeProxyCert(dir string, now time.Time) (certFile, keyFile string, client *tls.Config, err error) {
	der, key, cert, err := selfSigned(now, "storegate bench proxy")
	if err != nil {
		return "", "", nil, err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "proxy-cert.pem"), filepath.Join(dir, "proxy-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o644); err != nil {
		return "", "", nil, err
	}
	client = clientFor(cert)
	client.CurvePreferences = []tls.CurveID{tls.X25519}
	return certFile, keyFile, client, nil
}
