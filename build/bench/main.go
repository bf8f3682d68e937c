// Command bench measures storegate side by side with a direct connection,
// tinyproxy and squid on loopback, interleaved and repeated, and prints one
// table of medians and ratios; every figure also goes to a JSON-lines file.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, time.Now)
	stop()
	os.Exit(code)
}

// options are the harness's settings; they come from flags only.
type options struct {
	reps          int
	warmup        time.Duration
	bulkTime      time.Duration
	rateTime      time.Duration
	openTime      time.Duration // bound on opening one level of idle tunnels
	clients       int
	maxRoundTrips int // bound on round trips in one rate run
	tunnels       []int
	maxTunnels    int // what the file descriptor limit allows
	subjects      []string
	bins          map[string]string
	outPath       string
	keepTemp      bool
	only          string // run only the tests whose names contain this (profiling)
}

func defaultSubjects() []string {
	return []string{subjDirect, subjStoregate, subjInspect, subjTinyproxy, subjSquid, subjRelay, subjStoregateTLS, subjSquidTLS}
}

func parseOptions(args []string, stderr io.Writer, now time.Time) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	quick := fs.Bool("quick", false, "short run: 1 repetition, short windows, 1000 tunnels (explicit flags still win)")
	fs.IntVar(&o.reps, "reps", 3, "repetitions; the table shows medians")
	fs.DurationVar(&o.warmup, "warmup", 300*time.Millisecond, "bulk warm-up before each window")
	fs.DurationVar(&o.bulkTime, "bulk-time", 2*time.Second, "bulk measurement window")
	fs.DurationVar(&o.rateTime, "rate-time", 3*time.Second, "CONNECT rate run length")
	fs.DurationVar(&o.openTime, "open-time", 60*time.Second, "bound on opening one level of idle tunnels")
	fs.IntVar(&o.clients, "clients", 32, "concurrent clients in the CONNECT rate runs")
	fs.IntVar(&o.maxRoundTrips, "max-round-trips", 500000, "bound on round trips per rate run")
	tunnels := fs.String("tunnels", "1000,5000", "idle tunnel levels, comma-separated (10000 if the fd limit allows)")
	subjects := fs.String("subjects", strings.Join(defaultSubjects(), ","), "subjects to measure")
	sg := fs.String("storegate", "bin/storegate", "storegate binary")
	tp := fs.String("tinyproxy", "/usr/bin/tinyproxy", "tinyproxy binary")
	sq := fs.String("squid", "/usr/sbin/squid", "squid binary")
	gr := fs.String("relay", "build/out/go-relay", "the floor: a minimal Go CONNECT relay (go build ./build/bench/relay)")
	fs.StringVar(&o.outPath, "out", "", "JSON-lines file (default build/out/bench-DATE.jsonl)")
	fs.BoolVar(&o.keepTemp, "keep", false, "keep the temporary directory with configs and logs")
	fs.StringVar(&o.only, "only", "", "run only the tests whose names contain this, e.g. \"rate plain\" or \"bulk down 1\" (for profiling; the targets table is then partial)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		quickDefaults := map[string]func(){
			"reps":      func() { o.reps = 1 },
			"warmup":    func() { o.warmup = 150 * time.Millisecond },
			"bulk-time": func() { o.bulkTime = 500 * time.Millisecond },
			"rate-time": func() { o.rateTime = time.Second },
			"open-time": func() { o.openTime = 20 * time.Second },
			"tunnels":   func() { *tunnels = "1000" },
		}
		for name, apply := range quickDefaults {
			if !set[name] {
				apply()
			}
		}
	}
	if o.reps < 1 || o.reps > 20 {
		return o, fmt.Errorf("-reps %d: want 1..20", o.reps)
	}
	if o.clients < 1 || o.clients > 1024 {
		return o, fmt.Errorf("-clients %d: want 1..1024", o.clients)
	}
	if o.maxRoundTrips < o.clients {
		return o, fmt.Errorf("-max-round-trips %d: want at least -clients (%d)", o.maxRoundTrips, o.clients)
	}
	for _, d := range []time.Duration{o.warmup, o.bulkTime, o.rateTime, o.openTime} {
		if d < 0 || d > 10*time.Minute {
			return o, fmt.Errorf("duration %s out of range 0..10m", d)
		}
	}
	if *tunnels != "" {
		for _, f := range strings.Split(*tunnels, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 100000 {
				return o, fmt.Errorf("-tunnels: %q is not a count in 1..100000", f)
			}
			o.tunnels = append(o.tunnels, n)
		}
		slices.Sort(o.tunnels)
		o.tunnels = slices.Compact(o.tunnels)
	}
	for _, s := range strings.Split(*subjects, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(defaultSubjects(), s) {
			return o, fmt.Errorf("-subjects: unknown subject %q (know %s)", s, strings.Join(defaultSubjects(), ", "))
		}
		o.subjects = append(o.subjects, s)
	}
	o.bins = map[string]string{}
	for name, bin := range map[string]string{subjStoregate: *sg, subjInspect: *sg, subjStoregateTLS: *sg, subjTinyproxy: *tp, subjSquid: *sq, subjSquidTLS: *sq, subjRelay: *gr} {
		if bin == "" {
			continue
		}
		// The subjects run in their own directories: make paths absolute.
		abs, err := filepath.Abs(bin)
		if err != nil {
			return o, fmt.Errorf("binary %q: %w", bin, err)
		}
		o.bins[name] = abs
	}
	if o.outPath == "" {
		o.outPath = filepath.Join("build", "out", "bench-"+now.UTC().Format("20060102T150405Z")+".jsonl")
	}
	return o, nil
}

