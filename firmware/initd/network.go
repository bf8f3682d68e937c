package initd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/storegate/storegate/firmware/dhcp"
	"github.com/storegate/storegate/firmware/netconf"
)

// Network is the policy's network key: DHCP (the default) or a static
// address. Init reads only this key, leniently, so a policy that the gateway
// refuses still gets the box onto the network where it can be fixed.
type Network struct {
	DHCP      *bool    `yaml:"dhcp"`
	Interface string   `yaml:"interface"`
	Address   string   `yaml:"address"` // CIDR
	Gateway   string   `yaml:"gateway"`
	DNS       []string `yaml:"dns"`
}

// Static is a checked static configuration.
type Static struct {
	Addr    netip.Prefix
	Gateway netip.Addr // invalid: none
	DNS     []netip.Addr
}

// ParseNetwork reads the network key of a policy file. A file without it, or
// one that is not YAML, means DHCP on the first interface that answers.
func ParseNetwork(policy []byte) (Network, error) {
	var doc struct {
		Network Network `yaml:"network"`
	}
	if err := yaml.Unmarshal(policy, &doc); err != nil {
		return Network{}, fmt.Errorf("policy: %w", err)
	}
	return doc.Network, nil
}

// ConsoleDevice returns the policy's console.device ("" when unset or when
// the file is not YAML). When set, it wins over the image's default console.
func ConsoleDevice(policy []byte) string {
	var doc struct {
		Console struct {
			Device string `yaml:"device"`
		} `yaml:"console"`
	}
	if yaml.Unmarshal(policy, &doc) != nil {
		return ""
	}
	return strings.TrimSpace(doc.Console.Device)
}

// StopWait is how long init gives the gateway to stop after SIGTERM before
// killing it: the policy's limits.shutdown_grace, which the gateway spends
// draining open tunnels (10 s when unset or unreadable, as in the gateway),
// plus 5 s to cut the rest and exit.
func StopWait(policy []byte) time.Duration {
	grace := 10 * time.Second
	var doc struct {
		Limits struct {
			ShutdownGrace string `yaml:"shutdown_grace"`
		} `yaml:"limits"`
	}
	if yaml.Unmarshal(policy, &doc) == nil {
		if d, err := time.ParseDuration(strings.TrimSpace(doc.Limits.ShutdownGrace)); err == nil && d > 0 {
			grace = d
		}
	}
	return grace + 5*time.Second
}

// UseDHCP reports whether the box asks DHCP (dhcp: true or unset).
func (n Network) UseDHCP() bool { return n.DHCP == nil || *n.DHCP }

// Static checks the static settings.
func (n Network) Static() (Static, error) {
	var s Static
	p, err := netip.ParsePrefix(strings.TrimSpace(n.Address))
	if err != nil || !p.Addr().Is4() || p.Bits() == 0 || p.Bits() > 31 {
		return s, fmt.Errorf("network.address %q: want an IPv4 address with its prefix length, e.g. 192.168.10.5/24", n.Address)
	}
	s.Addr = p
	if n.Gateway != "" {
		gw, err := netip.ParseAddr(strings.TrimSpace(n.Gateway))
		if err != nil || !gw.Is4() || !p.Masked().Contains(gw) {
			return s, fmt.Errorf("network.gateway %q: want an IPv4 address inside %s", n.Gateway, p.Masked())
		}
		s.Gateway = gw
	}
	for i, d := range n.DNS {
		a, err := netip.ParseAddr(strings.TrimSpace(d))
		if err != nil {
			return s, fmt.Errorf("network.dns[%d] %q: want an IP address", i, d)
		}
		s.DNS = append(s.DNS, a)
	}
	return s, nil
}

// Interfaces lists the wired candidates: up or down, with a MAC address, not
// loopback, sorted by name (eth0/enp* before wlan*: only wired ones are used).
func Interfaces() ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []net.Interface
	for _, i := range all {
		if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) != 6 || strings.HasPrefix(i.Name, "wl") {
			continue
		}
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// netUp configures the network and keeps a DHCP lease renewed until ctx ends.
func (r *runner) netUp(ctx context.Context, n Network) {
	if lo, err := net.InterfaceByName("lo"); err == nil {
		if err := netconf.LinkUp(lo.Index); err != nil {
			r.logf("loopback: %v", err)
		}
	}
	var ifs []net.Interface
	// Drivers bind asynchronously after module load: wait a bounded time.
	for deadline := time.Now().Add(10 * time.Second); ; {
		all, err := Interfaces()
		if err == nil {
			ifs = ifs[:0]
			for _, i := range all {
				if n.Interface == "" || i.Name == n.Interface {
					ifs = append(ifs, i)
				}
			}
		}
		if len(ifs) > 0 || time.Now().After(deadline) || !sleepCtx(ctx, 200*time.Millisecond) {
			break
		}
	}
	if len(ifs) == 0 {
		r.logf("network: no wired interface found%s; the gateway runs without a network", ifNamed(n.Interface))
		return
	}
	for _, i := range ifs {
		if err := netconf.LinkUp(i.Index); err != nil {
			r.logf("network: %s up: %v", i.Name, err)
		}
	}
	if !n.UseDHCP() {
		s, err := n.Static()
		if err != nil {
			r.logf("network: %v; falling back to DHCP", err)
		} else {
			r.static(ifs[0], s)
			return
		}
	}
	r.dhcpLoop(ctx, ifs)
}

