package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// bench runs measurements against subjects; it owns the upstream.
type bench struct {
	up       *upstream
	procRoot string // normally /proc
	opts     options
	progress io.Writer
	runID    string
	now      func() time.Time
	// For the tests over TLS to the proxy: the client's configuration for the
	// proxies' TLS listeners, and for the direct equivalent, one TLS session
	// to the upstream with the same key exchange (X25519, see writeProxyCert).
	proxyTLS, directTLS *tls.Config
}

// leg is how the client's bytes travel in a test.
type leg uint8

const (
	legPlain     leg = iota // plain bytes through a plain tunnel
	legTLSInside            // TLS 1.3 end to end, through a plain tunnel
	legTLSProxy             // TLS to the proxy's TLS listener, plain inside (a store to its regional storegate)
)

// route says where a test's client connects and what it runs inside the
// tunnel: via the subject's plain or TLS listener (none for direct), to
// target, with TLS 1.3 end to end when inner is set. plain and tlsTarget are
// the upstream's plain and TLS servers of the kind the test uses.
func (b *bench) route(s *subject, l leg, plain, tlsTarget string) (via hop, target string, inner *tls.Config) {
	switch l {
	case legTLSInside:
		return hop{addr: s.proxy}, tlsTarget, b.up.clientTLS
	case legTLSProxy:
		if s.proxy == "" { // direct: the one TLS session is with the upstream
			return hop{}, tlsTarget, b.directTLS
		}
		return hop{s.tlsProxy, b.proxyTLS}, plain, nil
	}
	return hop{addr: s.proxy}, plain, nil
}

func (b *bench) bulkTarget() string    { return b.up.bulk.Addr().String() }
func (b *bench) tlsBulkTarget() string { return b.up.tlsBulk.Addr().String() }
func (b *bench) echoTarget() string    { return b.up.echo.Addr().String() }
func (b *bench) tlsEchoTarget() string { return b.up.tlsEcho.Addr().String() }

// cpuOf samples the subject's process tree; ok is false for direct or on error.
func (b *bench) cpuOf(s *subject) (time.Duration, bool) {
	if s.pid() == 0 {
		return 0, false
	}
	ps, err := sampleTree(b.procRoot, s.pid())
	if err != nil {
		return 0, false
	}
	return ps.cpu, true
}

func (b *bench) m(rep int, s *subject, metric, unit string, v float64, errs int) measurement {
	return measurement{
		Run: b.runID, Time: b.now().UTC().Format(time.RFC3339), Rep: rep, Subject: s.name,
		Metric: metric, Value: v, Unit: unit, Errors: errs, Stat: "sample",
	}
}