// raiseNoFile lifts the soft file limit to the hard one with an explicit
// call, so the proxies we start inherit it too, and returns the limit.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, now func() time.Time) int {
	if len(args) > 0 && args[0] == "compare" {
		return compare(args[1:], stdout, stderr)
	}
	start := now()
	o, err := parseOptions(args, stderr, start)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	nofile, err := raiseNoFile()
	if err != nil {
		fmt.Fprintln(stderr, "bench: RLIMIT_NOFILE:", err)
		return 1
	}
	// A tunnel holds two descriptors in the proxy and two here (client and
	// upstream side); keep room for listeners, logs and the rate runs.
	o.maxTunnels = max(0, int(min(nofile, 1<<22))-512) / 2
	tmp, err := os.MkdirTemp("", "storegate-bench-")
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if o.keepTemp {
		fmt.Fprintln(stderr, "bench: configs and logs in", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	// squid runs as its own user and must reach its directory below this one.
	if err := os.Chmod(tmp, 0o755); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	up, err := startUpstream()
	if err != nil {
		fmt.Fprintln(stderr, "bench: upstream:", err)
		return 1
	}
	defer up.close(5 * time.Second)

	certFile, keyFile, proxyTLS, err := writeProxyCert(tmp, start)
	if err != nil {
		fmt.Fprintln(stderr, "bench: TLS listener certificate:", err)
		return 1
	}
	b := &bench{up: up, procRoot: "/proc", opts: o, progress: stderr, runID: start.UTC().Format("20060102T150405Z"), now: now,
		proxyTLS: proxyTLS, directTLS: directTLS(up.clientTLS)}
	l := &launcher{
		dir: tmp, upstreamPorts: up.ports(), probeTarget: b.tlsEchoTarget(), probeTLS: up.clientTLS,
		bins: o.bins, maxTunnels: o.maxTunnels, readyTimeout: 20 * time.Second,
		proxyCert: certFile, proxyKey: keyFile, proxyTLS: proxyTLS,
	}
	meta := describe(o, nofile, start)
	fmt.Fprintf(stderr, "bench: %s; %d repetition(s); subjects %s\n", meta["machine"], o.reps, strings.Join(o.subjects, ", "))
	samples, skips := b.runAll(ctx, l)
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "bench: interrupted")
		return 1
	}
	med := medians(samples)
	all := append(slices.Clone(samples), sortedMedians(med)...)
	if err := writeResults(o.outPath, meta, all); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	var report strings.Builder
	fmt.Fprintf(&report, "storegate side-by-side benchmark, %s\n%s\n", start.UTC().Format(time.RFC3339), meta["machine"])
	fmt.Fprintf(&report, "versions: %s; %s; %s\n", meta["storegate"], meta["tinyproxy"], meta["squid"])
	fmt.Fprintf(&report, "medians of %d repetition(s); bulk %s windows, %d clients for %s per rate run; all on loopback\n\n",
		o.reps, o.bulkTime, o.clients, o.rateTime)
	formatTable(&report, tableRows(o.tunnels), med)
	fmt.Fprintln(&report)
	formatTargets(&report, targets(med, o.tunnels))
	for _, name := range o.subjects {
		if why, ok := skips[name]; ok {
			fmt.Fprintf(&report, "\nskipped %s: %s\n", name, why)
		}
	}
	fmt.Fprintf(&report, "\ntook %s; load average at the end %s\n", now().Sub(start).Round(time.Second), loadAvg())
	// The table also goes beside the JSON lines, ready to paste into a note.
	txt := strings.TrimSuffix(o.outPath, ".jsonl") + ".txt"
	if err := os.WriteFile(txt, []byte(report.String()), 0o644); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\nJSON lines: %s, table: %s\n", report.String(), o.outPath, txt)
	return 0
}

