//go:build !linux

package gateway

import (
	"net"
	"time"
)

// tcpKeepAlive: without the idle sweeper, keep-alive ends dead tunnels.
const tcpKeepAlive = 30 * time.Second

// idleFor is unknown off Linux: idle tunnels there end by TCP keep-alive only.
func idleFor(net.Conn) (time.Duration, bool) { return 0, false }
