// Package sysservice installs and controls storegate as a system service
// (systemd, OpenRC, SysV, Windows) through github.com/kardianos/service.
package sysservice

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kardianos/service"
)

// DefaultName is the service's name (systemd unit storegate.service).
const DefaultName = "storegate"

// Actions returns the verbs `storegate service` accepts.
func Actions() []string {
	return []string{"install", "uninstall", "start", "stop", "restart", "status"}
}

// Options describe the installed service.
type Options struct {
	// Name of the service; empty means DefaultName.
	Name string
	// Executable is the absolute path of the storegate binary; empty means
	// the running executable.
	Executable string
	// PolicyPath is passed as `run --policy PATH`; empty means the service
	// runs on the embedded default policy. Relative paths are made absolute.
	PolicyPath string
	// StopTimeout is how long the service manager waits for a graceful stop
	// (tunnels draining) before killing; zero means 60 seconds. It must
	// exceed the policy's limits.shutdown_grace.
	StopTimeout time.Duration
	// RestartDelay is the pause before restarting after a failure; zero means 2s.
	RestartDelay time.Duration
	// System picks the service manager; nil means the one detected on this host.
	System service.System
}

// unitTemplate is storegate's systemd unit, written for kardianos/service's
// template engine. Differences from the library's default: restart after 2s
// instead of 120s, never give up restarting, wait for the network, and a
// stop timeout longer than the tunnel drain.
const unitTemplate = `[Unit]
Description={{Description}}
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0
ConditionFileIsExecutable={{Path | cmdEscape}}

[Service]
Type=simple
ExecStart={{Path | cmdEscape}}{{range Arguments}} {{. | cmd}}{{end}}
Restart={{Restart}}
{{range EnvVars}}{{.}}
{{end}}KillSignal=SIGTERM
KillMode=mixed
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`

// Config builds the kardianos/service configuration for o.
func Config(o Options) (*service.Config, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 60 * time.Second
	}
	if o.RestartDelay <= 0 {
		o.RestartDelay = 2 * time.Second
	}
	args := []string{"run"}
	if o.PolicyPath != "" {
		abs, err := filepath.Abs(o.PolicyPath)
		if err != nil {
			return nil, fmt.Errorf("policy path %q: %v", o.PolicyPath, err)
		}
		args = append(args, "--policy", abs)
	}
	stop := strconv.Itoa(int(o.StopTimeout.Round(time.Second) / time.Second))
	restart := strconv.Itoa(int(o.RestartDelay.Round(time.Second) / time.Second))
	// The unit's restart timing goes in as extra lines: the template engine
	// only substitutes strings, and these are fixed per install.
	script := strings.Replace(unitTemplate, "Restart={{Restart}}\n", "Restart={{Restart}}\nRestartSec="+restart+"\nTimeoutStopSec="+stop+"\n", 1)
	return &service.Config{
		Name:        o.Name,
		DisplayName: "storegate edge gateway",
		Description: "storegate edge gateway (CONNECT proxy, spool, serial console)",
		Executable:  o.Executable,
		Arguments:   args,
		Option: service.KeyValue{
			// systemd, OpenRC, SysV
			"Restart":       "always",
			"SystemdScript": script,
			// Windows service recovery: restart after RestartDelay, always.
			"OnFailure":              "restart",
			"OnFailureDelayDuration": o.RestartDelay.String(),
			"OnFailureResetPeriod":   86400,
			"StartType":              "automatic",
			"DelayedAutoStart":       true,
		},
	}, nil
}

// New returns the service for o. prg runs the gateway when the service
// manager starts the process (see Program); nil is fine for control verbs.
func New(o Options, prg service.Interface) (service.Service, error) {
	cfg, err := Config(o)
	if err != nil {
		return nil, err
	}
	if prg == nil {
		prg = &Program{}
	}
	if o.System != nil {
		return o.System.New(prg, cfg)
	}
	s, err := service.New(prg, cfg)
	if errors.Is(err, service.ErrNoServiceSystemDetected) {
		return nil, errors.New("no service manager found (systemd, OpenRC, SysV or Windows); run `storegate run` from your init system instead")
	}
	return s, err
}

// Control performs one of Actions and returns a line for the user.
func Control(o Options, action string) (string, error) {
	if !slices.Contains(Actions(), action) {
		return "", fmt.Errorf("unknown action %q; use one of %s", action, strings.Join(Actions(), ", "))
	}
	s, err := New(o, nil)
	if err != nil {
		return "", err
	}
	name := o.Name
	if name == "" {
		name = DefaultName
	}
	switch action {
	case "status":
		st, err := s.Status()
		if errors.Is(err, service.ErrNotInstalled) {
			return name + ": not installed", err
		}
		if err != nil {
			return "", fmt.Errorf("%s status (%s): %v", name, s.Platform(), err)
		}
		switch st {
		case service.StatusRunning:
			return name + ": running", nil
		case service.StatusStopped:
			return name + ": stopped", nil
		}
		return name + ": unknown", nil
	}
	if err := service.Control(s, action); err != nil {
		return "", fmt.Errorf("%s %s (%s): %v", action, name, s.Platform(), err)
	}
	return fmt.Sprintf("%s: %s done (%s)", name, action, s.Platform()), nil
}

// Program adapts a gateway run function to kardianos/service: Start launches
// run in a goroutine, Stop cancels its context and waits for it to return
// (the gateway drains tunnels within its grace period).
type Program struct {
	// Run is the gateway; it returns an exit code when ctx ends.
	Run func(ctx context.Context) int
	// Exit is called with Run's code when Run returns without being stopped
	// (bad policy, crash of a listener), so the service manager sees a failure
	// and restarts the service. Nil means nothing is called.
	Exit func(code int)

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan int
}

// Start implements service.Interface.
func (p *Program) Start(service.Service) error {
	if p.Run == nil {
		return errors.New("nothing to run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.mu.Lock()
	p.cancel, p.done = cancel, make(chan int, 1)
	done := p.done
	p.mu.Unlock()
	go func() {
		code := p.Run(ctx)
		if ctx.Err() == nil && p.Exit != nil {
			p.Exit(code)
		}
		done <- code
	}()
	return nil
}

// Stop implements service.Interface.
func (p *Program) Stop(service.Service) error {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	if code := <-done; code != 0 {
		return fmt.Errorf("gateway exited with status %d", code)
	}
	return nil
}

// RunManaged runs the gateway: under a service manager that needs the
// process to talk to it (the Windows SCM), through kardianos/service;
// everywhere else (a terminal, systemd, OpenRC) it simply calls run(ctx),
// which stops on SIGTERM/SIGINT through ctx.
func RunManaged(ctx context.Context, name string, run func(ctx context.Context) int, exit func(code int)) int {
	if service.Interactive() || service.ChosenSystem() == nil || service.ChosenSystem().String() != "windows-service" {
		return run(ctx)
	}
	if name == "" {
		name = DefaultName
	}
	prg := &Program{Run: run, Exit: exit}
	s, err := service.New(prg, &service.Config{Name: name})
	if err != nil {
		return run(ctx)
	}
	if err := s.Run(); err != nil {
		return 1
	}
	return 0
}
