package gateway

import (
	"io"
	"net"
)

// pipe copies bytes both ways until both directions have ended, and returns
// the byte counts (up: client to target).
//
// Each direction is a plain io.Copy between the two connections. When both are
// *net.TCPConn, io.Copy reaches (*TCPConn).ReadFrom, which on Linux moves the
// bytes with splice(2) through a kernel pipe: nothing is copied through user
// space and nothing is allocated per byte. That is why nothing wraps the
// connections here. One direction runs on the connection's own goroutine, the
// other on one more; a direction that reaches EOF half-closes its peer, so
// TCP half-close passes through in both directions.
func (s *Server) pipe(cc *clientConn, up net.Conn) (upBytes, downBytes int64) {
	client := cc.c
	done := make(chan int64, 1)
	go func() {
		n, err := io.Copy(up, client)
		if err != nil {
			// A reset or error ends the whole tunnel, not just one direction.
			cc.closeBoth()
		} else {
			_ = closeWrite(up)
		}
		done <- n
	}()
	downBytes, err := io.Copy(client, up)
	if err != nil {
		cc.closeBoth()
	} else {
		_ = closeWrite(client)
	}
	upBytes = <-done
	cc.closeBoth()
	s.stats.bytesUp.Add(uint64(upBytes))
	s.stats.bytesDown.Add(uint64(downBytes))
	return upBytes, downBytes
}
