package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/storegate/storegate/device/console"
	"github.com/storegate/storegate/device/netcheck"
	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/policy"
	"github.com/storegate/storegate/gateway/spool"
)

// cmdConsole serves the console on a device ad hoc, beside a gateway that
// runs elsewhere on the box (or not at all): status, counters and link come
// from the gateway's admin endpoint (/status), the spool from its proxy
// listener, the policy from the policy file, and check asks the gateway for
// a tunnel. Events are not served by the admin endpoint, so events/follow say
// where to find them.
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

// Spool asks the running gateway's proxy listener for /spool/v1/status.
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
	url := "http://" + proxyAddr(snap) + spool.PathStatus
	var st spool.Status
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := console.GetJSON(ctx, p.client, url, &st); err != nil {
		v := console.SpoolView{Dir: f.Spool.Dir, Messages: p.Status().SpoolDepth, MaxBytes: int64(f.Spool.MaxBytes), MaxAge: f.Spool.MaxAge.D()}
		v.LastError = "spool status not reachable: " + err.Error()
		return v
	}
	return spoolView(st, snap)
}

// proxyAddr is where the gateway of the policy file serves its proxy
// listener on this box: its listen address, or loopback when that is a
// wildcard (0.0.0.0 and :: answer there too).
func proxyAddr(snap *policy.Snapshot) string {
	host := snap.File.ListenAddress
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(snap.File.ListenPort))
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

// Check asks the running gateway for a tunnel, as a store's terminal would:
// CONNECT on its proxy listener, so the check takes the gateway's path (its
// policy, then direct or its relay). The certificate is verified against the
// system roots and the policy file's tls.ca_file.
func (p *adhocProvider) Check(ctx context.Context, host string, port int) netcheck.Report {
	snap, err := p.snapshot()
	if err != nil {
		// Without the policy there is no listener to ask; say why at connect.
		return netcheck.Run(ctx, netcheck.Config{Via: "gateway", Dial: func(context.Context, string, int) (net.Conn, error) {
			return nil, fmt.Errorf("cannot find the gateway's proxy listener: %v", err)
		}}, host, port)
	}
	proxy := proxyAddr(snap)
	cfg := netcheck.Config{
		Via: "gateway " + proxy,
		Dial: func(ctx context.Context, host string, port int) (net.Conn, error) {
			return dialThrough(ctx, proxy, host, port)
		},
	}
	if roots, err := gateway.SystemRoots(snap); err == nil {
		cfg.Roots = roots
	}
	return netcheck.Run(ctx, cfg, host, port)
}

// dialThrough opens a tunnel to host:port through the CONNECT proxy at proxy.
// A refusal comes back as an error with the gateway's status and reason.
func dialThrough(ctx context.Context, proxy, host string, port int) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the gateway's proxy listener at %s (is storegate running?): %v", proxy, err)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second) // a gateway that never answers must not hang the console
	}
	c.SetDeadline(dl)
	tunnel, resp, err := gateway.ConnectOver(c, host, port, "User-Agent: storegate-console/"+version+"\r\n")
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("gateway at %s did not answer the CONNECT: %v", proxy, err)
	}
	if resp.StatusCode != http.StatusOK {
		reason, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		c.Close()
		msg := fmt.Sprintf("the gateway answered %s", resp.Status)
		if r := strings.TrimSpace(string(reason)); r != "" {
			msg += ": " + r
		}
		return nil, errors.New(msg)
	}
	c.SetDeadline(time.Time{})
	return tunnel, nil
}
