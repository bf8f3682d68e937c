package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/storegate/storegate/device/console"
	"github.com/storegate/storegate/device/netcheck"
	"github.com/storegate/storegate/gateway/policy"
	"github.com/storegate/storegate/gateway/spool"
)

// cmdConsole serves the console on a device ad hoc, beside a gateway that
// runs elsewhere on the box (or not at all): status, counters and link come
// from the gateway's admin endpoint (/status), the policy from the policy
// file, and check dials directly from this process. Events are not served by
// the admin endpoint, so events/follow say where to find them.
func cmdConsole(ctx context.Context, args []string, s stdio) int {
	fs := flag.NewFlagSet("console", flag.ContinueOnError)
	fs.SetOutput(s.Err)
	device := fs.String("device", "", "serial device, e.g. /dev/ttyUSB0 (required)")
	baud := fs.Int("baud", 115200, "line speed")
	admin := fs.String("admin", "", "admin endpoint of the running gateway (default: admin_address from the policy)")
	policyPath := fs.String("policy", "", "policy file (default $STOREGATE_POLICY, else /etc/storegate/policy.yaml)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *device == "" || fs.NArg() != 0 {
		fmt.Fprintln(s.Err, "usage: storegate console --device D [--baud N] [--admin ADDR] [--policy PATH]")
		return 2
	}
	if !console.ValidBaud(*baud) {
		fmt.Fprintf(s.Err, "storegate console: baud %d is not a supported line speed\n", *baud)
		return 2
	}
	addr := *admin
	if addr == "" {
		a, err := statusAdminAddress(*policyPath)
		if err != nil {
			fmt.Fprintln(s.Err, "storegate console:", err)
			return 1
		}
		addr = a
	}
	path := policyPathOr(*policyPath)
	p := &adhocProvider{admin: addr, policyPath: path, client: &http.Client{Timeout: 5 * time.Second}}
	fmt.Fprintf(s.Err, "storegate console on %s at %d baud (gateway admin %s); Ctrl-C here stops it\n", *device, *baud, addr)
	err := console.RunDevice(ctx, console.DeviceOptions{
		Path:    *device,
		Baud:    *baud,
		Session: console.Options{Provider: p, Version: version},
	})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(s.Err, "storegate console:", err)
		return 1
	}
	return 0
}

// adhocProvider reads a gateway from outside: /status over HTTP and the
// policy file from disk. When the gateway cannot be reached, status says so.
type adhocProvider struct {
	admin      string
	policyPath string
	client     *http.Client
}

func (p *adhocProvider) Status() console.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := console.FetchStatus(ctx, p.client, p.admin)
	if err != nil {
		return console.Status{Version: version + " (console only)", Link: "unknown", LastReloadError: "gateway not reachable: " + err.Error(), PolicyFile: p.policyPath}
	}
	return st
}

func (p *adhocProvider) Counters() console.Counters { return p.Status().Counters }

func (p *adhocProvider) snapshot() (*policy.Snapshot, error) {
	return policy.Load(p.policyPath, time.Now())
}

func (p *adhocProvider) Policy() console.PolicyView {
	snap, err := p.snapshot()
	if err != nil {
		return console.PolicyView{File: p.policyPath, LastReloadError: err.Error()}
	}
	return policyView(snap)
}

// Spool asks the running gateway's proxy listener for /spool/v1/status (the
// listener of the policy file; a wildcard address is asked on loopback).
// When that fails, it shows the depth /status gives and says why.
func (p *adhocProvider) Spool() console.SpoolView {
	snap, err := p.snapshot()
	if err != nil {
		return console.SpoolView{Messages: p.Status().SpoolDepth, LastError: err.Error()}
	}
	f := snap.File
	if f.Spool.Disabled {
		return console.SpoolView{LastError: "spool.disabled is set"}
	}
	host := f.ListenAddress
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "127.0.0.1" // a wildcard listener (0.0.0.0, and :: too) answers there
	}
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(f.ListenPort)) + spool.PathStatus
	var st spool.Status
	err = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %s", url, resp.Status)
		}
		return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
	}()
	if err != nil {
		v := console.SpoolView{Dir: f.Spool.Dir, Messages: p.Status().SpoolDepth, MaxBytes: int64(f.Spool.MaxBytes), MaxAge: f.Spool.MaxAge.D()}
		v.LastError = "spool status not reachable: " + err.Error()
		return v
	}
	return spoolView(st, snap)
}

func (p *adhocProvider) Link() console.LinkView {
	st := p.Status()
	return console.LinkView{State: st.Link, Via: st.Relay}
}

const adhocEventsNote = `{"msg":"events are not served by the admin endpoint: read the gateway's stderr (journalctl -u storegate)"}`

func (p *adhocProvider) Recent(int) []string { return []string{adhocEventsNote} }

func (p *adhocProvider) Follow(int) (<-chan []byte, func()) {
	ch := make(chan []byte, 1)
	ch <- []byte(adhocEventsNote)
	close(ch)
	return ch, func() {}
}

// Check dials directly from this process: the relay path belongs to the
// gateway, so the report says "via direct".
func (p *adhocProvider) Check(ctx context.Context, host string, port int) netcheck.Report {
	return netcheck.Run(ctx, netcheck.Config{Via: "direct"}, host, port)
}
