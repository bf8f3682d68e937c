// Command soak runs storegate under sustained, mixed load on loopback and
// checks that it gives back what it takes: CONNECT round trips with TLS
// inside (some moving 64 KiB, some half-closing first, a third of them on
// the TLS listener), spool submissions to a receiver that
// fails every other 10 s, and a policy rewrite every 2 s. It samples the
// gateway's own /metrics (descriptors, goroutines, RSS, connections, spool
// depth) during the run and after the load stops, and exits 1 when a check
// fails: an error, a connection or descriptor not given back, a spool not
// drained, or memory still growing.
//
//	soak [-storegate bin/storegate] [-duration 10m] [-clients 16]
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	bin := flag.String("storegate", "bin/storegate", "storegate binary")
	dur := flag.Duration("duration", 10*time.Minute, "how long the load runs")
	clients := flag.Int("clients", 16, "concurrent CONNECT clients")
	flag.Parse()
	if *dur < 10*time.Second || *clients < 1 {
		fmt.Fprintln(os.Stderr, "soak: -duration must be at least 10s (the policy is rewritten every 2 s, the receiver fails every other 10 s) and -clients at least 1")
		os.Exit(2)
	}
	if err := run(*bin, *dur, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

// sample is one reading of the gateway's /metrics.
type sample struct {
	tag                      string
	fds, goroutines, rssMiB  float64
	conns, tunnels           float64
	spoolDepth, delivered    float64
	reloadedAt, reloadErrors float64
}

var series = regexp.MustCompile(`(?m)^([a-z_]+) (\S+)$`)

func scrape(admin string) (sample, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return sample{}, err
	}
	v := map[string]float64{}
	for _, m := range series.FindAllSubmatch(b, -1) {
		f, err := strconv.ParseFloat(string(m[2]), 64)
		if err == nil {
			v[string(m[1])] = f
		}
	}
	if _, ok := v["process_open_fds"]; !ok {
		return sample{}, errors.New("/metrics has no process_open_fds (storegate too old?)")
	}
	return sample{
		fds: v["process_open_fds"], goroutines: v["go_goroutines"], rssMiB: v["process_resident_memory_bytes"] / (1 << 20),
		conns: v["storegate_active_client_connections"], tunnels: v["storegate_tunnels_total"],
		spoolDepth: v["storegate_spool_depth"], delivered: v["storegate_spool_delivered_total"],
		reloadedAt: v["storegate_policy_last_reload_success_timestamp_seconds"], reloadErrors: v["storegate_policy_reload_errors_total"],
	}, nil
}

func (s sample) String() string {
	return fmt.Sprintf("%-8s fds %4.0f  goroutines %4.0f  rss %6.1f MiB  conns %4.0f  tunnels %9.0f  spool depth %5.0f  delivered %7.0f",
		s.tag, s.fds, s.goroutines, s.rssMiB, s.conns, s.tunnels, s.spoolDepth, s.delivered)
}

// load counts what the clients saw.
type load struct {
	ok, errs  atomic.Int64
	submitted atomic.Int64
	lastErr   atomic.Value // string
}