// compare prints the medians of two earlier runs side by side:
// bench compare OLD.jsonl NEW.jsonl.
func compare(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 {
		fmt.Fprintln(stderr, "usage: bench compare OLD.jsonl NEW.jsonl")
		return 2
	}
	var runs [2]map[key]measurement
	for i, p := range args {
		f, err := os.Open(p)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		runs[i], err = readMedians(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "bench: %s: %v\n", p, err)
			return 1
		}
	}
	formatCompare(stdout, runs[0], runs[1])
	return 0
}

// runAll runs every repetition: fresh subjects, idle RSS, then each test
// across all subjects in an order rotated per repetition, idle tunnels last.
func (b *bench) runAll(ctx context.Context, l *launcher) ([]measurement, map[string]string) {
	var out []measurement
	skips := map[string]string{}
	type test struct {
		name    string
		applies func(s *subject) bool
		run     func(s *subject, rep int) []measurement
	}
	// The subjects with a TLS listener take only the tests over TLS to the
	// proxy, which the others (but direct) do not take.
	viaTLS := func(s *subject) bool { return s.tlsProxy != "" }
	plainListener := func(s *subject) bool { return !viaTLS(s) }
	notInspect := func(s *subject) bool { return plainListener(s) && !s.inspect }
	isProxy := func(s *subject) bool { return s.proxy != "" }
	// The floor relay holds a pipe per direction for a tunnel's life (Go's
	// own splice): idle tunnels would only measure that, and exhaust the
	// descriptors the real subjects need.
	isProduct := func(s *subject) bool { return isProxy(s) && plainListener(s) && s.name != subjRelay }
	directOrTLS := func(s *subject) bool { return !isProxy(s) || viaTLS(s) }
	var tests []test
	for _, n := range []int{1, 8} {
		for _, upload := range []bool{false, true} {
			dir := map[bool]string{false: "down", true: "up"}[upload]
			tests = append(tests, test{fmt.Sprintf("bulk %s %d", dir, n), notInspect,
				func(s *subject, rep int) []measurement { return b.bulk(ctx, s, rep, n, upload, legPlain) }})
		}
	}
	tests = append(tests, test{"bulk TLS down 1", plainListener,
		func(s *subject, rep int) []measurement { return b.bulk(ctx, s, rep, 1, false, legTLSInside) }})
	for _, upload := range []bool{false, true} {
		dir := map[bool]string{false: "down", true: "up"}[upload]
		tests = append(tests, test{"bulk via TLS listener " + dir + " 1", directOrTLS,
			func(s *subject, rep int) []measurement { return b.bulk(ctx, s, rep, 1, upload, legTLSProxy) }})
	}
	tests = append(tests,
		test{"rate plain", notInspect, func(s *subject, rep int) []measurement { return b.rate(ctx, s, rep, legPlain) }},
		test{"rate tls", plainListener, func(s *subject, rep int) []measurement { return b.rate(ctx, s, rep, legTLSInside) }},
		test{"rate via TLS listener", directOrTLS, func(s *subject, rep int) []measurement { return b.rate(ctx, s, rep, legTLSProxy) }},
		test{"idle tunnels", isProduct, func(s *subject, rep int) []measurement { return b.tunnels(ctx, s, rep) }},
	)
	for rep := 1; rep <= b.opts.reps && ctx.Err() == nil; rep++ {
		order := rotate(b.opts.subjects, rep-1)
		subs := make([]*subject, 0, len(order))
		for _, name := range order {
			s := l.start(ctx, name, rep)
			if s.skip != "" {
				if _, seen := skips[name]; !seen {
					fmt.Fprintf(b.progress, "bench: skipping %s: %s\n", name, s.skip)
				}
				skips[name] = s.skip
				continue
			}
			subs = append(subs, s)
		}
		// Let start-up work settle before reading idle memory.
		sleepCtx(ctx, 500*time.Millisecond)
		for _, s := range subs {
			out = append(out, b.idle(s, rep)...)
		}
		for _, t := range tests {
			for _, s := range subs {
				if ctx.Err() != nil || !t.applies(s) || !strings.Contains(t.name, b.opts.only) {
					continue
				}
				if s.exited() {
					fmt.Fprintf(b.progress, "bench: %s exited during the run%s\n", s.name, s.logTail(6))
					continue
				}
				began := time.Now()
				ms := t.run(s, rep)
				fds := ""
				if n, err := openFDs(b.procRoot, s.pid()); err == nil {
					fds = fmt.Sprintf("  [proxy fds %d]", n)
				}
				fmt.Fprintf(b.progress, "rep %d/%d %-15s %-17s %5.1fs  %s%s\n", rep, b.opts.reps, t.name, s.name,
					time.Since(began).Seconds(), summary(ms), fds)
				out = append(out, ms...)
			}
		}
		for _, s := range subs {
			out = append(out, b.leftover(s, rep)...)
		}
		for _, s := range subs {
			s.stop(5 * time.Second)
			out = append(out, b.logCost(s, rep)...)
		}
	}
	out = append(out, b.binarySizes(l)...)
	return out, skips
}

