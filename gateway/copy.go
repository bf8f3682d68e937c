package gateway

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Tunnels that cannot splice (one side is TLS: the TLS listener, a TLS
// relay; or not Linux) copy through user space. io.Copy would hold a 32 KiB
// buffer per direction for the tunnel's whole life, idle or not, which on a
// regional storegate carrying thousands of stores' tunnels is most of its
// memory. copyBuffered holds a pooled buffer only while bytes are at hand:
// it waits for the source's socket with no buffer at all, as spliceCopy
// waits without a pipe (Linux), and elsewhere reads into a small buffer
// until a stream flows.
const (
	smallCopyBytes = 2 << 10
	largeCopyBytes = 32 << 10
	// streamBytes: a read at least this long means more is probably
	// coming (a TLS record carries at most 16 KiB, so one read of a TLS
	// stream never fills the large buffer).
	streamBytes = 8 << 10
)

var largeCopyBufs = sync.Pool{New: func() any { b := make([]byte, largeCopyBytes); return &b }}

// largeInUse counts the large buffers tunnels hold (for tests).
var largeInUse atomic.Int64

func getLarge() *[]byte {
	largeInUse.Add(1)
	return largeCopyBufs.Get().(*[]byte)
}

func putLarge(b *[]byte) {
	largeInUse.Add(-1)
	largeCopyBufs.Put(b)
}

// copyBuffered copies src to dst until EOF (nil error) or an error, like
// io.Copy without its WriterTo/ReaderFrom shortcuts.
func copyBuffered(dst io.Writer, src net.Conn) (int64, error) {
	if n, err, ok := copyByPoller(dst, src); ok {
		return n, err
	}
	return copyAdaptive(dst, src)
}

// copyAdaptive reads into a small buffer of its own and takes a pooled
// large one only while reads come back long, giving it back as soon as one
// comes back short.
func copyAdaptive(dst io.Writer, src io.Reader) (written int64, err error) {
	small := make([]byte, smallCopyBytes)
	var large *[]byte
	defer func() {
		if large != nil {
			putLarge(large)
		}
	}()
	for {
		buf := small
		if large != nil {
			buf = *large
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			m, werr := writeChunk(dst, buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if m != n {
				return written, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			return written, rerr
		}
		switch streaming := n == len(buf) || n >= streamBytes; {
		case streaming && large == nil:
			large = getLarge()
		case !streaming && large != nil:
			putLarge(large)
			large = nil
		}
	}
}
