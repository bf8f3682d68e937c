package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/policy"
)

func TestMedian(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name string
		in   []float64
		want float64
	}{
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"one", []float64{7}, 7},
		{"nan ignored", []float64{nan, 5, 1, 3}, 3},
		{"empty", nil, nan},
		{"all nan", []float64{nan, nan}, nan},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := median(c.in)
			if math.IsNaN(c.want) != math.IsNaN(got) || (!math.IsNaN(got) && got != c.want) {
				t.Fatalf("median(%v) = %v, want %v", c.in, got, c.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 100; i++ {
		xs = append(xs, time.Duration(i)*time.Millisecond)
	}
	cases := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"p50 of 100", xs, 50, 50 * time.Millisecond},
		{"p90 of 100", xs, 90, 90 * time.Millisecond},
		{"p99 of 100", xs, 99, 99 * time.Millisecond},
		{"p100 of 100", xs, 100, 100 * time.Millisecond},
		{"p99 of 3 is the max", xs[:3], 99, 3 * time.Millisecond},
		{"tiny p is the min", xs, 0.001, time.Millisecond},
		{"empty", nil, 50, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := percentile(c.in, c.p); got != c.want {
				t.Fatalf("percentile(p%v) = %v, want %v", c.p, got, c.want)
			}
		})
	}
}

func TestRatio(t *testing.T) {
	if r := ratio(3, 2); r != 1.5 {
		t.Fatalf("ratio(3,2) = %v", r)
	}
	for _, c := range [][2]float64{{1, 0}, {math.NaN(), 1}, {1, math.NaN()}} {
		if r := ratio(c[0], c[1]); !math.IsNaN(r) {
			t.Fatalf("ratio(%v,%v) = %v, want NaN", c[0], c[1], r)
		}
	}
}

// statLine builds a /proc/PID/stat line with the given fields.
func statLine(pid int, comm string, ppid int, utime, stime, cutime, cstime, rss int64) string {
	f := make([]string, 52)
	for i := range f {
		f[i] = "0"
	}
	f[0] = "S"
	f[1] = itoa(ppid)
	f[11], f[12], f[13], f[14] = itoa64(utime), itoa64(stime), itoa64(cutime), itoa64(cstime)
	f[21] = itoa64(rss)
	return itoa(pid) + " (" + comm + ") " + strings.Join(f, " ") + "\n"
}

func itoa(i int) string     { return strconv.Itoa(i) }
func itoa64(i int64) string { return strconv.FormatInt(i, 10) }