func ifNamed(name string) string {
	if name == "" {
		return ""
	}
	return " named " + name
}

func (r *runner) static(i net.Interface, s Static) {
	if err := netconf.AddAddr(i.Index, s.Addr); err != nil {
		r.logf("network: %s address %s: %v", i.Name, s.Addr, err)
		return
	}
	if s.Gateway.IsValid() {
		if err := netconf.SetDefaultRoute(i.Index, s.Gateway); err != nil {
			r.logf("network: default route via %s: %v", s.Gateway, err)
		}
	}
	if err := netconf.WriteResolvConf("/etc/resolv.conf", s.DNS); err != nil {
		r.logf("network: resolv.conf: %v", err)
	}
	r.logf("network: %s static %s gateway %s dns %v", i.Name, s.Addr, s.Gateway, s.DNS)
}

// dhcpLoop acquires a lease on the first interface that gets one, applies
// it, renews it at T1 and starts over when it is lost. Every wait is bounded
// and the loop ends with ctx.
func (r *runner) dhcpLoop(ctx context.Context, ifs []net.Interface) {
	delay := 2 * time.Second
	for ctx.Err() == nil {
		for _, i := range ifs {
			l, c, err := r.acquire(ctx, i)
			if err != nil {
				r.logf("network: %s: %v", i.Name, err)
				continue
			}
			delay = 2 * time.Second
			r.keepLease(ctx, i, c, l)
			break
		}
		sleepCtx(ctx, delay)
		delay = min(delay*2, time.Minute)
	}
}

func (r *runner) acquire(ctx context.Context, i net.Interface) (dhcp.Lease, *dhcp.Client, error) {
	conn, err := dhcp.Open(ctx, i.Name)
	if err != nil {
		return dhcp.Lease{}, nil, err
	}
	c := &dhcp.Client{HWAddr: i.HardwareAddr, Conn: conn, Hostname: hostname(i.HardwareAddr)}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, err := c.Acquire(actx)
	if err != nil {
		conn.Close()
		return l, nil, err
	}
	if err := r.applyLease(i, l, true); err != nil {
		conn.Close()
		return l, nil, err
	}
	return l, c, nil
}

// applyLease configures the interface; it logs only when told to, so that
// renewals every few hours do not write over the technician's console.
func (r *runner) applyLease(i net.Interface, l dhcp.Lease, log bool) error {
	if err := netconf.AddAddr(i.Index, l.Addr); err != nil {
		return err
	}
	if l.Router.IsValid() {
		if err := netconf.SetDefaultRoute(i.Index, l.Router); err != nil {
			return err
		}
	}
	if err := netconf.WriteResolvConf("/etc/resolv.conf", l.DNS); err != nil {
		return err
	}
	if log {
		r.logf("network: %s dhcp %s gateway %s dns %v lease %s", i.Name, l.Addr, l.Router, l.DNS, l.Duration)
	}
	return nil
}

// keepLease renews l at T1 until ctx ends or the lease cannot be kept.
func (r *runner) keepLease(ctx context.Context, i net.Interface, c *dhcp.Client, l dhcp.Lease) {
	defer c.Conn.(interface{ Close() error }).Close()
	expires := time.Now().Add(l.Duration)
	wait := l.Renew
	for ctx.Err() == nil {
		if !sleepCtx(ctx, wait) {
			return
		}
		nl, err := c.Renew(ctx, l)
		switch {
		case err == nil:
			changed := nl.Addr != l.Addr || nl.Router != l.Router
			if err := r.applyLease(i, nl, changed); err != nil {
				r.logf("network: %v", err)
			} else if nl.Addr != l.Addr {
				if err := netconf.DelAddr(i.Index, l.Addr); err != nil {
					r.logf("network: removing the old address %s: %v", l.Addr, err)
				}
			}
			l, expires, wait = nl, time.Now().Add(nl.Duration), nl.Renew
		case errors.Is(err, dhcp.ErrNak) || time.Now().After(expires):
			r.logf("network: %s lease lost: %v", i.Name, err)
			return
		default:
			// Try again halfway to expiry, but not more often than every 10s.
			wait = max(time.Until(expires)/2, 10*time.Second)
		}
	}
}

func hostname(mac net.HardwareAddr) string {
	if len(mac) < 3 {
		return "storegate"
	}
	return fmt.Sprintf("storegate-%02x%02x%02x", mac[len(mac)-3], mac[len(mac)-2], mac[len(mac)-1])
}

// sleepCtx waits d; it reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// readPolicyNetwork reads the network key from the policy file, logging why
// it falls back to DHCP.
func (r *runner) readPolicyNetwork(path string) Network {
	b, err := os.ReadFile(path)
	if err != nil {
		r.logf("network: %v; using DHCP", err)
		return Network{}
	}
	n, err := ParseNetwork(b)
	if err != nil {
		r.logf("network: %v; using DHCP", err)
		return Network{}
	}
	return n
}
