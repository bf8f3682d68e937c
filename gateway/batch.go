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
// segment's worth, up to seven. writeChunk has it gather the records of one
// chunk and send them with one call.
//
// A write that comes while a chunk is gathered or sent (an alert or
// close_notify from tls.Conn.Close, a reply crypto/tls makes from the reading
// goroutine) is gathered behind it and never waits: Close must not wait for a
// peer that has stopped reading, as it does not while a tls.Conn.Write is in
// flight. At any other time a write goes straight through.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool    // a chunk is gathered or sent: writes join it
	gather   *[]byte // pooled; what waits to be sent, nil until a write comes
}

func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c} }

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.batching {
		if b.gather == nil {
			b.gather = getGather()
		}
		*b.gather = append(*b.gather, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	// Nothing is gathered, so nothing can be sent ahead of this: crypto/tls
	// makes its writes one at a time, and a chunk's records come after this
	// write has returned.
	return b.Conn.Write(p)
}

func (b *batchConn) start() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// flush sends what was gathered since start, then what was gathered while
// that was sent (rarely anything: a buffer is taken only when a write comes),
// until nothing is left; then writes go straight through again. After an
// error, what is left is dropped: the connection is done.
func (b *batchConn) flush() error {
	var err error
	for {
		b.mu.Lock()
		g := b.gather
		b.gather = nil
		if g == nil || err != nil {
			b.batching = false
			b.mu.Unlock()
			if g != nil {
				putGather(g)
			}
			return err
		}
		b.mu.Unlock()
		_, err = b.Conn.Write(*g)
		putGather(g)
	}
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
	g := gatherBufs.Get().(*[]byte)
	*g = (*g)[:0]
	return g
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
