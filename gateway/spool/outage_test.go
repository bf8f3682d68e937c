package spool

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/link"
)

// load submits messages from n sequential clients through the spool's HTTP
// handler until stopped, and records what was acknowledged.
type load struct {
	stop  atomic.Bool
	wg    sync.WaitGroup
	mu    sync.Mutex
	acked map[int][]string // client -> keys in submission order
	total atomic.Int64
	other atomic.Int64 // non-202 answers
}

func startLoad(t *testing.T, f *fixture, n int) *load {
	l := &load{acked: map[int][]string{}}
	for c := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for seq := 0; !l.stop.Load() && seq < 100000; seq++ {
				code, id, _ := f.submit(f.dest(fmt.Sprintf("/c%d", c)), []byte(fmt.Sprintf("c%d-%06d", c, seq)), nil)
				if code != http.StatusAccepted {
					l.other.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				l.mu.Lock()
				l.acked[c] = append(l.acked[c], id)
				l.mu.Unlock()
				l.total.Add(1)
			}
		}()
	}
	return l
}

func (l *load) finish() {
	l.stop.Store(true)
	l.wg.Wait()
}

// until waits for n more acknowledged submissions.
func (l *load) until(t *testing.T, n int64) {
	t.Helper()
	target := l.total.Load() + n
	waitFor(t, fmt.Sprintf("%d submissions", n), 20*time.Second, func() bool { return l.total.Load() >= target })
}

// TestOutages runs a steady submission load while the receiver is stopped,
// restarted, black-holed and made to reset connections; nothing acknowledged
// may be lost, the backoff stays bounded, and the backlog drains.
func TestOutages(t *testing.T) {
	f := newFixture(t, true, func(o *Options) {
		o.AttemptTimeout = 300 * time.Millisecond
		o.MaxBackoff = 100 * time.Millisecond
	})
	ld := startLoad(t, f, 4)
	ld.until(t, 50)

	checkBackoff := func(phase string) {
		t.Helper()
		waitFor(t, phase+": retries", 20*time.Second, func() bool { return f.sp.Status().Retries > 0 })
		for _, d := range f.sp.Status().Destinations {
			if !d.NextAttempt.IsZero() && time.Until(d.NextAttempt) > f.sp.opts.MaxBackoff {
				t.Fatalf("%s: next attempt in %v, beyond MaxBackoff", phase, time.Until(d.NextAttempt))
			}
		}
	}
	// A receiver that refuses or resets connections answered: the uplink
	// works and other traffic must not be held. One that does not answer at
	// all takes the link down.
	phases := []struct {
		name     string
		down     func()
		linkDown bool
	}{
		{"stopped", func() { f.rcv.stop() }, false},
		{"black-holed", func() { f.rcv.mode.Store(modeBlackhole); f.rcv.stop(); f.rcv.restart() }, true},
		{"resetting", func() { f.rcv.mode.Store(modeReset); f.rcv.stop(); f.rcv.restart() }, false},
	}
	for _, ph := range phases {
		before := f.sp.Status().Retries
		ph.down()
		ld.until(t, 100) // the load goes on: the spool keeps accepting
		waitFor(t, ph.name+": failing attempts", 20*time.Second, func() bool { return f.sp.Status().Retries > before })
		checkBackoff(ph.name)
		if ph.linkDown {
			waitFor(t, ph.name+": link down", 20*time.Second, func() bool { return f.link.State() == link.Down })
		} else if st := f.link.State(); st == link.Down {
			t.Fatalf("%s: the receiver answered, but the link is %v", ph.name, st)
		}
		// Back to normal (restarted on the same port).
		f.rcv.mode.Store(modeNormal)
		f.rcv.stop()
		f.rcv.restart()
		ld.until(t, 50)
		waitFor(t, ph.name+": link up", 20*time.Second, func() bool { return f.link.State() == link.Up })
	}
	ld.finish()
	waitFor(t, "the backlog to drain", 60*time.Second, func() bool { return f.sp.Status().Depth == 0 })

	seen := map[string]string{}
	order := map[int][]string{}
	for _, r := range f.rcv.receipts() {
		if _, dup := seen[r.Key]; dup {
			continue
		}
		seen[r.Key] = r.Body
		var c int
		fmt.Sscanf(r.Path, "/c%d", &c)
		order[c] = append(order[c], r.Key)
	}
	for c, keys := range ld.acked {
		for i, k := range keys {
			if _, ok := seen[k]; !ok {
				t.Fatalf("client %d: acknowledged message %d lost", c, i)
			}
		}
		// First deliveries in submission order.
		if got := strings.Join(order[c], ","); got != strings.Join(keys, ",") {
			t.Fatalf("client %d: delivery order differs from submission order", c)
		}
	}
	if f.ev.count(events.NetworkError) == 0 || f.ev.count(events.Info) == 0 {
		t.Fatal("no link or delivery transition events")
	}
	t.Logf("%d acknowledged, %d answered otherwise, %d retries, all delivered in order", ld.total.Load(), ld.other.Load(), f.sp.Status().Retries)
}