func TestParseStat(t *testing.T) {
	line := statLine(42, "squid (kid) x", 7, 10, 20, 3, 4, 1000)
	f, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := statFields{pid: 42, ppid: 7, utime: 10, stime: 20, cutime: 3, cstime: 4, rssPages: 1000}
	if f != want {
		t.Fatalf("parseStat = %+v, want %+v", f, want)
	}
	for _, bad := range []string{"", "42 no parens 1 2 3", "x (a) S 1 2", "42 (a) S 1 2 3"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
}

func TestSampleTreeSumsDescendants(t *testing.T) {
	root := t.TempDir()
	write := func(pid int, line string) {
		t.Helper()
		dir := filepath.Join(root, itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(100, statLine(100, "squid", 1, 100, 50, 10, 0, 256))     // 1.6 s, 256 pages
	write(101, statLine(101, "squid-kid", 100, 200, 0, 0, 0, 512)) // child
	write(102, statLine(102, "helper", 101, 0, 100, 0, 0, 256))    // grandchild
	write(200, statLine(200, "other", 1, 9999, 9999, 0, 0, 9999))  // unrelated
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := sampleTree(root, 100)
	if err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	if s.procs != 3 {
		t.Errorf("procs = %d, want 3", s.procs)
	}
	if want := 4600 * time.Millisecond; s.cpu != want {
		t.Errorf("cpu = %v, want %v", s.cpu, want)
	}
	if want := 1024 * page / 1024; s.rssKiB != want {
		t.Errorf("rssKiB = %d, want %d", s.rssKiB, want)
	}
	if _, err := sampleTree(root, 999); err == nil {
		t.Error("sampleTree of a missing pid: no error")
	}
}

func TestRSSSplit(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "7")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	status := "Name:\tsquid\nVmRSS:\t  3000 kB\nRssAnon:\t  1000 kB\nRssFile:\t  1900 kB\nRssShmem:\t 100 kB\n"
	if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	anon, file, err := rssSplit(root, 7)
	if err != nil || anon != 1000 || file != 1900 {
		t.Fatalf("rssSplit = %d, %d, %v; want 1000, 1900", anon, file, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), []byte("Name:\tx\nRssAnon:\t1 MB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rssSplit(root, 7); err == nil {
		t.Error("rssSplit of a malformed status: no error")
	}
}

func TestSampleTreeReadsThisProcess(t *testing.T) {
	s, err := sampleTree("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.rssKiB <= 0 || s.procs < 1 {
		t.Fatalf("sample of this process = %+v, want RSS and at least one process", s)
	}
}

func TestFormatTable(t *testing.T) {
	med := map[key]measurement{}
	put := func(subject, metric string, v float64) {
		med[key{subject, metric}] = measurement{Subject: subject, Metric: metric, Value: v}
	}
	put(subjDirect, "bulk_down_1", 4000)
	put(subjStoregate, "bulk_down_1", 3000)
	put(subjTinyproxy, "bulk_down_1", 1500)
	put(subjSquid, "bulk_down_1", 1000)
	put(subjRelay, "bulk_down_1", 2400)
	put(subjStoregate, "bulk_up_1", 100)
	put(subjStoregate, "rate_tls", 200)
	put(subjInspect, "rate_tls", 100)
	put(subjSquid, "rate_tls", 50)
	put(subjStoregate, "rate_tls_errors", 0)
	put(subjSquid, "rate_tls_errors", 3)
	var buf bytes.Buffer
	formatTable(&buf, tableRows([]int{1000}), med)
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "metric") || !strings.Contains(lines[0], "sg/squid") || !strings.Contains(lines[0], "sg/relay") {
		t.Fatalf("header = %q", lines[0])
	}
	find := func(prefix string) []string {
		t.Helper()
		var got []string
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				got = append(got, l)
			}
		}
		return got
	}
	bulk := find("bulk down, 1 tunnel")
	if len(bulk) != 1 {
		t.Fatalf("bulk rows = %q\n%s", bulk, out)
	}
	for _, want := range []string{"4000", "3000", "1500", "1000", "2400", "0.75x", "2.00x", "3.00x", "1.25x", "higher"} {
		if !strings.Contains(bulk[0], want) {
			t.Errorf("bulk row %q lacks %q", bulk[0], want)
		}
	}
	off := find("CONNECT+TLS1.3+echo, inspect off")
	on := find("CONNECT+TLS1.3+echo, inspect on")
	if len(off) != 1 || !strings.Contains(off[0], "4.00x") {
		t.Errorf("inspect-off row = %q, want storegate 200 / squid 50 = 4.00x", off)
	}
	if len(on) != 1 || !strings.Contains(on[0], "2.00x") {
		t.Errorf("inspect-on row = %q, want storegate-inspect 100 / squid 50 = 2.00x", on)
	}
	errRows := find("  errors")
	if len(errRows) == 0 || strings.Contains(errRows[0], "x") {
		t.Errorf("error rows carry no ratios: %q", errRows)
	}
	if strings.Contains(out, "idle RSS") {
		t.Errorf("rows with no figures must be left out:\n%s", out)
	}
	up := find("bulk up, 1 tunnel")
	if len(up) != 1 {
		t.Fatalf("bulk up rows = %q\n%s", up, out)
	}
	if f := strings.Fields(strings.TrimPrefix(up[0], "bulk up, 1 tunnel(s), MB/s")); strings.Join(f, " ") != "- 100.0 - - - - - - - higher" {
		t.Errorf("row with only storegate = %q, want dashes for the missing figures and ratios", f)
	}
}

