package gateway

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestWriteChunkGathersRecords: a chunk written to TLS over a batchConn
// leaves in one write to the socket, though crypto/tls makes it several
// records (many at a connection's start, while records grow, then two per
// 32 KiB); the peer reads every byte. A plain tls.Conn.Write of the same
// chunk makes one write per record.
func TestWriteChunkGathersRecords(t *testing.T) {
	pki := newPKI(t, "127.0.0.1")
	ln := loopback(t)
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{pki.cert}})
		b, _ := io.ReadAll(tc)
		got <- b
		tc.Close()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: raw}
	tc := tls.Client(newBatchConn(cc), &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	chunk := randomBytes(largeCopyBytes, 7)
	var want []byte
	for i := range 6 {
		before := cc.writes.Load()
		if n, err := writeChunk(tc, chunk); n != len(chunk) || err != nil {
			t.Fatalf("chunk %d: wrote %d, %v", i, n, err)
		}
		if w := cc.writes.Load() - before; w != 1 {
			t.Errorf("chunk %d went out in %d writes, want 1", i, w)
		}
		want = append(want, chunk...)
	}
	before := cc.writes.Load()
	if _, err := tc.Write(chunk); err != nil {
		t.Fatal(err)
	}
	if w := cc.writes.Load() - before; w < 2 {
		t.Errorf("a plain Write of a 32 KiB chunk made %d writes: the test shows nothing", w)
	}
	want = append(want, chunk...)
	if err := tc.CloseWrite(); err != nil { // close_notify goes straight through
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer read %d bytes, want %d, equal: %t", len(b), len(want), bytes.Equal(b, want))
	}
	tc.Close()
	if n := gatherInUse.Load(); n != 0 {
		t.Fatalf("%d gather buffers still held", n)
	}
}

// TestCloseDoesNotWaitForABlockedChunk: when the peer stops reading, a
// chunk's write blocks on the full socket. Closing the TLS connection then
// (a shutdown, a reload, the idle sweep) must not wait for it: its
// close_notify is gathered behind the chunk and the socket is closed, which
// ends the blocked write. Gathered writes that waited would hold Close for
// crypto/tls's 5 s close_notify deadline, with the gateway's lock held.
func TestCloseDoesNotWaitForABlockedChunk(t *testing.T) {
	pki := newPKI(t, "127.0.0.1")
	ln := loopback(t)
	release := make(chan struct{})
	defer close(release)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{pki.cert}})
		_ = tc.Handshake()
		<-release // reads nothing more
		c.Close()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(newBatchConn(raw), &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	var chunks atomic.Int64
	done := make(chan error, 1)
	go func() {
		chunk := make([]byte, largeCopyBytes)
		for range 100000 { // 3 GiB at most: the socket fills long before
			if _, err := writeChunk(tc, chunk); err != nil {
				done <- err
				return
			}
			chunks.Add(1)
		}
		done <- nil
	}()
	// Wait until the writes stop moving: the chunk in flight is blocked.
	last := int64(-1)
	for i := 0; i < 200 && chunks.Load() != last; i++ {
		last = chunks.Load()
		time.Sleep(50 * time.Millisecond)
	}
	if chunks.Load() != last {
		t.Fatal("writes to a peer that reads nothing never blocked")
	}
	start := time.Now()
	tc.Close()
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("Close took %s with a chunk blocked: it waited for the chunk", d)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("the blocked chunk's write succeeded after Close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked chunk's write did not end after Close")
	}
	if n := gatherInUse.Load(); n != 0 {
		t.Errorf("%d gather buffers still held", n)
	}
}
