package tlspeek

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// refragConn sits under a crypto/tls client and rewrites its cleartext
// handshake records on the way out: each record's payload is cut into new
// records by plan, and the result is written in TCP segments of at most
// segment bytes. The handshake itself is unchanged (the transcript covers
// messages, not records), so a real server still completes it.
type refragConn struct {
	net.Conn
	plan     func(payload int) []int // sizes of the new records' payloads
	segment  int                     // bytes per Write; 0 means all at once
	extraCCS bool                    // append a ChangeCipherSpec to the first ClientHello write
	pending  []byte
	sawCCS   bool
	records  int // records written
	wroteCH  bool
}

func (c *refragConn) Write(p []byte) (int, error) {
	c.pending = append(c.pending, p...)
	var out []byte
	for len(c.pending) >= 5 {
		n := int(c.pending[3])<<8 | int(c.pending[4])
		if len(c.pending) < 5+n {
			break
		}
		rec := c.pending[:5+n]
		c.pending = c.pending[5+n:]
		typ, payload := rec[0], rec[5:]
		switch {
		case typ == recordHandshake && !c.sawCCS && c.plan != nil:
			for _, size := range c.plan(len(payload)) {
				out = append(out, typ, rec[1], rec[2], byte(size>>8), byte(size))
				out = append(out, payload[:size]...)
				payload = payload[size:]
				c.records++
			}
		default:
			if typ == recordChangeCipherSpec {
				c.sawCCS = true
			}
			out = append(out, rec...)
			c.records++
		}
		if typ == recordHandshake && !c.wroteCH && c.extraCCS {
			// As a TLS 1.3 client sending early data may (RFC 8446 D.4).
			out = append(out, recordChangeCipherSpec, 3, 3, 0, 1, 1)
			c.sawCCS = true
		}
		c.wroteCH = true
	}
	for len(out) > 0 {
		n := len(out)
		if c.segment > 0 {
			n = min(n, c.segment)
		}
		if _, err := c.Conn.Write(out[:n]); err != nil {
			return 0, err
		}
		out = out[n:]
	}
	return len(p), nil
}

