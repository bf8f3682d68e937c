// Package link tracks whether the gateway's uplink works, from the outcomes
// of real dials and deliveries plus an optional light probe, and lets a
// CONNECT wait out a short outage.
package link

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/metrics"
)

// State is the uplink's state.
type State int

// States. Unknown lasts until the first observation.
const (
	Unknown State = iota
	Up
	Down
)

func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	default:
		return "unknown"
	}
}

// keyFailures is the event field with the count of failures in a row.
const keyFailures = "failures"

// ErrDown is returned by Wait when the link stayed down for the hold time.
var ErrDown = errors.New("uplink down")

// ErrNoTarget is what a Probe returns when there is nothing to probe (the
// policy names neither a relay nor a probe host): no evidence either way.
var ErrNoTarget = errors.New("no probe target")

// Options configure a Tracker. Every nil field has the default its comment names.
type Options struct {
	// Events receives transition events (100 up, 403 down); nil drops them.
	Events events.Emitter
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Probe checks the uplink, e.g. a TCP dial of the relay or of
	// link.probe_host; nil means no probe (outcomes of real traffic only).
	// It may return ErrNoTarget, which is not counted.
	Probe func(ctx context.Context) error
	// ProbeInterval is the time between probes while up; while down, probes
	// run at a fifth of it (at least 1s). Zero means 30s. SetTiming changes it.
	ProbeInterval time.Duration
	// Hold is how long Wait holds a caller during an outage. Zero means 5s;
	// negative means do not hold. SetTiming changes it.
	Hold time.Duration
	// FailuresToDown is how many failures in a row mark the link down, so
	// one unreachable host does not. Zero means 3.
	FailuresToDown int
}

// Tracker holds the uplink state. It is safe for concurrent use.
type Tracker struct {
	opts Options

	mu          sync.Mutex
	state       State
	since       time.Time
	failures    int
	lastErr     string
	transitions uint64
	changed     chan struct{} // closed and replaced on every transition
	interval    time.Duration // opts.ProbeInterval, then SetTiming's
	hold        time.Duration // opts.Hold, then SetTiming's
	recheck     chan struct{} // Recheck's request for a probe now (capacity 1)
	rechecks    uint64        // Recheck calls so far: a probe outlived by one is stale
	stopProbe   context.CancelFunc
	lastTrial   time.Time // when Wait last let a caller through during an outage
}

// trialEvery is how often Wait lets one caller through during an outage, to
// try the link with its own dial. Without it an outage would end only by a
// probe, and with no probe target (no relay, no link.probe_host: the
// default) it would never end: every CONNECT held, none dialled.
const trialEvery = time.Second

// Status is a snapshot for /readyz details, the console and the status API.
type Status struct {
	State       string    `json:"state"`
	Since       time.Time `json:"since"`
	LastError   string    `json:"last_error,omitempty"`
	Transitions uint64    `json:"transitions"`
}

// New returns a Tracker in state Unknown.
func New(opts Options) *Tracker {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FailuresToDown <= 0 {
		opts.FailuresToDown = 3
	}
	t := &Tracker{opts: opts, since: opts.Now(), changed: make(chan struct{}), recheck: make(chan struct{}, 1)}
	t.SetTiming(opts.ProbeInterval, opts.Hold)
	return t
}

// SetTiming changes the probe interval and the hold time (a policy reload),
// with the defaults Options names for zero. A probe already waiting keeps its
// old interval once; call Recheck to probe at once.
func (t *Tracker) SetTiming(probeInterval, hold time.Duration) {
	if probeInterval <= 0 {
		probeInterval = 30 * time.Second
	}
	if hold == 0 {
		hold = 5 * time.Second
	}
	t.mu.Lock()
	t.interval, t.hold = probeInterval, hold
	t.mu.Unlock()
}

// Recheck makes Run probe now instead of at its next interval: the probe's
// target changed, so the state it last found may no longer hold. A probe in
// flight is cancelled and its outcome ignored, since it is about the old
// target.
func (t *Tracker) Recheck() {
	t.mu.Lock()
	t.rechecks++
	if t.stopProbe != nil {
		t.stopProbe()
	}
	t.mu.Unlock()
	select {
	case t.recheck <- struct{}{}:
	default: // one is pending already
	}
}

func (t *Tracker) timing() (interval, hold time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.interval, t.hold
}

// Observe feeds the outcome of a dial, delivery or probe: nil for success
// (any answer from the far side counts), an error for a network failure.
// Cancellations are not evidence either way and are ignored.
func (t *Tracker) Observe(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil || Answered(err) {
		t.failures = 0
		if t.state != Up {
			t.transition(Up, "")
		}
		return
	}
	t.failures++
	t.lastErr = err.Error()
	if t.state != Down && t.failures >= t.opts.FailuresToDown {
		t.transition(Down, t.lastErr)
	}
}

