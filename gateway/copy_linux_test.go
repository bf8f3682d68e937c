package gateway

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"hash"
	"testing"
)

// hashingWriter hashes what it is given and counts the writes.
type hashingWriter struct {
	h      hash.Hash
	writes int
}

func (w *hashingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.h.Write(p)
}

// TestCopyFromTLSGathersRecords: a TLS read returns one record at most, so
// copyFromTLS fills its buffer from what the connection already holds
// before it writes. 4 MiB in 16 KiB records (more, smaller ones at the
// start) must reach dst intact in fewer writes than there are records; one
// write per read makes 263 here, gathering about 150.
func TestCopyFromTLSGathersRecords(t *testing.T) {
	const total = 4 << 20
	pki := newPKI(t, "127.0.0.1")
	ln := loopback(t)
	type result struct {
		n      int64
		err    error
		writes int
		sum    []byte
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{pki.cert}})
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		tcp, _ := tcpOf(tc)
		raw, err := tcp.SyscallConn()
		if err != nil {
			done <- result{err: err}
			return
		}
		w := &hashingWriter{h: sha256.New()}
		n, err := copyFromTLS(w, tc, raw)
		done <- result{n, err, w.writes, w.h.Sum(nil)}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := randomBytes(total, 3)
	for off := 0; off < total; off += 256 << 10 {
		if _, err := c.Write(data[off : off+256<<10]); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	want := sha256.Sum256(data)
	if r.err != nil || r.n != total || !bytes.Equal(r.sum, want[:]) {
		t.Fatalf("copied %d bytes, %v; intact: %t", r.n, r.err, bytes.Equal(r.sum, want[:]))
	}
	if records := total / maxRecord; r.writes >= records {
		t.Fatalf("%d writes for at least %d records: records were not gathered", r.writes, records)
	}
	t.Logf("%d writes", r.writes)
}

// maxRecord is the most plaintext a TLS record carries.
const maxRecord = 16 << 10
