// Package gateway is storegate's proxy server: it accepts connections, reads
// the CONNECT request, decides it against the policy snapshot in force, dials
// the checked address (directly or through a relay) and copies bytes both ways.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// Resolver looks up the addresses of a host name. *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Dialer opens TCP connections. *net.Dialer satisfies it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Link is the uplink state the CONNECT path consults (package gateway/link).
// Wait returns nil at once while the link is up, and during an outage waits
// until the link returns, the hold time passes or ctx ends. Down reports an
// outage; Observe is told the outcome of every dial.
type Link interface {
	Wait(ctx context.Context) error
	Observe(err error)
	Down() bool
}

// Config is what a Server is built from. Nil fields have the defaults noted.
type Config struct {
	Version  string
	Events   events.Emitter   // nil: events are discarded
	Resolver Resolver         // nil: net.DefaultResolver
	Dialer   Dialer           // nil: a net.Dialer (keep-alive off where the idle sweeper runs)
	Now      func() time.Time // nil: time.Now
	Link     Link             // nil: the link is always up
	// Spool serves /spool/v1/ on the proxy listener; nil: those paths get
	// 405 like any other request that is not CONNECT.
	Spool http.Handler
	// SpoolMetrics writes the spool's and link's series into /metrics.
	SpoolMetrics func(w io.Writer)
	// SpoolStatus reports spool depth and link state for /status.
	SpoolStatus func() (depth int64, link string)
	// OnApply is called after a policy has been put in force (at start and
	// on every reload), for parts that follow the policy (spool limits).
	OnApply func(*policy.Snapshot)
}

// Server is the gateway. Create it with New; Apply puts a policy in force and
// opens (or moves) the listeners, at start and on every reload; Shutdown
// drains it.
type Server struct {
	cfg     Config
	emit    events.Emitter
	started time.Time

	policy atomic.Pointer[policy.Snapshot]
	stats  stats

	mu        sync.Mutex
	listeners map[string]*listener // by role: proxy, tls, admin
	conns     map[*clientConn]struct{}
	clients   map[netip.Addr]int
	draining  bool
	reload    reloadState
	idleDone  chan struct{}
	spoolSrv  *http.Server
	spoolL    *chanListener
	wg        sync.WaitGroup
	tlsCfg    atomic.Pointer[tls.Config]
	relayTLS  atomic.Pointer[relayTLSState]
	self      atomic.Pointer[selfSet]
	// refusalTLS bounds the handshakes the TLS listener does only to
	// answer a refusal (limits, drain) in a form a TLS client can read.
	refusalTLS chan struct{}
}

// Refusals on the TLS listener: at most this many handshakes at once, each
// within this time (or header_timeout, if shorter); past that, the refusal
// goes out unencrypted, as on the plain listener, and the client sees a
// protocol error.
const (
	refusalHandshakes       = 16
	refusalHandshakeTimeout = 3 * time.Second
)

type reloadState struct {
	errors      uint64
	lastErr     string
	lastSuccess time.Time
	diskHash    string
}

type nopEmitter struct{}

func (nopEmitter) Emit(events.ID, string, ...events.Field) {}

// New builds a Server from cfg.
func New(cfg Config) *Server {
	if cfg.Events == nil {
		cfg.Events = nopEmitter{}
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{KeepAlive: tcpKeepAlive}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{
		cfg:       cfg,
		emit:      cfg.Events,
		started:   cfg.Now(),
		listeners: map[string]*listener{},
		conns:     map[*clientConn]struct{}{},
		clients:   map[netip.Addr]int{},
		stats:     stats{refusals: map[string]uint64{}},

		refusalTLS: make(chan struct{}, refusalHandshakes),
	}
}

// Policy returns the snapshot in force.
func (s *Server) Policy() *policy.Snapshot { return s.policy.Load() }

// ErrDraining is returned by operations refused during shutdown.
var ErrDraining = errors.New("gateway is shutting down")