func (t *Tracker) transition(to State, reason string) {
	now := t.opts.Now()
	from, was := t.state, now.Sub(t.since)
	t.state, t.since = to, now
	t.transitions++
	close(t.changed)
	t.changed = make(chan struct{})
	if t.opts.Events == nil {
		return
	}
	switch {
	case to == Down:
		t.opts.Events.Emit(events.NetworkError, "uplink down", events.Str(events.KeyState, "down"),
			events.Int(keyFailures, int64(t.failures)), events.Str(events.KeyError, reason))
	case from == Down:
		t.opts.Events.Emit(events.Info, fmt.Sprintf("uplink up again after %s down", was.Round(time.Second)),
			events.Str(events.KeyState, "up"), events.Int(events.KeyDurationMS, was.Milliseconds()))
	default:
		t.opts.Events.Emit(events.Info, "uplink up", events.Str(events.KeyState, "up"))
	}
}

// State returns the current state.
func (t *Tracker) State() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state
}

// Down reports an outage (what the CONNECT path asks before retrying).
func (t *Tracker) Down() bool { return t.State() == Down }

// Status returns a snapshot.
func (t *Tracker) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Status{State: t.state.String(), Since: t.since, LastError: t.lastErr, Transitions: t.transitions}
}

// Changed returns a channel closed at the next transition.
func (t *Tracker) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// Wait returns nil at once unless the link is down; then it holds the caller
// until the link is up again (nil), the hold time passes (ErrDown), or ctx
// ends (ctx's error). During an outage one caller a second is let through at
// once as a trial: its dial, which the caller reports to Observe, is how the
// link is found working again when nothing probes it. The CONNECT path calls
// Wait before dialling and answers 503 with Retry-After on ErrDown.
func (t *Tracker) Wait(ctx context.Context) error {
	t.mu.Lock()
	state, ch, hold := t.state, t.changed, t.hold
	trial := false
	if state == Down {
		if now := t.opts.Now(); now.Sub(t.lastTrial) >= trialEvery {
			t.lastTrial, trial = now, true
		}
	}
	t.mu.Unlock()
	if state != Down || trial {
		return nil // a trial's outcome, observed by the caller, decides for the rest
	}
	if hold < 0 {
		return ErrDown
	}
	timer := time.NewTimer(hold)
	defer timer.Stop()
	for {
		select {
		case <-ch:
			t.mu.Lock()
			state, ch = t.state, t.changed
			t.mu.Unlock()
			if state != Down {
				return nil
			}
		case <-timer.C:
			return ErrDown
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// RetryAfter is the Retry-After (seconds) to send with a 503 after ErrDown.
func (t *Tracker) RetryAfter() int {
	_, hold := t.timing()
	return max(int(hold/time.Second), 1)
}

// Run probes the uplink until ctx ends; without a Probe it returns at once.
// A failed probe counts as FailuresToDown failures, since a probe of a
// known-good target failing is strong evidence.
func (t *Tracker) Run(ctx context.Context) {
	if t.opts.Probe == nil {
		return
	}
	for {
		interval, _ := t.timing()
		pctx, cancel := context.WithTimeout(ctx, max(interval/3, time.Second))
		t.mu.Lock()
		gen := t.rechecks
		t.stopProbe = cancel
		t.mu.Unlock()
		err := t.opts.Probe(pctx)
		t.mu.Lock()
		stale := t.rechecks != gen
		t.stopProbe = nil
		t.mu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case stale: // Recheck came meanwhile; its pending request probes again
		case errors.Is(err, ErrNoTarget):
		case err != nil:
			for range t.opts.FailuresToDown {
				t.Observe(err)
			}
		default:
			t.Observe(nil)
		}
		wait := interval
		if t.State() == Down {
			wait = max(wait/5, time.Second)
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-t.recheck:
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
			return
		}
	}
}

// Answered reports whether err shows that the far side answered: a refused
// or reset connection, a name the DNS says does not exist, a certificate the
// gateway does not trust. The network path works, whatever the destination
// thought of the request, so Observe counts these as successes: a single
// closed port tried again and again must not mark the whole uplink down.
func Answered(err error) bool {
	var dns *net.DNSError
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.As(err, &dns) && dns.IsNotFound:
		return true
	case errors.As(err, &cv), errors.As(err, &ua):
		return true
	}
	return false
}

// DialProbe returns a Probe that opens and closes a TCP connection to addr
// (host:port) through dial, the gateway's own upstream dialer.
func DialProbe(dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := dial(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// WriteMetrics writes storegate_link_* in the Prometheus text format.
func (t *Tracker) WriteMetrics(w io.Writer) error {
	st := t.Status()
	up := 0.0
	if st.State == "up" {
		up = 1
	}
	bw := bufio.NewWriter(w)
	m := metrics.NewWriter(bw)
	m.Gauge("storegate_link_up", "Whether the uplink works (1) or not (0; also before the first observation).", up)
	m.Counter("storegate_link_transitions_total", "Uplink state changes.", float64(st.Transitions))
	return bw.Flush()
}
