package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Subject names, in table order.
const (
	subjDirect    = "direct"
	subjStoregate = "storegate"         // TLS inspection off
	subjInspect   = "storegate-inspect" // TLS inspection on
	subjTinyproxy = "tinyproxy"
	subjSquid     = "squid"
	subjRelay     = "go-relay" // the floor: a minimal Go CONNECT relay (build/bench/relay)
	// The same binaries with a TLS listener beside the plain one, for the
	// tests where the client speaks TLS to the proxy (a store to its regional
	// storegate). Separate subjects, so that the listener's certificate does
	// not change the others' idle figures.
	subjStoregateTLS = "storegate-tls" // tls_listener on, TLS inspection off
	subjSquidTLS     = "squid-tls"     // https_port beside http_port
)

// subject is one party under test: a proxy process we started (or the
// direct connection, which has no process).
type subject struct {
	name     string
	proxy    string // proxy listen address; "" for direct
	tlsProxy string // its TLS listener (storegate-tls, squid-tls, which take only the tests over TLS)
	inspect  bool   // storegate with TLS inspection: only TLS goes through it
	skip     string // why it is not measured; "" when it is

	eventLog string       // the file its per-connection log or events go to
	tunnels  atomic.Int64 // tunnels opened through it, for log bytes per tunnel
	idleFDs  int          // descriptors it held idle, for the leak check

	procID int           // the proxy's process id; 0 for direct or when skipped
	cmd    *exec.Cmd     // set when we started the process
	done   chan struct{} // closed once the process has exited
	logs   []string      // files worth showing when it fails
}

// pid is the proxy's process id, 0 for direct or a skipped subject.
func (s *subject) pid() int { return s.procID }

// exited reports whether the process has ended.
func (s *subject) exited() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop ends the process group we started (SIGTERM, then SIGKILL after grace).
func (s *subject) stop(grace time.Duration) {
	if s.cmd == nil || s.exited() {
		return
	}
	pgid := s.pid() // started with Setpgid, so the group id is its pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(grace):
	}
}

// launcher starts subjects with generated configuration in dir.
type launcher struct {
	dir           string
	upstreamPorts []int
	probeTarget   string      // TLS echo address used to check readiness
	probeTLS      *tls.Config // client configuration for the probe
	bins          map[string]string
	maxTunnels    int // sizes MaxClients and file descriptor settings
	readyTimeout  time.Duration
	// The TLS listeners' certificate and key (PEM files, readable by squid's
	// user) and the client configuration that trusts it.
	proxyCert, proxyKey string
	proxyTLS            *tls.Config
}

// start launches the named subject and waits until a CONNECT through it
// completes a TLS round trip. A subject that cannot run comes back with skip
// set and the reason, never an error: the other columns still get measured.
func (l *launcher) start(ctx context.Context, name string, rep int) *subject {
	s := &subject{name: name, inspect: name == subjInspect}
	if name == subjDirect {
		return s
	}
	bin := l.bins[name]
	if bin == "" {
		s.skip = "no binary given (did make build fail?)"
		return s
	}
	if _, err := os.Stat(bin); err != nil {
		s.skip = fmt.Sprintf("%s not found (%v)", bin, err)
		return s
	}
	dir := filepath.Join(l.dir, fmt.Sprintf("%s-%d", name, rep))
	if err := os.MkdirAll(dir, 0o777); err != nil {
		s.skip = err.Error()
		return s
	}
	// squid drops to its own user and must write its logs here.
	if err := os.Chmod(dir, 0o777); err != nil {
		s.skip = err.Error()
		return s
	}
	ports, err := freePorts(3)
	if err != nil {
		s.skip = err.Error()
		return s
	}
	confName, conf, args, err := l.configure(s, dir, ports)
	if err != nil {
		s.skip = err.Error()
		return s
	}
	if err := os.WriteFile(filepath.Join(dir, confName), []byte(conf), 0o644); err != nil {
		s.skip = err.Error()
		return s
	}
	// Events and logs go to files, not /dev/null, so their cost is measured.
	out, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		s.skip = err.Error()
		return s
	}
	s.logs = append([]string{out.Name()}, s.logs...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		s.skip = err.Error()
		return s
	}
	s.cmd, s.procID = cmd, cmd.Process.Pid
	s.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(s.done)
	}()
	if err := l.waitReady(ctx, s); err != nil {
		s.stop(3 * time.Second)
		s.skip = fmt.Sprintf("did not start: %v%s", err, s.logTail(6))
		s.cmd, s.procID = nil, 0
		return s
	}
	return s
}

