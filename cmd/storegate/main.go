// Command storegate is the store edge gateway: a CONNECT proxy with an
// allowlist, a store-and-forward spool, a serial console and a system service.
// This file only dispatches; behaviour lives in the packages under gateway/ and
// device/.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped by the build (-ldflags "-X main.version=...").
var version = "dev"

// stdio is what a command may touch besides its arguments.
type stdio struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

type command struct {
	name string
	help string
	run  func(ctx context.Context, args []string, s stdio) int
}

func commands() []command {
	return []command{
		{"run", "run the gateway in the foreground [--policy PATH]", cmdRun},
		{"policy", "policy check PATH | policy default | policy presets", cmdPolicy},
		{"config", "config get [KEY] | config set KEY VALUE  [--policy PATH]", cmdConfig},
		{"relay", "relay get | relay set --address URL [--username U] [--password-file F]", cmdRelay},
		{"allowed-host", "allowed-host list | add HOST | remove HOST", cmdAllowedHost},
		{"allowed-client-cert", "allowed-client-cert list | add SUBJECT | remove SUBJECT", cmdAllowedClientCert},
		{"status", "status of a running gateway [--admin ADDR]", cmdStatus},
		{"console", "serial console on a device: console --device D [--baud N]", cmdConsole},
		{"service", "service install [--policy PATH] | uninstall | start | stop | restart | status", cmdService},
		{"spool", "spool check DIR", cmdSpool},
		{"version", "print the version", cmdVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, s stdio) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(s.Out)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], s)
		}
	}
	fmt.Fprintf(s.Err, "storegate: unknown command %q\n", args[0])
	usage(s.Err)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: storegate COMMAND [ARGS]")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-20s %s\n", c.name, c.help)
	}
}

func cmdVersion(_ context.Context, _ []string, s stdio) int {
	fmt.Fprintf(s.Out, "storegate %s\n", version)
	return 0
}
