package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// batchConn is the connection under the tls.Conn of a tunnel's TLS side (the
// TLS listener, a TLS relay). crypto/tls writes every record to its
// connection with a system call of its own: a 32 KiB chunk is two records,
// and in a connection's first 128 KB, while Go grows records from one TCP
// segment's worth, up to a dozen. writeChunk has it gather the records of one
// chunk and send them with one call. At any other time (the handshake,
// alerts, close_notify) a write goes straight through.
type batchConn struct {
	net.Conn

	mu     sync.Mutex
	gather *[]byte // pooled; set only while a chunk is written
}

func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c} }

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gather != nil {
		*b.gather = append(*b.gather, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchConn) start() {
	b.mu.Lock()
	g := getGather()
	*g = (*g)[:0]
	b.gather = g
	b.mu.Unlock()
}

// flush sends what was gathered since start, in order with any write that
// crypto/tls made meanwhile from another goroutine (it serialises its own).
func (b *batchConn) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	g := b.gather
	b.gather = nil
	var err error
	if len(*g) > 0 {
		_, err = b.Conn.Write(*g)
	}
	putGather(g)
	return err
}

// gatherBytes holds a 32 KiB chunk's records with their headers and tags
// (29 bytes each at most, 16 records at the smallest sizes); a larger chunk
// grows it.
const gatherBytes = largeCopyBytes + 1<<10

var gatherBufs = sync.Pool{New: func() any { b := make([]byte, 0, gatherBytes); return &b }}

// gatherInUse counts the gather buffers tunnels hold (for tests).
var gatherInUse atomic.Int64

func getGather() *[]byte {
	gatherInUse.Add(1)
	return gatherBufs.Get().(*[]byte)
}

func putGather(b *[]byte) {
	gatherInUse.Add(-1)
	if cap(*b) > 4*gatherBytes {
		return // grown by an outsized chunk: let it go
	}
	gatherBufs.Put(b)
}

// writeChunk writes one chunk to dst; when dst is TLS over a batchConn, its
// records go out in one system call.
func writeChunk(dst io.Writer, p []byte) (int, error) {
	tc, ok := dst.(*tls.Conn)
	if !ok {
		return dst.Write(p)
	}
	bc, ok := tc.NetConn().(*batchConn)
	if !ok {
		return dst.Write(p)
	}
	bc.start()
	n, err := tc.Write(p)
	if ferr := bc.flush(); err == nil {
		err = ferr
	}
	return n, err
}

// tcpOf is the TCP connection under c, under its TLS and batchConn layers if
// it has them.
func tcpOf(c net.Conn) (*net.TCPConn, bool) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if bc, ok := c.(*batchConn); ok {
		c = bc.Conn
	}
	t, ok := c.(*net.TCPConn)
	return t, ok
}
