//go:build linux

// Command init is PID 1 of the benchmark guest: it mounts the kernel file
// systems, brings up loopback, lifts the descriptor limit, runs the harness
// with the flags from the kernel command line, sends its results to the
// console as marked lines and powers off, on success and on every error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/storegate/storegate/build/bench/vm"
)

// noFile is the descriptor limit the harness and storegate inherit: 10,000
// tunnels hold about 20,000 descriptors in each, and the host cannot grant
// that much.
const noFile = 200000

// defaultTimeout bounds the harness when the kernel command line names no
// bound of its own.
const defaultTimeout = 30 * time.Minute

func main() {
	console := os.Stdout
	exit, nJSON, nText := run(os.Args[1:], os.Getenv(vm.TimeoutVar), console)
	fmt.Fprintln(console, vm.EndLine(exit, nJSON, nText))
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Still here: exiting PID 1 panics the kernel, and with panic=-1 and
	// qemu's -no-reboot that ends the guest as well.
	say(console, "power off: %v", err)
	os.Exit(1)
}

// run sets the guest up and runs the harness; it returns the harness's exit
// code (125 when it never ran) and the marked lines written.
func run(args []string, timeout string, console io.Writer) (exit, nJSON, nText int) {
	if os.Getpid() != 1 {
		say(console, "must run as PID 1 of the benchmark guest")
		return 125, 0, 0
	}
	bound := defaultTimeout
	if timeout != "" {
		d, err := time.ParseDuration(timeout)
		if err != nil || d <= 0 {
			say(console, "%s=%q: want a positive duration such as 20m", vm.TimeoutVar, timeout)
			return 125, 0, 0
		}
		bound = d
	}
	benchArgs, err := vm.GuestArgs(args)
	if err != nil {
		say(console, "%v", err)
		return 125, 0, 0
	}
	if err := setup(); err != nil {
		say(console, "%v", err)
		return 125, 0, 0
	}
	say(console, "RLIMIT_NOFILE %d; running %s %s (bound %s)",
		noFile, vm.GuestBench, strings.Join(benchArgs, " "), bound)
	exit = runBench(benchArgs, bound, console)
	nJSON = sendFile(console, vm.MarkJSON, vm.GuestOut)
	nText = sendFile(console, vm.MarkText, strings.TrimSuffix(vm.GuestOut, ".jsonl")+".txt")
	return exit, nJSON, nText
}

// setup mounts what the harness reads (/proc for RSS and descriptors, /dev
// for os/exec's /dev/null, /tmp for its files), brings loopback up and
// raises the descriptor limit.
func setup() error {
	mounts := []struct{ src, dst, fs, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
	}
	for _, m := range mounts {
		err := unix.Mount(m.src, m.dst, m.fs, unix.MS_NOSUID, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.dst, err)
		}
	}
	// Only emergencies on the console, so kernel messages do not land in
	// the middle of a marked line.
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("1 4 1 7\n"), 0o644); err != nil {
		return fmt.Errorf("console log level: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	lim := unix.Rlimit{Cur: noFile, Max: noFile}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("RLIMIT_NOFILE %d: %w", noFile, err)
	}
	for k, v := range map[string]string{"PATH": "/", "HOME": "/tmp", "TMPDIR": "/tmp"} {
		if err := os.Setenv(k, v); err != nil {
			return err
		}
	}
	return nil
}

// loopbackUp sets IFF_UP on lo; the kernel then gives it 127.0.0.1 and ::1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// runBench runs the harness with its output on the console, killed after
// bound; it returns the harness's exit code (124 when the bound ran out).
func runBench(args []string, bound time.Duration, console io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, vm.GuestBench, args...)
	cmd.Dir = "/tmp"
	cmd.Stdout, cmd.Stderr = console, console
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		say(console, "the harness ran past its bound of %s and was killed", bound)
		return 124
	case err != nil && cmd.ProcessState == nil:
		say(console, "start the harness: %v", err)
		return 125
	}
	return cmd.ProcessState.ExitCode()
}

// sendFile writes the file's lines to the console with mark; a missing file
// (the harness failed before writing it) sends nothing.
func sendFile(console io.Writer, mark, path string) int {
	f, err := os.Open(path)
	if err != nil {
		say(console, "%v", err)
		return 0
	}
	defer f.Close()
	n, err := vm.WriteMarked(console, mark, f)
	if err != nil {
		say(console, "send %s: %v", path, err)
	}
	return n
}

// say writes one line of init's own to the console.
func say(console io.Writer, format string, args ...any) {
	fmt.Fprintf(console, vm.InitSays+format+"\n", args...)
}
