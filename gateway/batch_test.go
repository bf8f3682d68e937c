package gateway

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
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
