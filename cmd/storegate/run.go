package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// cmdRun runs the gateway in the foreground until SIGINT or SIGTERM (or the
// service manager's stop request).
func cmdRun(ctx context.Context, args []string, s stdio) int {
	return runUnderServiceManager(ctx, func(ctx context.Context) int { return runGateway(ctx, args, s) })
}

func runGateway(ctx context.Context, args []string, s stdio) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(s.Err)
	policyPath := fs.String("policy", "", "policy file (default: the embedded default policy)")
	consoleDev := fs.String("console", "", "serial console device, overriding console.device")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := events.NewLog(s.Err, events.Options{})
	defer log.Close()

	snap, err := loadPolicy(*policyPath)
	if err != nil {
		emitPolicyError(log, *policyPath, err)
		return 1
	}
	_ = log.SetLanguage(snap.File.Events.Language) // validated by the policy loader
	procs := applyMaxProcs(snap)
	var srv *gateway.Server
	sf, err := newStoreForward(snap, func() *gateway.Server { return srv }, log)
	if err != nil {
		log.Emit(events.BadConfig, "cannot start: "+err.Error(), events.Str(events.KeyPolicy, snap.Source))
		return 1
	}
	cfg := gateway.Config{Version: version, Events: log}
	sf.gatewayConfig(&cfg)
	srv = gateway.New(cfg)
	if err := srv.Apply(snap); err != nil {
		log.Emit(events.BadConfig, "cannot start: "+err.Error(), events.Str(events.KeyPolicy, snap.Source))
		return 1
	}
	// Start-up garbage (policy parsing, TLS roots) is returned to the OS now,
	// so a small box's idle RSS is what the gateway holds, not what it used.
	debug.FreeOSMemory()
	addr := ""
	if a := srv.Addr("proxy"); a != nil {
		addr = a.String()
	}
	admin := ""
	if a := srv.Addr("admin"); a != nil {
		admin = a.String()
	}
	log.Emit(events.Started, "storegate started",
		events.Str(events.KeyVersion, version),
		events.Str(events.KeyListen, addr),
		events.Str(events.KeyAdmin, admin),
		events.Str(events.KeyPolicy, snap.Source),
		events.Str(events.KeyHash, snap.Hash),
		events.Int(events.KeyProcs, int64(procs)))

	sf.run(ctx)
	if *policyPath != "" {
		startWatcher(ctx, *policyPath, srv, log)
	}

	dev := snap.File.Console.Device
	if *consoleDev != "" {
		dev = *consoleDev
	}
	var consoleDone <-chan struct{}
	if dev != "" {
		p := newConsoleProvider(srv, log)
		sf.consoleViews(p, srv.Policy)
		consoleDone, err = startConsole(ctx, dev, snap.File.Console.Baud, p, log)
		if err != nil {
			log.Emit(events.BadConfig, err.Error(), events.Str(events.KeyKey, "console.baud"))
		}
	}

	<-ctx.Done()
	grace := srv.Policy().File.Limits.ShutdownGrace.D()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	start := time.Now()
	cut := srv.Shutdown(sctx)
	cancel()
	sf.close() // its Run ended with ctx
	if consoleDone != nil {
		select { // a serial line stuck in a read must not hold up the stop
		case <-consoleDone:
		case <-time.After(2 * time.Second):
		}
	}
	log.Emit(events.Stopped, "storegate stopped",
		events.Int(events.KeyCut, int64(cut)),
		events.Int(events.KeyDurationMS, time.Since(start).Milliseconds()))
	return 0
}

func loadPolicy(path string) (*policy.Snapshot, error) {
	if path == "" {
		return policy.Default(time.Now()), nil
	}
	return policy.Load(path, time.Now())
}

// emitPolicyError writes event 401 for a refused policy, naming file, line and key.
func emitPolicyError(log events.Emitter, path string, err error) {
	var es policy.Errors
	var pe *policy.Error
	switch {
	case errors.As(err, &es) && len(es) > 0:
		for _, e := range es {
			log.Emit(events.BadConfig, e.Error(),
				events.Str(events.KeyFile, e.File), events.Int(events.KeyLine, int64(e.Line)), events.Str(events.KeyKey, e.Key))
		}
	case errors.As(err, &pe):
		log.Emit(events.BadConfig, pe.Error(),
			events.Str(events.KeyFile, pe.File), events.Int(events.KeyLine, int64(pe.Line)), events.Str(events.KeyKey, pe.Key))
	default:
		log.Emit(events.BadConfig, err.Error(), events.Str(events.KeyFile, path))
	}
}

// cmdPolicy: policy check PATH | policy default | policy presets.
func cmdPolicy(_ context.Context, args []string, s stdio) int {
	if len(args) == 0 {
		fmt.Fprintln(s.Err, "usage: storegate policy check PATH | policy default | policy presets")
		return 2
	}
	switch args[0] {
	case "default":
		_, _ = s.Out.Write(policy.DefaultYAML())
		return 0
	case "presets":
		for _, p := range policy.Presets() {
			fmt.Fprintf(s.Out, "%s\t%s\n", p.Name, p.About)
			for _, h := range p.Hosts {
				fmt.Fprintf(s.Out, "  %s\n", h)
			}
		}
		return 0
	case "check":
		if len(args) != 2 {
			fmt.Fprintln(s.Err, "usage: storegate policy check PATH")
			return 2
		}
		snap, err := policy.Load(args[1], time.Now())
		if err == nil {
			err = gateway.CheckFiles(snap) // what run would refuse at start
		}
		if err != nil {
			fmt.Fprintln(s.Err, err)
			return 1
		}
		fmt.Fprintf(s.Out, "%s: ok (sha256:%s)\n", args[1], snap.Hash)
		return 0
	}
	fmt.Fprintf(s.Err, "storegate policy: unknown subcommand %q\n", args[0])
	return 2
}
