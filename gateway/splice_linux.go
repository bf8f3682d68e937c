package gateway

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The tunnel's copy loop. Bytes move socket -> pipe -> socket with splice(2),
// so they never enter user space, as with (*net.TCPConn).ReadFrom. The
// difference is when the pipe is held: ReadFrom takes a pipe for the whole
// life of the tunnel, so an idle tunnel costs two pipes (four descriptors and
// their kernel buffers) on top of its two sockets. Here a direction takes a
// pipe from a small free list only while bytes are in flight and gives it back
// whenever the source has nothing to read, so an idle tunnel holds just its
// two sockets and two parked goroutines. A store box with the default
// descriptor limit can then hold several times as many tunnels.

const (
	pipeBytes    = 1 << 20         // pipe capacity asked for (F_SETPIPE_SZ), as Go's own splice
	freePipesMax = 16              // empty pipes kept for reuse
	pipeRest     = 2 * time.Second // the cache lets go of its pipes after a rest this long
)

type pipe struct {
	r, w int
	size int
}

// pipes keeps empty pipes for the next chunk, so a busy gateway does not
// make and close a pipe per chunk. When no chunk has taken one for a whole
// pipeRest, it closes them all: a gateway that has gone quiet holds no pipe.
var pipes pipeCache

type pipeCache struct {
	mu    sync.Mutex
	free  []*pipe
	used  bool        // a pipe was taken since the last check
	timer *time.Timer // runs check while the cache holds pipes
	armed bool
}

func getPipe() (*pipe, error) {
	pipes.mu.Lock()
	if n := len(pipes.free); n > 0 {
		p := pipes.free[n-1]
		pipes.free = pipes.free[:n-1]
		pipes.used = true
		pipes.mu.Unlock()
		return p, nil
	}
	pipes.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	p := &pipe{r: fds[0], w: fds[1], size: 64 << 10}
	// A larger pipe means fewer calls per megabyte; if the kernel refuses
	// (per-user pipe limits), the default size works too.
	if n, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, pipeBytes); err == nil {
		p.size = n
	}
	return p, nil
}

// putPipe returns an empty pipe to the cache, or closes it.
func putPipe(p *pipe) {
	pipes.mu.Lock()
	if len(pipes.free) >= freePipesMax {
		pipes.mu.Unlock()
		p.close()
		return
	}
	pipes.free = append(pipes.free, p)
	if !pipes.armed {
		pipes.armed = true
		if pipes.timer == nil {
			pipes.timer = time.AfterFunc(pipeRest, pipes.check)
		} else {
			pipes.timer.Reset(pipeRest)
		}
	}
	pipes.mu.Unlock()
}

// check closes the cached pipes if none was taken since the last check.
func (c *pipeCache) check() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.used && len(c.free) > 0 {
		c.used = false
		c.timer.Reset(pipeRest)
		return
	}
	for _, p := range c.free {
		p.close()
	}
	clear(c.free)
	c.free = c.free[:0]
	c.used = false
	c.armed = false
}

// cachedPipes reports how many empty pipes the cache holds (for tests).
func cachedPipes() int {
	pipes.mu.Lock()
	defer pipes.mu.Unlock()
	return len(pipes.free)
}

func (p *pipe) close() {
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}

// spliceCopy copies src to dst until EOF (nil error) or an error. handled is
// false when the connections are not both plain TCP; the caller then uses
// io.Copy.
func spliceCopy(dst, src net.Conn) (written int64, err error, handled bool) {
	s, ok1 := src.(*net.TCPConn)
	d, ok2 := dst.(*net.TCPConn)
	if !ok1 || !ok2 {
		return 0, nil, false
	}
	sraw, err := s.SyscallConn()
	if err != nil {
		return 0, err, true
	}
	draw, err := d.SyscallConn()
	if err != nil {
		return 0, err, true
	}
	st := &spliceState{}
	defer func() {
		if st.p != nil {
			st.p.close() // may hold bytes that never reached dst
		}
	}()
	// The callbacks are made once: a closure per chunk would allocate.
	fill, drain := st.fill, st.drain
	for {
		// Fill: wait for the source without a pipe, splice what it has.
		if err := sraw.Read(fill); err != nil {
			return st.written, err, true
		}
		switch {
		case st.err != nil:
			return st.written, os.NewSyscallError("splice", st.err), true
		case st.n == 0:
			putPipe(st.p)
			st.p = nil
			return st.written, nil, true // EOF
		}
		// Drain: all of it, waiting for the destination as needed.
		st.left = st.n
		if err := draw.Write(drain); err != nil {
			return st.written, err, true
		}
		if st.err != nil {
			if errors.Is(st.err, syscall.EPIPE) || errors.Is(st.err, syscall.ECONNRESET) {
				return st.written, &net.OpError{Op: "write", Net: "tcp", Err: st.err}, true
			}
			return st.written, os.NewSyscallError("splice", st.err), true
		}
	}
}

// spliceState is one direction's copy in progress.
type spliceState struct {
	p       *pipe
	n, left int64
	written int64
	err     error
}

// fill moves what the source socket holds into the pipe; with nothing to read
// it gives the pipe back and asks to wait (returns false).
func (st *spliceState) fill(fd uintptr) bool {
	if st.p == nil {
		if st.p, st.err = getPipe(); st.err != nil {
			return true
		}
	}
	for {
		st.n, st.err = splice(int(fd), st.p.w, st.p.size)
		if st.err != unix.EINTR {
			break
		}
	}
	if st.err == unix.EAGAIN {
		putPipe(st.p) // empty: nothing was read, so nothing is in flight
		st.p, st.err = nil, nil
		return false
	}
	return true
}

// drain moves the pipe's bytes into the destination socket; when it cannot
// take more it asks to wait (returns false).
func (st *spliceState) drain(fd uintptr) bool {
	for st.left > 0 {
		m, e := splice(st.p.r, int(fd), int(st.left))
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return false
		case e != nil:
			st.err = e
			return true
		}
		st.left -= m
		st.written += m
	}
	return true
}

// splice moves up to n bytes from in to out without blocking. It is a raw
// system call: both ends are non-blocking, so it never waits, and skipping
// the scheduler's syscall bookkeeping means a long splice (a megabyte handed
// to the loopback) does not make the runtime hand the P to another thread and
// wake it, which on a small box cost more than the copy.
func splice(in, out, n int) (int64, error) {
	r, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int64(r), nil
}
