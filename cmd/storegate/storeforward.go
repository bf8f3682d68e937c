package main

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/storegate/storegate/device/console"
	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/link"
	"github.com/storegate/storegate/gateway/policy"
	"github.com/storegate/storegate/gateway/spool"
)

// storeForward is the spool and the uplink tracker of a running gateway.
type storeForward struct {
	log   *events.Log // nil in tests that pass another Emitter
	link  *link.Tracker
	spool *spool.Spool // nil when spool.disabled

	mu     sync.Mutex
	probed string         // the probe's target under the policy last applied
	roots  *gateway.Roots // the spool's tls.ca_file (the system roots are added when it delivers)
}

// newStoreForward builds the tracker and the spool from the policy. srv is
// read lazily: the spool's checks and dials go through the gateway, which is
// built after them.
func newStoreForward(snap *policy.Snapshot, srv func() *gateway.Server, log events.Emitter) (*storeForward, error) {
	f := snap.File
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, err
		}
		return srv().DialUpstream(ctx, host, p)
	}
	lo := link.Options{Events: log, ProbeInterval: f.Link.ProbeInterval.D(), Hold: f.Link.Hold.D()}
	// The probe reads its target from the policy in force at each probe, so
	// a reload that moves the store to another relay probes the new one.
	current := func() *policy.Snapshot {
		if s := srv(); s != nil {
			return s.Policy()
		}
		return snap
	}
	var plain net.Dialer
	lo.Probe = func(ctx context.Context) error {
		addr := probeTarget(current())
		if addr == "" {
			return link.ErrNoTarget
		}
		return link.DialProbe(plain.DialContext, addr)(ctx)
	}
	sf := &storeForward{link: link.New(lo), probed: probeTarget(snap)}
	sf.log, _ = log.(*events.Log)
	if f.Spool.Disabled {
		return sf, nil
	}
	roots, err := gateway.LoadRoots(snap)
	if err != nil {
		return nil, err
	}
	sp, err := spool.New(spool.Options{
		Dir:    f.Spool.Dir,
		Limits: spoolLimits(snap),
		Allow:  func(host string, port int) error { return srv().CheckTarget(host, port) },
		Dial:   dial,
		Roots:  spoolRoots(roots),
		Events: log,
		Link:   sf.link,
	})
	if err != nil {
		return nil, err
	}
	sf.spool, sf.roots = sp, roots
	return sf, nil
}

// probeTarget is what the link probe dials: the first hop, i.e. the relay
// when there is one (that is where an outage shows), else link.probe_host
// (port 443 unless it names one); "" when the policy names neither.
func probeTarget(snap *policy.Snapshot) string {
	f := snap.File
	switch _, relay := snap.RelayAddr(); {
	case relay != "":
		return relay
	case f.Link.ProbeHost != "":
		addr := f.Link.ProbeHost
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "443")
		}
		return addr
	}
	return ""
}

func spoolLimits(snap *policy.Snapshot) spool.Limits {
	s := snap.File.Spool
	return spool.Limits{
		MaxBytes:        int64(s.MaxBytes),
		MaxAge:          s.MaxAge.D(),
		MaxMessageBytes: int64(s.MaxMessageBytes),
		Overflow:        spool.Overflow(s.Overflow),
		DeadLetterBytes: int64(s.DeadLetterMaxBytes),
	}
}

// gatewayConfig fills the gateway's hooks for the spool and the link.
func (sf *storeForward) gatewayConfig(cfg *gateway.Config) {
	cfg.Link = sf.link
	cfg.SpoolMetrics = func(w io.Writer) {
		if sf.spool != nil {
			_ = sf.spool.WriteMetrics(w)
		}
		_ = sf.link.WriteMetrics(w)
	}
	cfg.SpoolStatus = func() (int64, string) {
		var depth int64
		if sf.spool != nil {
			depth = int64(sf.spool.Status().Depth)
		}
		return depth, sf.link.State().String()
	}
	cfg.OnApply = func(snap *policy.Snapshot) {
		applyMaxProcs(snap)
		if sf.log != nil {
			_ = sf.log.SetLanguage(snap.File.Events.Language)
		}
		if sf.spool != nil {
			_ = sf.spool.SetLimits(spoolLimits(snap))
			sf.applyRoots(snap)
		}
		sf.link.SetTiming(snap.File.Link.ProbeInterval.D(), snap.File.Link.Hold.D())
		// A new first hop: what the probe found about the old one (an
		// outage, say, of a relay being retired) says nothing about it.
		target := probeTarget(snap)
		sf.mu.Lock()
		changed := target != sf.probed
		sf.probed = target
		sf.mu.Unlock()
		if changed {
			sf.link.Recheck()
		}
	}
	if sf.spool != nil {
		cfg.Spool = sf.spool
	}
}

// applyRoots gives the spool the roots of a new policy when they differ
// (tls.ca_file named another file, or the file changed). The reload has
// already read and checked the file, so an error here (it changed again
// since) keeps the roots in use until the next reload.
func (sf *storeForward) applyRoots(snap *policy.Snapshot) {
	roots, err := gateway.LoadRoots(snap)
	if err != nil {
		return
	}
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if roots.Equal(sf.roots) {
		return
	}
	sf.roots = roots
	sf.spool.SetRoots(spoolRoots(roots))
}

// spoolRoots is the spool's Options.Roots: the system roots plus
// tls.ca_file, loaded when the spool first delivers.
func spoolRoots(r *gateway.Roots) func() (*x509.CertPool, error) {
	return func() (*x509.CertPool, error) { return r.WithSystem(), nil }
}

// run delivers and probes until ctx ends.
func (sf *storeForward) run(ctx context.Context) {
	go sf.link.Run(ctx)
	if sf.spool != nil {
		go func() { _ = sf.spool.Run(ctx) }()
	}
}

// consoleViews gives the console the spool's and the link's own views.
func (sf *storeForward) consoleViews(p *consoleProvider, snap func() *policy.Snapshot) {
	p.link = func() console.LinkView {
		st := sf.link.Status()
		v := console.LinkView{State: st.State, Since: st.Since, LastError: st.LastError, Via: "direct"}
		if s := snap(); s != nil && s.File.RelayProxy.Address != "" {
			v.Via = gateway.RelayDisplay(s.File.RelayProxy.Address, s.File.RelayProxy.Username)
		}
		return v
	}
	if sf.spool == nil {
		return
	}
	p.spool = func() console.SpoolView { return spoolView(sf.spool.Status(), snap()) }
}

// spoolView is the console's view of a spool's status under a policy.
func spoolView(st spool.Status, s *policy.Snapshot) console.SpoolView {
	return console.SpoolView{
		Dir:         s.File.Spool.Dir,
		Messages:    int64(st.Depth),
		Bytes:       st.Bytes,
		MaxBytes:    st.MaxBytes,
		Oldest:      time.Duration(st.OldestAgeSeconds * float64(time.Second)),
		MaxAge:      s.File.Spool.MaxAge.D(),
		DeadLetters: int64(st.DeadLetters),
		Delivered:   int64(st.Delivered),
		Dropped:     int64(st.Dropped),
		LastError:   st.Error,
	}
}

// close stops the spool after its Run context has ended.
func (sf *storeForward) close() {
	if sf.spool != nil {
		_ = sf.spool.Close()
	}
}
