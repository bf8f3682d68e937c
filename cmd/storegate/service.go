package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/kardianos/service"

	"github.com/storegate/storegate/device/sysservice"
	"github.com/storegate/storegate/gateway/policy"
)

// cmdService installs and controls the system service (systemd, OpenRC,
// SysV, Windows). The installed service runs `storegate run --policy PATH`.
func cmdService(_ context.Context, args []string, s stdio) int {
	usage := "usage: storegate service install [--policy PATH] | uninstall | start | stop | restart | status  [--name NAME]"
	if len(args) == 0 {
		fmt.Fprintln(s.Err, usage)
		return 2
	}
	action := args[0]
	fs := flag.NewFlagSet("service "+action, flag.ContinueOnError)
	fs.SetOutput(s.Err)
	name := fs.String("name", sysservice.DefaultName, "service name")
	var policyPath *string
	if action == "install" {
		policyPath = fs.String("policy", "", "policy file the service runs with (default $STOREGATE_POLICY, else /etc/storegate/policy.yaml)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(s.Err, usage)
		return 2
	}
	o := sysservice.Options{Name: *name}
	if action == "install" {
		o.PolicyPath = policyPathOr(*policyPath)
		if snap, err := policy.Load(o.PolicyPath, time.Now()); err != nil {
			if _, statErr := os.Stat(o.PolicyPath); statErr != nil {
				fmt.Fprintf(s.Err, "note: %s does not exist yet; the service will keep restarting until it does (storegate policy default > %s writes the default policy)\n", o.PolicyPath, o.PolicyPath)
			} else {
				fmt.Fprintf(s.Err, "note: %s is not valid yet: %v\n", o.PolicyPath, err)
			}
		} else if g := snap.File.Limits.ShutdownGrace.D(); g+20*time.Second > 60*time.Second {
			o.StopTimeout = g + 20*time.Second // the service manager must wait out the drain
		}
	}
	msg, err := sysservice.Control(o, action)
	if msg != "" {
		fmt.Fprintln(s.Out, msg)
	}
	if err != nil {
		if errors.Is(err, service.ErrNotInstalled) {
			return 3 // like `systemctl status` for a unit that is not there
		}
		fmt.Fprintln(s.Err, "storegate service:", err)
		return 1
	}
	return 0
}

// runUnderServiceManager runs the gateway body of `storegate run`: directly in
// a terminal or under systemd/OpenRC (which stop it with SIGTERM through
// ctx), or through the Windows service control manager, which needs the
// process to answer it. run must return when its ctx ends.
func runUnderServiceManager(ctx context.Context, run func(ctx context.Context) int) int {
	return sysservice.RunManaged(ctx, sysservice.DefaultName, run, os.Exit)
}
