package gateway

import (
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const canWaitReadable = true

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
		m, werr := dst.Write((*bp)[:n])
		written += int64(m)
		if werr == nil && m != n {
			werr = io.ErrShortWrite
		}
		if werr != nil {
			return written, werr
		}
	}
}
