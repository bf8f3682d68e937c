package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/storegate/storegate/device/console"
	"github.com/storegate/storegate/device/netcheck"
	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// startConsole serves the serial console on device in the background until
// ctx ends, reopening the device whenever it disappears. It fails at once
// only for an unusable baud rate or no device name; a missing device is
// waited for (event 400 once, 100 when it opens). The returned channel
// closes when the console has stopped. baud 0 means 115200.
func startConsole(ctx context.Context, device string, baud int, p console.Provider, emit events.Emitter) (<-chan struct{}, error) {
	if baud == 0 {
		baud = 115200
	}
	if device == "" {
		return nil, fmt.Errorf("console: no device")
	}
	if !console.ValidBaud(baud) {
		return nil, fmt.Errorf("console.baud %d is not a supported line speed", baud)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = console.RunDevice(ctx, console.DeviceOptions{
			Path: device,
			Baud: baud,
			Emit: emit,
			Session: console.Options{
				Provider: p,
				Version:  version,
			},
		})
	}()
	return done, nil
}

// consoleProvider shows the running gateway on the console. Spool and Link
// are filled in by run once those subsystems exist; nil shows what
// gateway.Status knows (depth and state).
type consoleProvider struct {
	*events.Log
	srv   *gateway.Server
	spool func() console.SpoolView
	link  func() console.LinkView
}

func newConsoleProvider(srv *gateway.Server, log *events.Log) *consoleProvider {
	return &consoleProvider{Log: log, srv: srv}
}

// Status converts gateway.Status through its JSON form, so the console shows
// exactly what /status serves and `storegate status` prints.
func (p *consoleProvider) Status() console.Status {
	var st console.Status
	b, err := json.Marshal(p.srv.Status())
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		st.Version = version
		st.LastReloadError = "status unavailable: " + err.Error()
	}
	return st
}

func (p *consoleProvider) Counters() console.Counters { return p.Status().Counters }

func (p *consoleProvider) Policy() console.PolicyView {
	snap := p.srv.Policy()
	if snap == nil {
		return console.PolicyView{File: "(no policy loaded)"}
	}
	v := policyView(snap)
	v.LastReloadError = p.Status().LastReloadError
	return v
}

// policyView shows a policy snapshot on the console: the file, its hash and
// what it allows, each allowed host with where it comes from.
func policyView(snap *policy.Snapshot) console.PolicyView {
	f := snap.File
	v := console.PolicyView{
		File:               snap.Source,
		Hash:               snap.Hash,
		LoadedAt:           snap.LoadedAt,
		Ports:              f.AllowedPorts,
		Networks:           f.AllowedNetworks,
		ClientCertificates: f.AllowedClientCertificates,
		MinTLSVersion:      f.TLS.MinVersion,
		Relay:              gateway.RelayDisplay(f.RelayProxy.Address, f.RelayProxy.Username),
		AllowChanges:       f.Console.AllowChanges,
	}
	for _, h := range f.AllowedHosts {
		v.Hosts = append(v.Hosts, console.HostEntry{Pattern: h, Origin: "policy"})
	}
	for _, ps := range enabledPresets(f) {
		for _, h := range ps.Hosts {
			v.Hosts = append(v.Hosts, console.HostEntry{Pattern: h, Origin: "preset " + ps.Name})
		}
	}
	return v
}

// enabledPresets returns the presets the policy file names, in its order.
func enabledPresets(f *policy.File) []policy.Preset {
	var out []policy.Preset
	all := policy.Presets()
	for _, name := range f.Presets {
		for _, ps := range all {
			if ps.Name == name {
				out = append(out, ps)
			}
		}
	}
	return out
}

func (p *consoleProvider) Spool() console.SpoolView {
	if p.spool != nil {
		return p.spool()
	}
	snap := p.srv.Policy()
	v := console.SpoolView{Messages: p.Status().SpoolDepth}
	if snap != nil && !snap.File.Spool.Disabled {
		v.Dir = snap.File.Spool.Dir
		v.MaxBytes = int64(snap.File.Spool.MaxBytes)
		v.MaxAge = snap.File.Spool.MaxAge.D()
	}
	return v
}

func (p *consoleProvider) Link() console.LinkView {
	if p.link != nil {
		return p.link()
	}
	v := console.LinkView{State: p.Status().Link, Via: "direct"}
	if snap := p.srv.Policy(); snap != nil && snap.File.RelayProxy.Address != "" {
		v.Via = gateway.RelayDisplay(snap.File.RelayProxy.Address, snap.File.RelayProxy.Username)
	}
	return v
}

// Check dials through the gateway itself (policy first, then direct or
// relay), and verifies against the system roots plus the policy's tls.ca_file.
func (p *consoleProvider) Check(ctx context.Context, host string, port int) netcheck.Report {
	cfg := netcheck.Config{Dial: p.srv.DialUpstream, Now: time.Now}
	if snap := p.srv.Policy(); snap != nil {
		if snap.File.RelayProxy.Address != "" {
			cfg.Via = "relay " + gateway.RelayDisplay(snap.File.RelayProxy.Address, snap.File.RelayProxy.Username)
		}
		if roots, err := gateway.SystemRoots(snap); err == nil {
			cfg.Roots = roots
		}
	}
	return netcheck.Run(ctx, cfg, host, port)
}
