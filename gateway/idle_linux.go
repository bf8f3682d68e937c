package gateway

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// tcpKeepAlive turns TCP keep-alive off on both legs of a tunnel: the idle
// sweeper closes a tunnel whose peer died once idle_timeout passes, and each
// keep-alive setting costs setsockopt calls on every connection.
const tcpKeepAlive = -1

// idleFor reports how long the socket under c has neither sent nor received
// data, from the kernel's TCP_INFO. Reading it needs no per-tunnel timer and
// no wrapper around the connection, so the splice path stays intact.
func idleFor(c net.Conn) (time.Duration, bool) {
	tcp, ok := tcpOf(c)
	if !ok {
		return 0, false
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	ms := min(info.Last_data_recv, info.Last_data_sent)
	return time.Duration(ms) * time.Millisecond, true
}