// configure sets the subject's listen addresses (ports: plain listener,
// admin, TLS listener) and returns its configuration file's name and text and
// its arguments. Every file it names lives in dir.
func (l *launcher) configure(s *subject, dir string, ports []int) (confName, conf string, args []string, err error) {
	s.proxy = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	if s.name == subjStoregateTLS || s.name == subjSquidTLS {
		if l.proxyCert == "" {
			return "", "", nil, errors.New("no certificate for the TLS listener")
		}
		s.tlsProxy = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	}
	switch s.name {
	case subjStoregate, subjInspect, subjStoregateTLS:
		confName = "policy.yaml"
		conf = storegatePolicy(dir, ports[0], ports[1], l.upstreamPorts, s.inspect, l.maxTunnels+256)
		if s.tlsProxy != "" {
			conf += fmt.Sprintf("tls_listener: {port: %d, cert_file: %q, key_file: %q}\n", ports[2], l.proxyCert, l.proxyKey)
		}
		args = []string{"run", "--policy", filepath.Join(dir, confName)}
		s.eventLog = filepath.Join(dir, "stderr.log")
	case subjRelay:
		// It reads only listen_port from storegate's policy.
		confName = "policy.yaml"
		conf = storegatePolicy(dir, ports[0], ports[1], l.upstreamPorts, false, l.maxTunnels+256)
		args = []string{"--policy", filepath.Join(dir, confName)}
	case subjTinyproxy:
		confName = "tinyproxy.conf"
		conf = tinyproxyConfig(dir, ports[0], l.upstreamPorts, l.maxTunnels+64)
		args = []string{"-d", "-c", filepath.Join(dir, confName)}
		s.logs = append(s.logs, filepath.Join(dir, "tinyproxy.log"))
		s.eventLog = filepath.Join(dir, "tinyproxy.log")
	case subjSquid, subjSquidTLS:
		confName = "squid.conf"
		conf = squidConfig(dir, ports[0], l.upstreamPorts, 2*l.maxTunnels+256)
		if s.tlsProxy != "" {
			conf += fmt.Sprintf("https_port 127.0.0.1:%d tls-cert=%s tls-key=%s\n", ports[2], l.proxyCert, l.proxyKey)
		}
		args = []string{"-N", "-d", "1", "-f", filepath.Join(dir, confName)}
		s.logs = append(s.logs, filepath.Join(dir, "cache.log"))
		s.eventLog = filepath.Join(dir, "access.log")
	default:
		return "", "", nil, errors.New("unknown subject")
	}
	return confName, conf, args, nil
}

// waitReady polls with a deadline until a TLS round trip through the proxy
// works or the process exits.
func (l *launcher) waitReady(ctx context.Context, s *subject) error {
	deadline := time.Now().Add(l.readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		if s.exited() {
			return fmt.Errorf("exited (%s)", s.cmd.ProcessState)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = roundTrip(ctx, hop{addr: s.proxy}, l.probeTarget, l.probeTLS, time.Now().Add(2*time.Second), nil)
		if last == nil && s.tlsProxy != "" {
			last = roundTrip(ctx, hop{s.tlsProxy, l.proxyTLS}, l.probeTarget, l.probeTLS, time.Now().Add(2*time.Second), nil)
		}
		if last == nil {
			return nil
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-s.done:
		case <-ctx.Done():
		}
	}
	return fmt.Errorf("not ready after %s: %v", l.readyTimeout, last)
}

// logTail is the last lines of the subject's logs, for a skip message.
func (s *subject) logTail(lines int) string {
	var b strings.Builder
	for _, p := range s.logs {
		data, err := os.ReadFile(p)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		ls := strings.Split(strings.TrimSpace(string(data)), "\n")
		ls = ls[max(0, len(ls)-lines):]
		fmt.Fprintf(&b, "\n    %s:\n      %s", filepath.Base(p), strings.Join(ls, "\n      "))
	}
	return b.String()
}

// freePorts asks the kernel for n free loopback ports. They are free when
// returned; the subject binds them moments later.
func freePorts(n int) ([]int, error) {
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, port(ln.Addr()))
	}
	return ports, nil
}

