// Command init is PID 1 of the storegate firmware image: it wires
// firmware/initd to the kernel console and never returns.
package main

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/storegate/storegate/firmware/initd"
)

func main() {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	cfg := initd.Defaults(unix.ByteSliceToString(uts.Release[:]), os.Stderr)
	if os.Getpid() != 1 {
		os.Stderr.WriteString("storegate-init: must run as PID 1 of the firmware image\n")
		os.Exit(2)
	}
	initd.Halt(initd.Run(cfg))
}