// bulk moves bytes through n tunnels in one direction for the configured
// time after a warm-up, counting at the receiving end, and reports the
// throughput and the proxy's CPU seconds per GB (1e9 bytes). With
// legTLSInside the bytes travel inside TLS 1.3, as they would through an
// inspecting proxy; with legTLSProxy the client speaks TLS to the proxy.
func (b *bench) bulk(ctx context.Context, s *subject, rep, n int, upload bool, l leg) []measurement {
	dir := "down"
	mode := byte(modeDownload)
	if upload {
		dir, mode = "up", modeUpload
	}
	switch l {
	case legTLSInside:
		dir = "tls_" + dir
	case legTLSProxy:
		dir = "viatls_" + dir
	}
	via, target, inner := b.route(s, l, b.bulkTarget(), b.tlsBulkTarget())
	var got atomic.Int64 // bytes the client read (download)
	counter := func() int64 {
		if upload {
			return b.up.received.Load()
		}
		return got.Load()
	}
	var errs atomic.Int64
	conns := make([]net.Conn, 0, n) // only this goroutine touches it
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range n {
		c, _, err := dialTunnel(ctx, via, target, time.Now().Add(5*time.Second))
		if err != nil {
			errs.Add(1)
			continue
		}
		var rw io.ReadWriter = c
		if inner != nil {
			tc := tls.Client(c, inner)
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				c.Close()
				errs.Add(1)
				continue
			}
			rw = tc
		}
		conns = append(conns, c)
		wg.Go(func() {
			if _, err := rw.Write([]byte{mode}); err != nil {
				errs.Add(1)
				return
			}
			buf := make([]byte, 256<<10)
			for {
				var k int
				var err error
				if upload {
					k, err = rw.Write(buf)
				} else {
					k, err = rw.Read(buf)
					got.Add(int64(k))
				}
				if err != nil {
					select {
					case <-stop:
					default:
						errs.Add(1)
					}
					return
				}
			}
		})
	}
	sleepCtx(ctx, b.opts.warmup)
	b0, c0, t0 := counter(), cpuNow(b, s), time.Now()
	sleepCtx(ctx, b.opts.bulkTime)
	b1, c1, t1 := counter(), cpuNow(b, s), time.Now()
	close(stop)
	for _, c := range conns {
		c.Close()
	}
	waitGroup(&wg, 5*time.Second)
	s.tunnels.Add(int64(len(conns)))

	bytes := float64(b1 - b0)
	secs := t1.Sub(t0).Seconds()
	name := fmt.Sprintf("bulk_%s_%d", dir, n)
	out := []measurement{b.m(rep, s, name, "MB/s", bytes/secs/1e6, int(errs.Load()))}
	if c0.ok && c1.ok && bytes > 0 {
		out = append(out, b.m(rep, s, fmt.Sprintf("cpu_gb_%s_%d", dir, n), "s/GB",
			(c1.cpu-c0.cpu).Seconds()/(bytes/1e9), 0))
	}
	return out
}

type cpuSample struct {
	cpu time.Duration
	ok  bool
}

func cpuNow(b *bench, s *subject) cpuSample {
	c, ok := b.cpuOf(s)
	return cpuSample{c, ok}
}

