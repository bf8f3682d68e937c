//go:build !linux

package gateway

import (
	"io"
	"syscall"
)

const canWaitReadable = false

func waitReadable(syscall.RawConn) error { return nil }

func copyFromSocket(io.Writer, syscall.RawConn) (int64, error) { panic("unreachable") }