func (l *load) fail(err error) {
	l.errs.Add(1)
	l.lastErr.Store(err.Error())
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// echoServer is a TLS server that copies each connection back to itself
// until EOF. The tunnels carry TLS because the gateway inspects handshakes by
// default.
func echoServer(cfg *tls.Config) (int, func(), error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return 0, nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, func() { ln.Close() }, nil
}

func run(bin string, dur time.Duration, clients int) error {
	dir, err := os.MkdirTemp("", "storegate-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var receiverUp atomic.Bool
	receiverUp.Store(true)
	recv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if !receiverUp.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer recv.Close()
	// The echo server uses the receiver's certificate (valid for 127.0.0.1).
	echoPort, stopEcho, err := echoServer(&tls.Config{Certificates: recv.TLS.Certificates})
	if err != nil {
		return err
	}
	defer stopEcho()
	roots := x509.NewCertPool()
	roots.AddCert(recv.Certificate())
	clientTLS := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	// The TLS listener, where a regional storegate takes its stores, uses
	// that certificate too.
	certFile, keyFile := filepath.Join(dir, "listener.pem"), filepath.Join(dir, "listener.key")
	keyDER, err := x509.MarshalPKCS8PrivateKey(recv.TLS.Certificates[0].PrivateKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: recv.Certificate().Raw}), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: recv.Certificate().Raw}), 0o644); err != nil {
		return err
	}
	_, rport, _ := net.SplitHostPort(recv.Listener.Addr().String())
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	proxy, admin := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	tlsProxy := fmt.Sprintf("127.0.0.1:%d", ports[2])
	policyPath := filepath.Join(dir, "policy.yaml")
	writePolicy := func(gen int) error {
		// Each generation names another (unused) host, so every rewrite is
		// a real change that the gateway reloads.
		p := fmt.Sprintf("version: 1\nlisten_address: 127.0.0.1\nlisten_port: %d\nadmin_address: %s\n"+
			"allowed_hosts: [127.0.0.1, gen%d.soak.example]\nallowed_ports: [%d, %s]\n"+
			"tls: {ca_file: %q}\ntls_listener: {port: %d, cert_file: %q, key_file: %q}\nspool: {dir: %q}\n",
			ports[0], admin, gen, echoPort, rport, ca, ports[2], certFile, keyFile, filepath.Join(dir, "spool"))
		tmp := policyPath + ".tmp"
		if err := os.WriteFile(tmp, []byte(p), 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, policyPath)
	}
	if err := writePolicy(0); err != nil {
		return err
	}
	events, err := os.Create(filepath.Join(dir, "events.log"))
	if err != nil {
		return err
	}
	defer events.Close()
	cmd := exec.Command(bin, "run", "--policy", policyPath)
	cmd.Stderr = events
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	}()
	var start sample
	for i := 0; ; i++ {
		if start, err = scrape(admin); err == nil {
			break
		}
		if i >= 200 {
			return fmt.Errorf("storegate did not serve /metrics on %s: %v", admin, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	start.tag = "start"
	fmt.Println(start)

	l := &load{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				via := proxy
				if w%3 == 2 {
					via = "tls://" + tlsProxy
				}
				if err := roundTrip(via, echoPort, clientTLS, w, n); err != nil {
					l.fail(err)
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	wg.Add(2)
	go func() { defer wg.Done(); submit(proxy, rport, l, stop) }()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for gen := 1; ; gen++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := writePolicy(gen); err != nil {
				l.fail(err)
			}
			if gen%5 == 0 { // 10 s up, 10 s down
				receiverUp.Store(!receiverUp.Load())
			}
		}
	}()

	var during []sample
	began := time.Now()
	every := max(dur/6, time.Second)
	for time.Since(began) < dur {
		time.Sleep(min(every, dur-time.Since(began)))
		s, err := scrape(admin)
		if err != nil {
			l.fail(fmt.Errorf("scrape during load: %v", err))
			continue
		}
		s.tag = "t+" + time.Since(began).Round(time.Second).String()
		fmt.Println(s)
		during = append(during, s)
	}
	close(stop)
	wg.Wait()
	receiverUp.Store(true)

	// Quiet: wait (bounded) for connections to close and the spool to drain.
	// A message that met the flapping receiver several times in a row waits
	// out its retry backoff, which reaches 5 minutes (spool MaxBackoff), so
	// the spool gets up to 6.
	var end sample
	quietUntil := time.Now().Add(6 * time.Minute)
	for i := 0; time.Now().Before(quietUntil); i++ {
		time.Sleep(500 * time.Millisecond)
		if end, err = scrape(admin); err != nil {
			return fmt.Errorf("scrape after the load: %v", err)
		}
		if end.conns == 0 && end.spoolDepth == 0 && i >= 10 {
			break
		}
		if i == 120 {
			fmt.Printf("waiting for the spool to drain (%.0f messages; a retry backoff may be up to 5 minutes)\n", end.spoolDepth)
		}
	}
	end.tag = "quiet"
	fmt.Println(end)
	lastErr, _ := l.lastErr.Load().(string)
	fmt.Printf("round trips %d, errors %d, spool submissions %d\n", l.ok.Load(), l.errs.Load(), l.submitted.Load())
	problems := verdict(start, during, end, l.errs.Load(), lastErr)
	for _, p := range problems {
		fmt.Println("FAIL", p)
	}
	if len(problems) > 0 {
		printErrorEvents(events.Name(), 30)
		return fmt.Errorf("%d check(s) failed", len(problems))
	}
	fmt.Println("soak: ok")
	return nil
}

// verdict lists what a run did wrong. Slack: after the load, the spool's
// client may keep two idle connections to the receiver (two descriptors and
// four goroutines), and the scrape's own connection is open.
func verdict(start sample, during []sample, end sample, errs int64, lastErr string) []string {
	var p []string
	if errs > 0 {
		p = append(p, fmt.Sprintf("%d client errors (last: %s)", errs, lastErr))
	}
	if len(during) == 0 {
		return append(p, "no sample during the load")
	}
	if end.conns != 0 {
		p = append(p, fmt.Sprintf("%.0f client connections still open after the load", end.conns))
	}
	if end.spoolDepth != 0 {
		p = append(p, fmt.Sprintf("spool not drained: %.0f messages still queued", end.spoolDepth))
	}
	if end.fds > start.fds+8 {
		p = append(p, fmt.Sprintf("descriptors not given back: %.0f at start, %.0f after the load", start.fds, end.fds))
	}
	if end.goroutines > start.goroutines+10 {
		p = append(p, fmt.Sprintf("goroutines not given back: %.0f at start, %.0f after the load", start.goroutines, end.goroutines))
	}
	if end.delivered == 0 {
		p = append(p, "the spool delivered nothing")
	}
	if end.reloadedAt <= start.reloadedAt || end.reloadErrors > start.reloadErrors {
		p = append(p, fmt.Sprintf("policy rewrites not reloaded cleanly (reload errors %.0f)", end.reloadErrors-start.reloadErrors))
	}
	first, last := during[0], during[len(during)-1]
	if len(during) >= 3 && last.rssMiB > 2*first.rssMiB+4 {
		p = append(p, fmt.Sprintf("memory kept growing under load: %.1f MiB at %s, %.1f MiB at %s", first.rssMiB, first.tag, last.rssMiB, last.tag))
	}
	return p
}

// roundTrip opens a tunnel to the echo server and uses it over TLS: a small
// echo, or 64 KiB for every fourth client, and a close_notify and half-close
// first for every fifth. A proxy address "tls://host:port" is the TLS
// listener: the tunnel's TLS then runs inside the listener's.
func roundTrip(proxy string, echoPort int, cfg *tls.Config, w, n int) error {
	var c net.Conn
	var err error
	d := &net.Dialer{Timeout: 5 * time.Second}
	if addr, ok := strings.CutPrefix(proxy, "tls://"); ok {
		c, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		c, err = d.Dial("tcp", proxy)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(c, "CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", echoPort, echoPort)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("CONNECT answered %s", resp.Status)
	}
	if br.Buffered() > 0 {
		return errors.New("bytes after the 200 before the client spoke")
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS through the tunnel: %v", err)
	}
	size := 4
	if w%4 == 0 {
		size = 64 << 10
	}
	out := make([]byte, size)
	for i := range out {
		out[i] = byte(n + i)
	}
	go tc.Write(out)
	in := make([]byte, size)
	if _, err := io.ReadFull(tc, in); err != nil {
		return fmt.Errorf("echo: %v", err)
	}
	if string(in) != string(out) {
		return errors.New("echo came back different")
	}
	if w%5 == 0 {
		if err := tc.CloseWrite(); err != nil {
			return err
		}
		if _, err := tc.Read(in[:1]); err != io.EOF {
			return fmt.Errorf("after a half-close: %v, want EOF", err)
		}
	}
	return nil
}

// submit posts a spool message every 50 ms until stop.
func submit(proxy, rport string, l *load, stop <-chan struct{}) {
	c := http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+proxy+"/spool/v1/messages", strings.NewReader(`{"n":`+strconv.Itoa(i)+`}`))
		req.Header.Set("Storegate-Destination", "https://127.0.0.1:"+rport+"/ingest")
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			l.fail(fmt.Errorf("spool submit: %v", err))
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			l.fail(fmt.Errorf("spool submit answered %s", resp.Status))
			continue
		}
		l.submitted.Add(1)
	}
}

// printErrorEvents prints the last max error and warning events of the run
// (the temporary directory goes with it).
func printErrorEvents(path string, max int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"warn`) {
			lines = append(lines, l)
		}
	}
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	fmt.Printf("last %d error/warning events of storegate:\n", len(lines))
	for _, l := range lines {
		fmt.Println("  " + l)
	}
}