func TestNum(t *testing.T) {
	cases := map[float64]string{12345.6: "12346", 123.45: "123.5", 1.234: "1.23", 0.01234: "0.0123", 0: "0", math.NaN(): "-"}
	for v, want := range cases {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestMediansAndJSONLines(t *testing.T) {
	ms := []measurement{
		{Subject: "squid", Metric: "rate_plain", Value: 3, Rep: 1, Stat: "sample"},
		{Subject: "squid", Metric: "rate_plain", Value: 1, Rep: 2, Stat: "sample", Errors: 4},
		{Subject: "squid", Metric: "rate_plain", Value: 2, Rep: 3, Stat: "sample", Errors: 2},
		{Subject: "squid", Metric: "tunnel_kib_1000", Value: math.NaN(), Rep: 1, Stat: "sample"},
	}
	med := medians(ms)
	m := med[key{"squid", "rate_plain"}]
	if m.Value != 2 || m.Errors != 2 || m.Stat != "median" || m.Rep != 0 {
		t.Fatalf("median measurement = %+v", m)
	}
	var buf bytes.Buffer
	if err := writeJSONLines(&buf, append(ms, sortedMedians(med)...)); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	n := 0
	for sc.Scan() {
		var obj map[string]any
		if err := json.Unmarshal(sc.Bytes(), &obj); err != nil {
			t.Fatalf("line %d %q: %v", n, sc.Text(), err)
		}
		if _, ok := obj["value"]; !ok {
			t.Fatalf("line %d has no value: %q", n, sc.Text())
		}
		n++
	}
	if n != 6 {
		t.Fatalf("%d lines, want 6", n)
	}
}

func TestMeasurementNaNIsNull(t *testing.T) {
	b, err := json.Marshal(measurement{Metric: "x", Value: math.NaN()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"value":null`) {
		t.Fatalf("NaN marshals as %s, want null", b)
	}
}

func TestParseOptions(t *testing.T) {
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	o, err := parseOptions([]string{"-quick", "-rate-time", "2s"}, io.Discard, now)
	if err != nil {
		t.Fatal(err)
	}
	if o.reps != 1 || o.bulkTime != 500*time.Millisecond || o.rateTime != 2*time.Second || len(o.tunnels) != 1 || o.tunnels[0] != 1000 {
		t.Fatalf("quick options = %+v (explicit -rate-time must win)", o)
	}
	if o.outPath != filepath.Join("build", "out", "bench-20261125T090000Z.jsonl") {
		t.Errorf("outPath = %q", o.outPath)
	}
	full, err := parseOptions([]string{"-tunnels", "5000,1000,5000"}, io.Discard, now)
	if err != nil {
		t.Fatal(err)
	}
	if full.reps != 3 || len(full.tunnels) != 2 || full.tunnels[0] != 1000 || len(full.subjects) != len(defaultSubjects()) || len(full.subjects) != 8 {
		t.Fatalf("full options = %+v", full)
	}
	for _, bad := range [][]string{{"-reps", "0"}, {"-tunnels", "x"}, {"-subjects", "nginx"}, {"-clients", "0"}, {"extra"}} {
		if _, err := parseOptions(bad, io.Discard, now); err == nil {
			t.Errorf("parseOptions(%q): no error", bad)
		}
	}
}

func TestGeneratedConfigsAllowOnlyTheUpstreamPorts(t *testing.T) {
	ports := []int{4431, 4432}
	tp := tinyproxyConfig("/d", 3128, ports, 100)
	for _, want := range []string{"Port 3128\n", "Listen 127.0.0.1\n", "Allow 127.0.0.1\n", "ConnectPort 4431\n", "ConnectPort 4432\n", "MaxClients 100\n", `LogFile "/d/tinyproxy.log"`} {
		if !strings.Contains(tp, want) {
			t.Errorf("tinyproxy config lacks %q:\n%s", want, tp)
		}
	}
	sq := squidConfig("/d", 3129, ports, 2000)
	for _, want := range []string{"http_port 127.0.0.1:3129\n", "acl bench_ports port 4431 4432\n", "http_access deny !CONNECT\n", "http_access deny CONNECT !bench_ports\n", "http_access deny all\n", "dns_nameservers 127.0.0.1\n", "access_log stdio:/d/access.log\n"} {
		if !strings.Contains(sq, want) {
			t.Errorf("squid config lacks %q:\n%s", want, sq)
		}
	}
	sg := storegatePolicy("/d", 8080, 8081, ports, true, 5000)
	for _, want := range []string{"limits: {max_connections: 5000, max_connections_per_client: 5000}\n", `spool: {dir: "/d/spool"}`, "version: 1\n", "listen_address: 127.0.0.1\n", "listen_port: 8080\n", "admin_address: 127.0.0.1:8081\n", "allowed_hosts: [127.0.0.1]\n", "allowed_ports: [4431, 4432]\n", "tls: {inspect: true}\n"} {
		if !strings.Contains(sg, want) {
			t.Errorf("storegate policy lacks %q:\n%s", want, sg)
		}
	}
}

// TestStoregatePolicyIsValid parses the generated policy with storegate's own
// strict loader, both inspection settings.
func TestStoregatePolicyIsValid(t *testing.T) {
	for _, inspect := range []bool{false, true} {
		f, err := policy.Parse([]byte(storegatePolicy(t.TempDir(), 3128, 3129, []int{4431, 4432}, inspect, 20000)), "bench.yaml")
		if err != nil {
			t.Fatalf("inspect=%t: %v", inspect, err)
		}
		if got := policy.On(f.TLS.Inspect, !inspect); got != inspect {
			t.Errorf("tls.inspect = %t, want %t", got, inspect)
		}
		if f.Limits.MaxConnectionsClient != 20000 || f.ListenPort != 3128 {
			t.Errorf("limits or port not taken: %+v, port %d", f.Limits, f.ListenPort)
		}
	}
}

func TestStartReportsWhyASubjectIsSkipped(t *testing.T) {
	l := &launcher{dir: t.TempDir(), upstreamPorts: []int{1}, probeTarget: "127.0.0.1:1",
		bins: map[string]string{subjTinyproxy: "/nonexistent/tinyproxy", subjStoregate: "/bin/false"}, readyTimeout: 5 * time.Second}
	s := l.start(context.Background(), subjTinyproxy, 1)
	if !strings.Contains(s.skip, "not found") || s.pid() != 0 {
		t.Errorf("missing binary: skip = %q, pid %d", s.skip, s.pid())
	}
	s = l.start(context.Background(), subjStoregate, 1)
	if !strings.Contains(s.skip, "did not start") || s.pid() != 0 {
		t.Errorf("exiting binary: skip = %q, pid %d", s.skip, s.pid())
	}
}

// connectProxy is a minimal CONNECT proxy inside the test process, so the
// proxy-only measurements (CPU, RSS, idle tunnels) have a process to read.
func connectProxy(t *testing.T) string {
	t.Helper()
	return connectProxyOn(t, nil)
}

// connectProxyOn is connectProxy on a listener that wrap (when set) turns
// into another, such as a TLS listener.
func connectProxyOn(t *testing.T, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		ln = wrap(ln)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				f := strings.Fields(line)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if l == "\r\n" {
						break
					}
				}
				if len(f) < 2 || f[0] != "CONNECT" {
					io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
					return
				}
				up, err := net.Dial("tcp", f[1])
				if err != nil {
					io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
					return
				}
				mu.Lock()
				conns = append(conns, up)
				mu.Unlock()
				defer up.Close()
				io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			})
		}
	})
	return ln.Addr().String()
}

func testBench(t *testing.T) *bench {
	t.Helper()
	up, err := startUpstream()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.close(5 * time.Second) })
	return &bench{up: up, procRoot: "/proc", progress: io.Discard, runID: "test", now: time.Now, directTLS: directTLS(up.clientTLS), opts: options{
		reps: 1, warmup: 20 * time.Millisecond, bulkTime: 100 * time.Millisecond, rateTime: 150 * time.Millisecond,
		openTime: 10 * time.Second, clients: 4, maxRoundTrips: 2000, tunnels: []int{20, 50}, maxTunnels: 1000,
	}}
}

func values(ms []measurement) map[string]measurement {
	out := map[string]measurement{}
	for _, m := range ms {
		out[m.Metric] = m
	}
	return out
}

// TestQuickSmokeDirect runs the bulk and rate measurements against the
// direct connection with short windows.
func TestQuickSmokeDirect(t *testing.T) {
	b := testBench(t)
	s := &subject{name: subjDirect}
	ctx := context.Background()
	var ms []measurement
	for _, upload := range []bool{false, true} {
		ms = append(ms, b.bulk(ctx, s, 1, 1, upload, legPlain)...)
		ms = append(ms, b.bulk(ctx, s, 1, 2, upload, legPlain)...)
	}
	ms = append(ms, b.bulk(ctx, s, 1, 1, false, legTLSInside)...)
	ms = append(ms, b.bulk(ctx, s, 1, 1, false, legTLSProxy)...)
	ms = append(ms, b.bulk(ctx, s, 1, 1, true, legTLSProxy)...)
	ms = append(ms, b.rate(ctx, s, 1, legPlain)...)
	ms = append(ms, b.rate(ctx, s, 1, legTLSInside)...)
	ms = append(ms, b.rate(ctx, s, 1, legTLSProxy)...)
	v := values(ms)
	for _, metric := range []string{"bulk_down_1", "bulk_up_1", "bulk_down_2", "bulk_up_2", "bulk_tls_down_1", "bulk_viatls_down_1", "bulk_viatls_up_1", "rate_plain", "rate_tls", "rate_tls_p99", "rate_viatls"} {
		m, ok := v[metric]
		if !ok || !(m.Value > 0) || m.Errors != 0 {
			t.Errorf("%s = %+v, want a positive figure and no errors", metric, m)
		}
	}
	if v["rate_plain_p50"].Value > v["rate_plain_p99"].Value {
		t.Errorf("p50 %v > p99 %v", v["rate_plain_p50"].Value, v["rate_plain_p99"].Value)
	}
	if _, ok := v["cpu_gb_down_1"]; ok {
		t.Error("direct has no proxy process, yet a CPU figure was reported")
	}
	var buf bytes.Buffer
	formatTable(&buf, tableRows(nil), medians(ms))
	if !strings.Contains(buf.String(), "bulk up, 1 tunnel") {
		t.Errorf("table:\n%s", buf.String())
	}
}

// TestProxyMeasurementsThroughAProxy drives the proxy-only figures through
// a CONNECT proxy in this process.
func TestProxyMeasurementsThroughAProxy(t *testing.T) {
	b := testBench(t)
	s := &subject{name: subjSquid, proxy: connectProxy(t), procID: os.Getpid()}
	ctx := context.Background()
	var ms []measurement
	ms = append(ms, b.idle(s, 1)...)
	ms = append(ms, b.bulk(ctx, s, 1, 1, false, legPlain)...)
	ms = append(ms, b.bulk(ctx, s, 1, 1, true, legTLSInside)...)
	ms = append(ms, b.rate(ctx, s, 1, legTLSInside)...)
	ms = append(ms, b.tunnels(ctx, s, 1)...)
	v := values(ms)
	for _, metric := range []string{"rss_idle", "rss_idle_anon", "rss_idle_file", "fds_idle", "bulk_down_1", "bulk_tls_up_1", "rate_tls", "rss_20", "rss_50"} {
		if m, ok := v[metric]; !ok || !(m.Value > 0) || m.Errors != 0 {
			t.Errorf("%s = %+v, want a positive figure and no errors", metric, m)
		}
	}
	for _, metric := range []string{"cpu_gb_down_1", "rate_tls_cpu_1k", "tunnel_kib_50"} {
		if _, ok := v[metric]; !ok {
			t.Errorf("%s missing from %v", metric, v)
		}
	}
	for _, metric := range []string{"tunnel_errors_20", "tunnel_errors_50"} {
		if m := v[metric]; m.Value != 0 {
			t.Errorf("%s = %v, want 0", metric, m.Value)
		}
	}
	if n := b.up.echoConns.Load(); n != 0 {
		t.Errorf("%d echo connections still open after the tunnel test", n)
	}
	s.eventLog = filepath.Join(t.TempDir(), "events.log")
	if err := os.WriteFile(s.eventLog, make([]byte, 100*s.tunnels.Load()), 0o644); err != nil {
		t.Fatal(err)
	}
	if lc := values(b.logCost(s, 1))["log_bytes_per_tunnel"]; lc.Value != 100 {
		t.Errorf("log bytes per tunnel = %v, want 100 (tunnels counted: %d)", lc.Value, s.tunnels.Load())
	}
	// Through an inspecting proxy the idle tunnels carry a finished TLS handshake.
	insp := &subject{name: subjInspect, proxy: s.proxy, procID: os.Getpid(), inspect: true}
	iv := values(b.tunnels(ctx, insp, 1))
	if iv["tunnel_errors_50"].Value != 0 || !(iv["rss_50"].Value > 0) {
		t.Errorf("TLS idle tunnels = %+v", iv)
	}
	// Nothing listening: every round trip is an error, and each is counted.
	b.opts.rateTime = 50 * time.Millisecond
	bad := &subject{name: subjTinyproxy, proxy: "127.0.0.1:1"}
	r := values(b.rate(ctx, bad, 1, legPlain))
	if r["rate_plain_errors"].Value == 0 || r["rate_plain"].Value != 0 {
		t.Errorf("rate through a closed port = %+v, want errors and no round trips", r)
	}
}

// TestOverTLSToTheProxy drives the tests over TLS to the proxy through a
// CONNECT proxy on a TLS listener in this process, whose certificate and key
// are the files writeProxyCert wrote for storegate and squid.
func TestOverTLSToTheProxy(t *testing.T) {
	b := testBench(t)
	certFile, keyFile, client, err := writeProxyCert(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("the written certificate and key do not load: %v", err)
	}
	srv := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}
	addr := connectProxyOn(t, func(ln net.Listener) net.Listener { return tls.NewListener(ln, srv) })
	b.proxyTLS = client
	s := &subject{name: subjSquidTLS, proxy: "127.0.0.1:1", tlsProxy: addr, procID: os.Getpid()}
	ctx := context.Background()
	var ms []measurement
	ms = append(ms, b.bulk(ctx, s, 1, 1, false, legTLSProxy)...)
	ms = append(ms, b.bulk(ctx, s, 1, 1, true, legTLSProxy)...)
	ms = append(ms, b.rate(ctx, s, 1, legTLSProxy)...)
	v := values(ms)
	for _, metric := range []string{"bulk_viatls_down_1", "bulk_viatls_up_1", "rate_viatls", "rate_viatls_p50"} {
		if m, ok := v[metric]; !ok || !(m.Value > 0) || m.Errors != 0 {
			t.Errorf("%s = %+v, want a positive figure and no errors", metric, m)
		}
	}
	for _, metric := range []string{"cpu_gb_viatls_down_1", "cpu_gb_viatls_up_1", "rate_viatls_cpu_1k"} {
		if _, ok := v[metric]; !ok {
			t.Errorf("%s missing from %v", metric, v)
		}
	}
	// The tunnel is the TLS session with the proxy, keyed as squid's
	// GnuTLS can key it.
	c, _, err := dialTunnel(ctx, hop{addr, client}, b.echoTarget(), time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		t.Fatalf("tunnel over a TLS hop is a %T", c)
	}
	if st := tc.ConnectionState(); st.CurveID != tls.X25519 || st.Version != tls.VersionTLS13 {
		t.Errorf("key exchange %v, version %x; want X25519 in TLS 1.3", st.CurveID, st.Version)
	}
	c.Close()
	// A plain CONNECT to the TLS listener fails, so the TLS hop is what was measured.
	if err := roundTrip(ctx, hop{addr: addr}, b.echoTarget(), nil, time.Now().Add(2*time.Second), nil); err == nil {
		t.Error("a plain CONNECT to the TLS listener went through")
	}
}

// TestConfigureTLSListeners checks that only the -tls subjects get a TLS
// listener, that storegate's policy with it passes storegate's own loader,
// and that squid's names the same certificate.
func TestConfigureTLSListeners(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _, err := writeProxyCert(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l := &launcher{dir: dir, upstreamPorts: []int{4431}, maxTunnels: 100, proxyCert: certFile, proxyKey: keyFile}
	ports := []int{3128, 3129, 3130}
	for _, name := range []string{subjStoregate, subjInspect, subjStoregateTLS, subjSquid, subjSquidTLS, subjTinyproxy, subjRelay} {
		s := &subject{name: name, inspect: name == subjInspect}
		_, conf, _, err := l.configure(s, dir, ports)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		withTLS := name == subjStoregateTLS || name == subjSquidTLS
		if got := s.tlsProxy != ""; got != withTLS {
			t.Errorf("%s: TLS listener %q, want one: %t", name, s.tlsProxy, withTLS)
		}
		if mentions := strings.Contains(conf, certFile); mentions != withTLS {
			t.Errorf("%s: config names the certificate: %t, want %t:\n%s", name, mentions, withTLS, conf)
		}
		switch name {
		case subjStoregateTLS:
			f, err := policy.Parse([]byte(conf), "bench.yaml")
			if err != nil {
				t.Fatalf("storegate-tls policy: %v", err)
			}
			if tl := f.TLSListener; tl.Port != 3130 || tl.CertFile != certFile || tl.KeyFile != keyFile || policy.On(f.TLS.Inspect, true) {
				t.Errorf("storegate-tls: listener %+v, inspect %v", tl, f.TLS.Inspect)
			}
		case subjSquidTLS:
			want := "https_port 127.0.0.1:3130 tls-cert=" + certFile + " tls-key=" + keyFile + "\n"
			if !strings.Contains(conf, want) {
				t.Errorf("squid-tls config lacks %q:\n%s", want, conf)
			}
		}
	}
	l.proxyCert = ""
	if _, _, _, err := l.configure(&subject{name: subjSquidTLS}, dir, ports); err == nil {
		t.Error("squid-tls configured without a certificate")
	}
}

func TestTargets(t *testing.T) {
	med := map[key]measurement{}
	put := func(subject, metric string, v float64) { med[key{subject, metric}] = measurement{Value: v} }
	put(subjDirect, "bulk_down_1", 1000)
	put(subjStoregate, "bulk_down_1", 900) // 0.9x: met
	put(subjDirect, "bulk_up_1", 1000)
	put(subjStoregate, "bulk_up_1", 700) // 0.7x: missed
	put(subjStoregate, "cpu_gb_down_1", 0.1)
	put(subjStoregate, "rate_plain", 1000)
	put(subjTinyproxy, "rate_plain", 500)
	put(subjSquid, "rate_plain", 900) // 1.11x: below 1.25x
	put(subjStoregate, "rate_plain_p99", 2)
	put(subjTinyproxy, "rate_plain_p99", 3)
	put(subjSquid, "rate_plain_p99", 1)
	put(subjStoregate, "tunnel_kib_1000", 11)
	got := map[string]target{}
	for _, tg := range targets(med, []int{1000}) {
		got[tg.goal] = tg
	}
	want := map[string]string{
		"single-tunnel download >= 0.8x direct":         "met",
		"single-tunnel upload >= 0.8x direct":           "MISSED",
		"proxy CPU per GB <= 0.2 s (down, 1 tunnels)":   "met",
		"proxy CPU per GB <= 0.2 s (up, 1 tunnels)":     "n/a",
		"CONNECT rate >= 1.1x tinyproxy":                "met",
		"CONNECT rate >= 1.25x squid":                   "MISSED",
		"CONNECT-to-200 p99 below both peers":           "MISSED",
		"RSS per open idle tunnel <= 12 KiB (@1000)":    "met",
		"10,000 open tunnels held without errors":       "n/a",
		"events on: CONNECT rate not below either peer": "met",
		"idle RSS <= 8 MiB":                             "n/a",
	}
	for goal, verdict := range want {
		tg, ok := got[goal]
		if !ok {
			t.Errorf("goal %q not listed", goal)
			continue
		}
		if tg.met != verdict {
			t.Errorf("%q: %s (%s), want %s", goal, tg.met, tg.measured, verdict)
		}
	}
	var buf bytes.Buffer
	formatTargets(&buf, targets(med, []int{1000}))
	if !strings.Contains(buf.String(), "MISSED") || !strings.Contains(buf.String(), "RLIMIT_NOFILE") {
		t.Errorf("targets output:\n%s", buf.String())
	}
}

func TestCompareReadsMedianLines(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v float64) string {
		t.Helper()
		ms := []measurement{
			{Subject: "storegate", Metric: "rate_plain", Value: v, Unit: "conn/s", Stat: "sample", Rep: 1},
			{Subject: "storegate", Metric: "rate_plain", Value: v, Unit: "conn/s", Stat: "median"},
			{Subject: "squid", Metric: "tunnel_kib_1000", Value: math.NaN(), Unit: "KiB", Stat: "median"},
		}
		p := filepath.Join(dir, name)
		if err := writeResults(p, map[string]string{"machine": "test"}, ms); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old, cur := write("old.jsonl", 1000), write("new.jsonl", 1500)
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"compare", old, cur}, &out, &errOut, time.Now); code != 0 {
		t.Fatalf("compare exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "rate_plain") || !strings.Contains(out.String(), "1.50x") {
		t.Errorf("compare output:\n%s", out.String())
	}
	if strings.Contains(out.String(), "tunnel_kib_1000") {
		t.Errorf("a median without a value is left out:\n%s", out.String())
	}
	if code := run(context.Background(), []string{"compare", old}, io.Discard, io.Discard, time.Now); code != 2 {
		t.Errorf("compare with one file: exit %d, want 2", code)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run(context.Background(), []string{"compare", old, bad}, io.Discard, io.Discard, time.Now); code != 1 {
		t.Errorf("compare with a broken file: exit %d, want 1", code)
	}
}