// rate runs the configured number of clients, each doing CONNECT, 200, one
// small exchange (inside TLS 1.3 with legTLSInside; over TLS to the proxy
// with legTLSProxy) and close, for the configured time, and reports round
// trips per second, CONNECT-to-200 percentiles and the proxy's CPU seconds
// per 1,000 round trips.
func (b *bench) rate(ctx context.Context, s *subject, rep int, l leg) []measurement {
	name := map[leg]string{legPlain: "rate_plain", legTLSInside: "rate_tls", legTLSProxy: "rate_viatls"}[l]
	via, target, tlsConf := b.route(s, l, b.echoTarget(), b.tlsEchoTarget())
	if s.inspect {
		name = "rate_tls" // the subject name tells inspection on from off
	}
	maxPerClient := b.opts.maxRoundTrips / b.opts.clients
	c0 := cpuNow(b, s)
	start := time.Now()
	end := start.Add(b.opts.rateTime)
	lats := make([][]time.Duration, b.opts.clients)
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := range b.opts.clients {
		lats[i] = make([]time.Duration, 0, min(maxPerClient, 1<<16))
		wg.Go(func() {
			for k := 0; k < maxPerClient && time.Now().Before(end) && ctx.Err() == nil; k++ {
				var lat time.Duration
				err := roundTrip(ctx, via, target, tlsConf, time.Now().Add(5*time.Second), &lat)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lats[i] = append(lats[i], lat)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	c1 := cpuNow(b, s)
	all := slices.Concat(lats...)
	slices.Sort(all)
	done := float64(len(all))
	s.tunnels.Add(int64(len(all)))
	ne := int(errs.Load())
	if fe, ok := firstErr.Load().(string); ok {
		fmt.Fprintf(b.progress, "    %s %s: %d errors, first: %s\n", s.name, name, ne, fe)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	out := []measurement{
		b.m(rep, s, name, "conn/s", done/elapsed.Seconds(), ne),
		b.m(rep, s, name+"_p50", "ms", ms(percentile(all, 50)), 0),
		b.m(rep, s, name+"_p90", "ms", ms(percentile(all, 90)), 0),
		b.m(rep, s, name+"_p99", "ms", ms(percentile(all, 99)), 0),
		b.m(rep, s, name+"_errors", "count", float64(ne), 0),
	}
	if c0.ok && c1.ok && done > 0 {
		out = append(out, b.m(rep, s, name+"_cpu_1k", "s/1000", (c1.cpu-c0.cpu).Seconds()/done*1000, 0))
	}
	return out
}

// idle measures the proxy's resident memory and descriptors with no tunnels open.
func (b *bench) idle(s *subject, rep int) []measurement {
	if s.pid() == 0 {
		return nil
	}
	ps, err := sampleTree(b.procRoot, s.pid())
	if err != nil {
		return nil
	}
	out := []measurement{b.m(rep, s, "rss_idle", "MiB", float64(ps.rssKiB)/1024, 0)}
	if anon, file, err := rssSplit(b.procRoot, s.pid()); err == nil {
		out = append(out,
			b.m(rep, s, "rss_idle_anon", "MiB", float64(anon)/1024, 0),
			b.m(rep, s, "rss_idle_file", "MiB", float64(file)/1024, 0))
	}
	if n, err := openFDs(b.procRoot, s.pid()); err == nil {
		s.idleFDs = n
		out = append(out, b.m(rep, s, "fds_idle", "count", float64(n), 0))
	}
	return out
}

// leftover reports the descriptors the proxy still holds once every test's
// connections are closed: it polls (bounded) until the count is back to what
// it was idle, so a proxy that closes lazily is not mistaken for a leak.
func (b *bench) leftover(s *subject, rep int) []measurement {
	if s.pid() == 0 || s.exited() {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	n, err := openFDs(b.procRoot, s.pid())
	for err == nil && n > s.idleFDs && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		n, err = openFDs(b.procRoot, s.pid())
	}
	if err != nil {
		return nil
	}
	if n > s.idleFDs {
		fmt.Fprintf(b.progress, "    %s: holds %d descriptors 5 s after all tests closed, %d when idle"+
			" (a leak, or a cache such as Go's splice pipes that only GC frees)\n", s.name, n, s.idleFDs)
	}
	// Fewer than idle is possible (the readiness probe's socket was still
	// closing when the idle count was taken): that is no leak.
	return []measurement{b.m(rep, s, "fds_leftover", "count", float64(max(0, n-s.idleFDs)), 0)}
}

// tunnels opens idle tunnels to the echo server up to each level in turn,
// and at each level reads the proxy's RSS: per-tunnel KiB is
// (RSS_n - RSS_before)/n. It then checks a sample of the tunnels still echo.
func (b *bench) tunnels(ctx context.Context, s *subject, rep int) []measurement {
	if s.pid() == 0 {
		return nil
	}
	before, err := sampleTree(b.procRoot, s.pid())
	if err != nil {
		return nil
	}
	var out []measurement
	var conns []net.Conn
	baseEcho := b.up.echoConns.Load()
	defer func() {
		// The upstream closes first, as in the rate runs (see echoQuit).
		s.tunnels.Add(int64(len(conns)))
		b.up.closeEcho()
		b.waitEchoConns(0, 10*time.Second)
		for _, c := range conns {
			c.Close()
		}
	}()
	errs := 0
	for _, level := range b.opts.tunnels {
		if level > b.opts.maxTunnels {
			fmt.Fprintf(b.progress, "    %s: %d tunnels skipped: the file descriptor limit allows %d\n",
				s.name, level, b.opts.maxTunnels)
			continue
		}
		failed, firstErr := b.open(ctx, s, level-len(conns), &conns)
		if failed > 0 {
			fmt.Fprintf(b.progress, "    %s: %d of %d tunnels failed to open, first: %v\n", s.name, failed, level, firstErr)
		}
		errs += failed
		b.waitEchoConns(baseEcho+int64(len(conns)), 10*time.Second)
		ps, err := sampleTree(b.procRoot, s.pid())
		if err != nil {
			break
		}
		l := strconv.Itoa(level)
		perKiB := math.NaN()
		if len(conns) > 0 {
			perKiB = float64(ps.rssKiB-before.rssKiB) / float64(len(conns))
		}
		if fds, err := openFDs(b.procRoot, s.pid()); err == nil && len(conns) > 0 {
			out = append(out, b.m(rep, s, "tunnel_fds_"+l, "count", float64(fds-s.idleFDs)/float64(len(conns)), 0))
		}
		dead := b.checkSample(ctx, conns, 50)
		out = append(out,
			b.m(rep, s, "rss_"+l, "MiB", float64(ps.rssKiB)/1024, errs),
			b.m(rep, s, "tunnel_kib_"+l, "KiB", perKiB, errs),
			b.m(rep, s, "tunnel_errors_"+l, "count", float64(errs+dead), 0),
		)
		if ctx.Err() != nil {
			break
		}
	}
	return out
}

// open adds n tunnels to conns with bounded concurrency and time; it stops
// early after many consecutive failures and returns how many it could not
// open (including those it had no time left to try) and the first error.
func (b *bench) open(ctx context.Context, s *subject, n int, conns *[]net.Conn) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	var firstErr error
	const workers = 32
	deadline := time.Now().Add(b.opts.openTime)
	var next, streak atomic.Int64
	added := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && time.Now().Before(deadline) && ctx.Err() == nil && streak.Load() < 200 {
				c, err := b.openOne(ctx, s)
				if err != nil {
					streak.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				streak.Store(0)
				mu.Lock()
				*conns = append(*conns, c)
				added++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr == nil && added < n {
		firstErr = fmt.Errorf("out of time after %s", b.opts.openTime)
	}
	return n - added, firstErr
}

// logCost reports the bytes of log or events the subject wrote per tunnel
// opened through it; call it after the subject has stopped and flushed.
func (b *bench) logCost(s *subject, rep int) []measurement {
	n := s.tunnels.Load()
	if s.eventLog == "" || n == 0 {
		return nil
	}
	fi, err := os.Stat(s.eventLog)
	if err != nil {
		return nil
	}
	return []measurement{b.m(rep, s, "log_bytes_per_tunnel", "B", float64(fi.Size())/float64(n), 0)}
}

// openOne opens one idle tunnel to the echo server. Through an inspecting
// storegate the tunnel carries TLS 1.3 and the handshake completes first, so
// the tunnel is past inspection, as a real idle session would be.
func (b *bench) openOne(ctx context.Context, s *subject) (net.Conn, error) {
	deadline := time.Now().Add(10 * time.Second)
	if !s.inspect {
		c, _, err := dialTunnel(ctx, hop{addr: s.proxy}, b.echoTarget(), deadline)
		return c, err
	}
	c, _, err := dialTunnel(ctx, hop{addr: s.proxy}, b.tlsEchoTarget(), deadline)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, b.up.clientTLS)
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// waitEchoConns polls until the upstream holds want echo connections or the
// time is up, so RSS is read once the proxy has dialled every upstream leg.
func (b *bench) waitEchoConns(want int64, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for b.up.echoConns.Load() != want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// checkSample sends one echo through up to k tunnels spread over conns and
// returns how many failed.
func (b *bench) checkSample(ctx context.Context, conns []net.Conn, k int) int {
	if len(conns) == 0 {
		return 0
	}
	step := max(1, len(conns)/k)
	dead := 0
	for i := 0; i < len(conns) && ctx.Err() == nil; i += step {
		c := conns[i]
		var msg, back [echoSize]byte
		copy(msg[:], "idle tunnel liveness check.....") // not echoQuit: the tunnel stays
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg[:]); err != nil {
			dead++
			continue
		}
		if _, err := io.ReadFull(c, back[:]); err != nil || back != msg {
			dead++
		}
		_ = c.SetDeadline(time.Time{})
	}
	return dead
}

// sleepCtx waits d or until ctx ends; it times a measurement window, it does
// not wait for a condition.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// waitGroup waits for wg at most limit.
func waitGroup(wg *sync.WaitGroup, limit time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
	}
}