func joinInts(xs []int, sep string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, sep)
}

// storegatePolicy allows CONNECT to the loopback upstream ports only. Its
// connection limits are raised to what the idle-tunnel test opens from one
// client address (as tinyproxy's MaxClients and squid's descriptors are), and
// its spool lives in dir so nothing is written outside it.
func storegatePolicy(dir string, listen, admin int, upstreamPorts []int, inspect bool, maxConns int) string {
	return fmt.Sprintf(`version: 1
listen_address: 127.0.0.1
listen_port: %d
admin_address: 127.0.0.1:%d
allowed_hosts: [127.0.0.1]
allowed_ports: [%s]
presets: []
tls: {inspect: %t}
limits: {max_connections: %d, max_connections_per_client: %d}
spool: {dir: %q}
`, listen, admin, joinInts(upstreamPorts, ", "), inspect, maxConns, maxConns, filepath.Join(dir, "spool"))
}

// tinyproxyConfig allows CONNECT from loopback to the upstream ports only.
func tinyproxyConfig(dir string, listen int, upstreamPorts []int, maxClients int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Port %d\nListen 127.0.0.1\nTimeout 600\n", listen)
	fmt.Fprintf(&b, "MaxClients %d\n", maxClients)
	fmt.Fprintf(&b, "LogFile %q\nLogLevel Info\nPidFile %q\n",
		filepath.Join(dir, "tinyproxy.log"), filepath.Join(dir, "tinyproxy.pid"))
	b.WriteString("Allow 127.0.0.1\nDisableViaHeader Yes\n")
	for _, p := range upstreamPorts {
		fmt.Fprintf(&b, "ConnectPort %d\n", p)
	}
	return b.String()
}

// squidConfig allows CONNECT from loopback to the upstream ports only, caches
// nothing, and logs each request (as storegate writes an event per tunnel).
// Its resolver points at loopback so nothing it does can leave the machine.
func squidConfig(dir string, listen int, upstreamPorts []int, maxFDs int) string {
	return fmt.Sprintf(`http_port 127.0.0.1:%d
visible_hostname storegate-bench
pid_filename %[2]s/squid.pid
cache_log %[2]s/cache.log
access_log stdio:%[2]s/access.log
coredump_dir %[2]s
cache deny all
pinger_enable off
shutdown_lifetime 0 seconds
dns_nameservers 127.0.0.1
max_filedescriptors %d
acl bench_clients src 127.0.0.1/32
acl bench_ports port %s
acl CONNECT method CONNECT
http_access deny !CONNECT
http_access deny CONNECT !bench_ports
http_access allow bench_clients
http_access deny all
`, listen, dir, maxFDs, joinInts(upstreamPorts, " "))
}

// roundTrip opens a tunnel to target (TLS 1.3 inside when tlsConf is set),
// exchanges one echoSize message that asks the server to close, waits for
// that close to come through the proxy and closes. When lat is set it
// receives the CONNECT-to-200 time.
func roundTrip(ctx context.Context, via hop, target string, tlsConf *tls.Config, deadline time.Time, lat *time.Duration) error {
	c, d, err := dialTunnel(ctx, via, target, deadline)
	if err != nil {
		return err
	}
	defer c.Close()
	if lat != nil {
		*lat = d
	}
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	var rw io.ReadWriter = c
	if tlsConf != nil {
		tc := tls.Client(c, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		rw = tc
	}
	var msg, back [echoSize]byte
	copy(msg[:], "Q storegate bench round trip...")
	if _, err := rw.Write(msg[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(rw, back[:]); err != nil {
		return err
	}
	if back != msg {
		return errors.New("echo mismatch")
	}
	if n, err := rw.Read(back[:1]); n != 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("the upstream's close did not come through the proxy (read %d, %v)", n, err)
	}
	return nil
}
