package gateway

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// copyByPoller copies with the poller's help when src is a TCP connection
// or TLS over one; ok is false otherwise, and nothing was read.
func copyByPoller(dst io.Writer, src net.Conn) (n int64, err error, ok bool) {
	switch c := src.(type) {
	case *net.TCPConn:
		if raw, err := c.SyscallConn(); err == nil {
			n, err := copyFromSocket(dst, raw)
			return n, err, true
		}
	case *tls.Conn:
		if tcp, isTCP := tcpOf(c); isTCP {
			if raw, err := tcp.SyscallConn(); err == nil {
				n, err := copyFromTLS(dst, c, raw)
				return n, err, true
			}
		}
	}
	return 0, nil, false
}

// aLongTimeAgo is a read deadline that has passed: a read with it returns
// only what the reader has already buffered.
var aLongTimeAgo = time.Unix(1, 0)

// copyFromTLS waits for bytes on the socket under src holding no buffer,
// then reads what is at hand with a pooled one and gives it back. The TLS
// connection may hold decrypted or undecrypted bytes of its own: reads with
// a passed deadline take those before the buffer goes back. A read returns
// one record (16 KiB at most), so those reads also fill the buffer before
// it is written: a stream reaches dst in 32 KiB writes, not one per record.
func copyFromTLS(dst io.Writer, src *tls.Conn, raw syscall.RawConn) (written int64, err error) {
	for {
		if err := waitReadable(raw); err != nil {
			return written, err
		}
		bp := getLarge()
		buf := *bp
		n, rerr := src.Read(buf) // bytes (or EOF) are there: this returns promptly
		for {
			held := rerr == nil // the TLS connection may hold more
			for held && n < len(buf) {
				m, err := readHeld(src, buf[n:])
				n += m
				switch {
				case errors.Is(err, os.ErrDeadlineExceeded) || (err == nil && m == 0):
					held = false
				case err != nil:
					rerr, held = err, false
				}
			}
			if n > 0 {
				m, werr := writeChunk(dst, buf[:n])
				written += int64(m)
				if werr == nil && m != n {
					werr = io.ErrShortWrite
				}
				if werr != nil {
					putLarge(bp)
					return written, werr
				}
				n = 0
			}
			if !held {
				break
			}
		}
		putLarge(bp)
		switch {
		case rerr == io.EOF:
			return written, nil
		case rerr != nil:
			return written, rerr
		}
	}
}

// readHeld reads only what src already holds, without waiting for its socket.
func readHeld(src *tls.Conn, p []byte) (int, error) {
	_ = src.SetReadDeadline(aLongTimeAgo)
	n, err := src.Read(p)
	_ = src.SetReadDeadline(time.Time{})
	return n, err
}

// waitReadable returns once raw's socket has bytes, EOF or an error to
// report, holding no buffer meanwhile: a one-byte MSG_PEEK that finds
// nothing parks the goroutine on the poller.
func waitReadable(raw syscall.RawConn) error {
	var one [1]byte
	return raw.Read(func(fd uintptr) bool {
		for {
			_, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch err {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			return true // bytes, EOF (0) or an error: the read will say which
		}
	})
}

// copyFromSocket copies a plain TCP source to dst (a TLS connection) with
// non-blocking reads made from the poller's callback, as spliceCopy fills
// its pipe: a pooled buffer is taken when a read may find bytes and given
// back when it finds none, so a quiet direction waits holding nothing.
func copyFromSocket(dst io.Writer, raw syscall.RawConn) (written int64, err error) {
	var bp *[]byte
	defer func() {
		if bp != nil {
			putLarge(bp)
		}
	}()
	var n int
	var rerr error
	read := func(fd uintptr) bool {
		if bp == nil {
			bp = getLarge()
		}
		for {
			n, rerr = unix.Read(int(fd), *bp)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			putLarge(bp)
			bp = nil
			return false
		}
		return true
	}
	for {
		if err := raw.Read(read); err != nil {
			return written, err
		}
		switch {
		case rerr != nil:
			return written, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", rerr)}
		case n == 0:
			return written, nil // EOF
		}
		m, werr := writeChunk(dst, (*bp)[:n])
		written += int64(m)
		if werr == nil && m != n {
			werr = io.ErrShortWrite
		}
		if werr != nil {
			return written, werr
		}
	}
}
