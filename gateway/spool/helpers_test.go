package spool

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// testCert makes a self-signed certificate for 127.0.0.1 and returns it with
// its PEM encoding.
func testCert(t testing.TB) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "receiver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func poolFromPEM(t testing.TB, p []byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p) {
		t.Fatal("bad PEM")
	}
	return pool
}

// receipt is one request a receiver got.
type receipt struct {
	Path, Key, Body string
	Header          http.Header
	Resumed         bool // the request came on a resumed TLS session
}

// Receiver modes.
const (
	modeNormal int32 = iota
	modeBlackhole
	modeReset
)

// receiver is a real HTTPS server on loopback that can be stopped, made to
// black-hole or reset connections, and restarted on the same port.
type receiver struct {
	t       testing.TB
	addr    string
	tlsConf *tls.Config
	srv     *http.Server
	handoff chan net.Conn
	mode    atomic.Int32
	open    atomic.Int32 // connections the HTTP server holds open
	// respond picks the status for a request; nil means 200.
	respond atomic.Pointer[func(r *http.Request, n int) (int, http.Header)]

	mu    sync.Mutex
	ln    net.Listener
	held  []net.Conn
	got   []receipt
	count map[string]int // requests per path
	done  chan struct{}
}

// rootsOf is Options.Roots for a fixed pool.
func rootsOf(p *x509.CertPool) func() (*x509.CertPool, error) {
	return func() (*x509.CertPool, error) { return p, nil }
}

func newReceiver(t testing.TB, cert tls.Certificate) *receiver {
	t.Helper()
	r := &receiver{t: t, handoff: make(chan net.Conn), count: map[string]int{}}
	r.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				r.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				r.open.Add(-1)
			}
		}}
	cl := &chanListener{ch: r.handoff, done: make(chan struct{})}
	go r.srv.Serve(tls.NewListener(cl, r.tlsConf))
	r.start("127.0.0.1:0")
	t.Cleanup(func() {
		r.stop()
		r.srv.Close()
	})
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return // the sender died mid-request: nothing was received
	}
	r.mu.Lock()
	r.count[req.URL.Path]++
	n := r.count[req.URL.Path]
	r.mu.Unlock()
	code, h := http.StatusOK, http.Header(nil)
	if f := r.respond.Load(); f != nil {
		code, h = (*f)(req, n)
	}
	if code/100 == 2 {
		r.mu.Lock()
		r.got = append(r.got, receipt{Path: req.URL.Path, Key: req.Header.Get("Idempotency-Key"), Body: string(body), Header: req.Header.Clone(),
			Resumed: req.TLS != nil && req.TLS.DidResume})
		r.mu.Unlock()
	}
	for k, vs := range h {
		w.Header()[k] = vs
	}
	w.WriteHeader(code)
}

func (r *receiver) setRespond(f func(r *http.Request, n int) (int, http.Header)) { r.respond.Store(&f) }

func (r *receiver) start(addr string) {
	r.t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the port is still in TIME_WAIT/closing
	}
	if err != nil {
		r.t.Fatalf("receiver listen: %v", err)
	}
	r.mu.Lock()
	r.ln = ln
	if r.addr == "" { // set once, before anyone reads it; restarts reuse it
		r.addr = ln.Addr().String()
	}
	r.done = make(chan struct{})
	done := r.done
	r.mu.Unlock()
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			switch r.mode.Load() {
			case modeBlackhole:
				r.mu.Lock()
				r.held = append(r.held, c)
				r.mu.Unlock()
			case modeReset:
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			default:
				r.mu.Lock()
				r.held = append(r.held, c) // tracked so stop can cut it
				r.mu.Unlock()
				r.handoff <- c
			}
		}
	}()
}

// stop closes the listener and every connection: the port refuses.
func (r *receiver) stop() {
	r.mu.Lock()
	ln, done, held := r.ln, r.done, r.held
	r.ln, r.held = nil, nil
	r.mu.Unlock()
	if ln == nil {
		return
	}
	ln.Close()
	<-done
	for _, c := range held {
		c.Close()
	}
}

func (r *receiver) restart() { r.start(r.addr) }

func (r *receiver) receipts() []receipt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receipt(nil), r.got...)
}

type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// eventLog records the IDs of events for assertions.
type eventLog struct {
	mu   sync.Mutex
	ids  []events.ID
	msgs []string
}

func (l *eventLog) Emit(id events.ID, msg string, _ ...events.Field) {
	l.mu.Lock()
	l.ids = append(l.ids, id)
	l.msgs = append(l.msgs, msg)
	l.mu.Unlock()
}

// said reports whether an event with this ID had a message containing sub.
func (l *eventLog) said(id events.ID, sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range l.ids {
		if x == id && strings.Contains(l.msgs[i], sub) {
			return true
		}
	}
	return false
}

// countSaid counts the events with this ID whose message contains sub.
func (l *eventLog) countSaid(id events.ID, sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i, x := range l.ids {
		if x == id && strings.Contains(l.msgs[i], sub) {
			n++
		}
	}
	return n
}

func (l *eventLog) count(id events.ID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.ids {
		if x == id {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