// Plans for cutting a handshake record's payload.
func oneByteRecords(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

func cutAt(points ...int) func(int) []int {
	return func(n int) []int {
		var s []int
		prev := 0
		for _, p := range points {
			if p < n {
				s = append(s, p-prev)
				prev = p
			}
		}
		return append(s, n-prev)
	}
}

func TestFragmentation(t *testing.T) {
	p := newPKI(t)
	allowed := mustSubjects(t, p.clientDN)
	cases := []struct {
		name      string
		version   uint16
		plan      func(int) []int
		segment   int
		maxChunk  int // relay-side cap on each Read of the client
		early     int // bytes the relay reads before Inspect, passed as Config.Early
		extraCCS  bool
		clientTLS bool // client certificate, TLS 1.2 server requesting it
		hrr       bool
	}{
		{name: "tls1.3 1-byte records in 1-byte segments", version: tls.VersionTLS13, plan: oneByteRecords, segment: 1, maxChunk: 1},
		{name: "tls1.3 1-byte records one write", version: tls.VersionTLS13, plan: oneByteRecords},
		{name: "tls1.3 split after 1 header byte", version: tls.VersionTLS13, plan: cutAt(1)},
		{name: "tls1.3 split after 2 header bytes", version: tls.VersionTLS13, plan: cutAt(2)},
		{name: "tls1.3 split after 3 header bytes", version: tls.VersionTLS13, plan: cutAt(3)},
		{name: "tls1.3 header in 4 records", version: tls.VersionTLS13, plan: cutAt(1, 2, 3, 4)},
		{name: "tls1.3 split mid-extension", version: tls.VersionTLS13, plan: cutAt(100, 700, 1300)},
		{name: "tls1.3 intact records 1-byte segments", version: tls.VersionTLS13, segment: 1, maxChunk: 1},
		{name: "tls1.3 record header split across reads", version: tls.VersionTLS13, plan: cutAt(300), segment: 3, maxChunk: 2},
		{name: "tls1.3 ccs in the same read", version: tls.VersionTLS13, extraCCS: true},
		{name: "tls1.3 early bytes behind CONNECT", version: tls.VersionTLS13, early: 7, maxChunk: 5},
		{name: "tls1.3 hello retry 1-byte records", version: tls.VersionTLS13, plan: oneByteRecords, hrr: true},
		{name: "tls1.2 1-byte records with client cert", version: tls.VersionTLS12, plan: oneByteRecords, segment: 2,
			maxChunk: 3, clientTLS: true},
		{name: "tls1.2 client flight with ccs in one read", version: tls.VersionTLS12, clientTLS: true},
		{name: "tls1.2 cert message split in header", version: tls.VersionTLS12, plan: cutAt(2, 5), clientTLS: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			auth := tls.NoClientCert
			o := relayOpts{rules: Rules{Host: p.serverName}, maxChunk: tc.maxChunk}
			if tc.clientTLS {
				auth = tls.RequireAndVerifyClientCert
				o.cfg.NeedClientCert = true
				o.rules.AllowedSubjects = allowed
			}
			scfg := serverConfig(p, auth)
			if tc.hrr {
				scfg.CurvePreferences = []tls.CurveID{tls.CurveP256}
			}
			srv := startTLSServer(t, scfg)
			var rl *relay
			if tc.early > 0 {
				rl = startEarlyRelay(t, srv.ln.Addr().String(), o, tc.early)
			} else {
				rl = startRelay(t, srv.ln.Addr().String(), o)
			}
			var rc *refragConn
			wrap := func(c net.Conn) net.Conn {
				c.(*tapConn).Conn.(*net.TCPConn).SetNoDelay(true)
				rc = &refragConn{Conn: c, plan: tc.plan, segment: tc.segment, extraCCS: tc.extraCCS}
				return rc
			}
			sent, cerr := goClient(t, rl.addr(), clientConfig(p, tc.version, tc.clientTLS), wrap)
			out := rl.next(t)
			sc := srv.next(t)
			if out.err != nil || cerr != nil || sc.handshakeErr != nil {
				t.Fatalf("inspect %v, client %v, server %v", out.err, cerr, sc.handshakeErr)
			}
			if !out.decision.OK || out.res.Version != tc.version || out.res.SNI != p.serverName || out.res.HelloRetry != tc.hrr {
				t.Fatalf("decision %+v result %+v", out.decision, out.res)
			}
			if tc.clientTLS && (out.res.ClientCert == nil || out.res.ClientCert.Subject != p.clientDN) {
				t.Fatalf("client certificate %+v", out.res.ClientCert)
			}
			if tc.plan != nil && rc.records < 4 {
				t.Fatalf("only %d records written: the plan did not fragment", rc.records)
			}
			if got := sc.tap.readBytes(); !bytes.Equal(got, sent) {
				t.Fatalf("upstream received %d bytes, client sent %d: not identical", len(got), len(sent))
			}
		})
	}
}

// startEarlyRelay is the test relay with a CONNECT-style twist: it reads the
// first early bytes itself and hands them to Inspect as Config.Early.
func startEarlyRelay(t *testing.T, upstream string, o relayOpts, early int) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, outcomes: make(chan outcome, 4)}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, early)
		if _, err := io.ReadFull(c, buf); err != nil {
			c.Close()
			r.outcomes <- outcome{err: err}
			return
		}
		o.cfg.Early = buf
		r.serve(c.(*net.TCPConn), upstream, o)
	}()
	return r
}

// Cancelling the context stops an inspection that waits on a silent client.
func TestContextCancel(t *testing.T) {
	_, clientSide := tcpPair(t)
	_, upSide := tcpPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := InspectContext(ctx, clientSide, upSide, Config{Timeout: time.Minute})
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindTimeout || !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want a timeout wrapping context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("InspectContext ignored cancellation")
	}
}