// rotate returns xs starting at index k (mod len), so no subject always runs
// first or last.
func rotate(xs []string, k int) []string {
	if len(xs) == 0 {
		return nil
	}
	k %= len(xs)
	return append(slices.Clone(xs[k:]), xs[:k]...)
}

func summary(ms []measurement) string {
	if len(ms) == 0 {
		return "-"
	}
	var parts []string
	for _, m := range ms[:min(2, len(ms))] {
		parts = append(parts, fmt.Sprintf("%s=%s %s", m.Metric, num(m.Value), m.Unit))
	}
	if ms[0].Errors > 0 {
		parts = append(parts, fmt.Sprintf("errors=%d", ms[0].Errors))
	}
	return strings.Join(parts, " ")
}

// binarySizes reports each subject's executable size (for the peers the
// executable only; their shared libraries are not counted).
func (b *bench) binarySizes(l *launcher) []measurement {
	var out []measurement
	for _, name := range b.opts.subjects {
		bin := l.bins[name]
		if bin == "" || name == subjInspect || name == subjStoregateTLS || name == subjSquidTLS {
			continue
		}
		fi, err := os.Stat(bin)
		if err != nil {
			continue
		}
		s := &subject{name: name}
		out = append(out, b.m(0, s, "binary", "MiB", float64(fi.Size())/(1<<20), 0))
	}
	return out
}

func sortedMedians(med map[key]measurement) []measurement {
	out := make([]measurement, 0, len(med))
	for _, m := range med {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b measurement) int {
		return strings.Compare(a.Subject+"\x00"+a.Metric, b.Subject+"\x00"+b.Metric)
	})
	return out
}

// describe names the machine and the versions under test.
func describe(o options, nofile uint64, start time.Time) map[string]string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	load := loadAvg()
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	version := func(bin string, args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			return "unavailable"
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	return map[string]string{
		"machine": fmt.Sprintf("%d CPUs (%s), Linux %s, load %s, RLIMIT_NOFILE %d, %s",
			runtime.NumCPU(), cpu, kernel, load, nofile, runtime.Version()),
		"storegate": version(o.bins[subjStoregate], "version"),
		"tinyproxy": version(o.bins[subjTinyproxy], "-v"),
		"squid":     version(o.bins[subjSquid], "-v"),
		"start":     start.UTC().Format(time.RFC3339),
	}
}

// loadAvg is the 1, 5 and 15 minute load average: other work on the machine
// skews every figure, so the run records it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// writeResults writes a meta line and then every measurement to path.
func writeResults(path string, meta map[string]string, ms []measurement) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := json.NewEncoder(w).Encode(map[string]any{"meta": meta}); err != nil {
		f.Close()
		return err
	}
	if err := writeJSONLines(w, ms); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
