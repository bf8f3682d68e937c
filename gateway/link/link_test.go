package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

type evs struct {
	mu  sync.Mutex
	ids []events.ID
}

func (e *evs) Emit(id events.ID, _ string, _ ...events.Field) {
	e.mu.Lock()
	e.ids = append(e.ids, id)
	e.mu.Unlock()
}

func (e *evs) list() []events.ID {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]events.ID(nil), e.ids...)
}

func TestTransitions(t *testing.T) {
	ev := &evs{}
	tr := New(Options{Events: ev, FailuresToDown: 3})
	if tr.State() != Unknown {
		t.Fatal("initial state")
	}
	tr.Observe(nil)
	fail := errors.New("connect: network is unreachable")
	tr.Observe(fail)
	tr.Observe(fail)
	if tr.State() != Up {
		t.Fatal("two failures must not mark the link down")
	}
	tr.Observe(context.Canceled) // not evidence
	tr.Observe(fail)
	if tr.State() != Down {
		t.Fatal("three failures in a row must mark the link down")
	}
	st := tr.Status()
	if st.State != "down" || !strings.Contains(st.LastError, "unreachable") || st.Transitions != 2 {
		t.Fatalf("status %+v", st)
	}
	tr.Observe(nil)
	if tr.State() != Up {
		t.Fatal("a success must mark the link up")
	}
	got := ev.list()
	want := []events.ID{events.Info, events.NetworkError, events.Info}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
	var b strings.Builder
	tr.WriteMetrics(&b)
	if !strings.Contains(b.String(), "storegate_link_up 1\n") || !strings.Contains(b.String(), "storegate_link_transitions_total 3\n") {
		t.Fatalf("metrics:\n%s", b.String())
	}
}

func TestWait(t *testing.T) {
	// down is a tracker in an outage whose trial has just been taken, so
	// Wait holds the next callers (TestTrial covers the trial itself).
	down := func(hold time.Duration) *Tracker {
		tr := New(Options{FailuresToDown: 1, Hold: hold})
		tr.Observe(errors.New("x"))
		if err := tr.Wait(context.Background()); err != nil {
			t.Fatalf("the first Wait of an outage is a trial, got %v", err)
		}
		return tr
	}
	t.Run("up returns at once", func(t *testing.T) {
		tr := New(Options{})
		if err := tr.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("down until the hold ends", func(t *testing.T) {
		tr := down(20 * time.Millisecond)
		if err := tr.Wait(context.Background()); !errors.Is(err, ErrDown) {
			t.Fatalf("err = %v", err)
		}
		if tr.RetryAfter() < 1 {
			t.Fatal("Retry-After below 1s")
		}
	})
	t.Run("released when the link comes back", func(t *testing.T) {
		tr := down(time.Hour)
		done := make(chan error, 1)
		go func() { done <- tr.Wait(context.Background()) }()
		// Wait must be blocked: nothing comes out until the link is up.
		select {
		case err := <-done:
			t.Fatalf("Wait returned %v while down", err)
		default:
		}
		tr.Observe(nil)
		if err := <-done; err != nil {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("context ends the wait", func(t *testing.T) {
		tr := down(time.Hour)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := tr.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no hold", func(t *testing.T) {
		if err := down(-1).Wait(context.Background()); !errors.Is(err, ErrDown) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestTrial: during an outage Wait lets one caller a second through at once,
// so real traffic can find the link working when nothing probes it; the
// callers in between are held.
func TestTrial(t *testing.T) {
	now := time.Unix(1e9, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	tr := New(Options{Now: clock, FailuresToDown: 1, Hold: -1})
	tr.Observe(errors.New("dial tcp: i/o timeout"))
	if err := tr.Wait(context.Background()); err != nil {
		t.Fatalf("first caller of the outage: %v, want a trial (nil)", err)
	}
	if err := tr.Wait(context.Background()); !errors.Is(err, ErrDown) {
		t.Fatalf("second caller within the second: %v, want ErrDown", err)
	}
	advance(999 * time.Millisecond)
	if err := tr.Wait(context.Background()); !errors.Is(err, ErrDown) {
		t.Fatalf("caller 999ms after the trial: %v, want ErrDown", err)
	}
	advance(time.Millisecond)
	if err := tr.Wait(context.Background()); err != nil {
		t.Fatalf("caller a second after the trial: %v, want the next trial", err)
	}
}

// TestAnswered: errors that show the far side answering count as successes.
func TestAnswered(t *testing.T) {
	tr := New(Options{FailuresToDown: 1})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	_, refused := net.Dial("tcp", addr)
	for _, e := range []error{
		refused, // a real ECONNREFUSED from the loopback
		&net.DNSError{Err: "no such host", Name: "nx.example", IsNotFound: true},
		&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}},
	} {
		if !Answered(e) {
			t.Errorf("Answered(%v) = false", e)
		}
		tr.Observe(e)
		if tr.State() != Up {
			t.Fatalf("after %v: state %v, want up", e, tr.State())
		}
	}
	for _, e := range []error{
		errors.New("connect: network is unreachable"),
		&net.DNSError{Err: "server misbehaving", Name: "a.example", IsTemporary: true},
		&net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded},
	} {
		if Answered(e) {
			t.Errorf("Answered(%v) = true", e)
		}
	}
}

func TestProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	d := &net.Dialer{}
	probe := DialProbe(d.DialContext, addr)
	tr := New(Options{Probe: probe, ProbeInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitState(t, tr, Up)
}

// TestProbeFailure: a probe that gets no answer marks the link down at once
// (a probe failure counts as FailuresToDown failures), and its next success
// brings it back.
func TestProbeFailure(t *testing.T) {
	var mu sync.Mutex
	result := error(&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded})
	probe := func(context.Context) error { mu.Lock(); defer mu.Unlock(); return result }
	tr := New(Options{Probe: probe, ProbeInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitState(t, tr, Down)
	mu.Lock()
	result = nil
	mu.Unlock()
	waitState(t, tr, Up)
}

// waitState waits, woken by the tracker's transitions, until it is in want.
func waitState(t *testing.T, tr *Tracker, want State) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		changed := tr.Changed() // taken before the check, so no transition is missed
		if tr.State() == want {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("state %v, want %v", tr.State(), want)
		}
	}
}

// TestRecheckAndTiming: what a policy reload does to a running tracker. A
// probe without a target is no evidence; Recheck probes at once however long
// the interval; SetTiming changes the hold that Wait and Retry-After use.
func TestRecheckAndTiming(t *testing.T) {
	var mu sync.Mutex
	result := ErrNoTarget
	probed := make(chan struct{}, 1)
	probe := func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		select {
		case probed <- struct{}{}:
		default:
		}
		return result
	}
	set := func(err error) {
		mu.Lock()
		result = err
		mu.Unlock()
	}
	tr := New(Options{Probe: probe, ProbeInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	next := func() {
		t.Helper()
		select {
		case <-probed:
		case <-time.After(10 * time.Second):
			t.Fatal("no probe")
		}
	}
	next() // the first probe, at start
	tr.Recheck()
	next() // the second: the first one's outcome has been taken by now
	if st := tr.State(); st != Unknown {
		t.Fatalf("state %v after probes without a target, want unknown", st)
	}

	set(errors.New("connection refused"))
	tr.Recheck()
	waitState(t, tr, Down)
	tr.SetTiming(time.Hour, -1)
	_ = tr.Wait(context.Background()) // the outage's trial, if not yet taken
	if err := tr.Wait(context.Background()); !errors.Is(err, ErrDown) {
		t.Fatalf("Wait with no hold: %v", err)
	}
	tr.SetTiming(time.Hour, 7*time.Second)
	if got := tr.RetryAfter(); got != 7 {
		t.Fatalf("Retry-After %d after SetTiming, want 7", got)
	}

	set(nil)
	tr.Recheck()
	waitState(t, tr, Up)
}

// TestRecheckDuringProbe: a reload moves the probe to a new target while a
// probe of the old one is in flight. That probe is cancelled and, whatever it
// returns, says nothing about the new target: the link never goes down, and
// the new target's probe brings it up.
func TestRecheckDuringProbe(t *testing.T) {
	ev := &evs{}
	started := make(chan struct{})
	release := make(chan error, 1)
	calls := 0
	probe := func(ctx context.Context) error {
		calls++ // Run's goroutine only
		if calls > 1 {
			return nil // the new target answers
		}
		close(started)
		select {
		case err := <-release: // the old target fails after all
			return err
		case <-ctx.Done():
			return errors.New("dial tcp 127.0.0.1:9: i/o timeout") // not a context error, as dialers may say
		}
	}
	tr := New(Options{Events: ev, Probe: probe, ProbeInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no probe")
	}
	tr.Recheck()
	release <- errors.New("connect: connection refused") // taken only if the probe was not cancelled
	waitState(t, tr, Up)
	for _, id := range ev.list() {
		if id == events.NetworkError {
			t.Fatalf("the old target's probe marked the link down: events %v", ev.list())
		}
	}
	if st := tr.Status(); st.Transitions != 1 {
		t.Fatalf("status %+v, want one transition (to up)", st)
	}
}
