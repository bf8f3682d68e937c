package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/storegate/storegate/gateway/policy"
)

// syncBuf is a goroutine-safe buffer for a command's stderr.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventLines decodes the JSON event lines of a command's stderr.
func eventLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stderr line is not JSON: %q", line)
		}
		if _, ok := m["event_id"].(float64); !ok {
			t.Fatalf("event without integer event_id: %q", line)
		}
		if _, ok := m["msg"].(string); !ok {
			t.Fatalf("event without msg: %q", line)
		}
		evs = append(evs, m)
	}
	return evs
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// runPolicy writes a policy for `storegate run` on two free loopback ports
// (the proxy's and the admin endpoint's) with a spool in a temp dir.
func runPolicy(t *testing.T) (path string, ports []int) {
	t.Helper()
	ports = freePorts(t, 2)
	path = filepath.Join(t.TempDir(), "policy.yaml")
	yaml := fmt.Sprintf("version: 1\nlisten_address: 127.0.0.1\nlisten_port: %d\nadmin_address: 127.0.0.1:%d\nspool: {dir: %q}\n", ports[0], ports[1], t.TempDir())
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, ports
}

// waitFor polls read until what it returns contains want, and returns that;
// it fails the test after 20 seconds.
func waitFor(t *testing.T, read func() string, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := read()
		if strings.Contains(s, want) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw %q in:\n%s", want, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ptyOutput collects what is written to the terminal behind ptmx until it
// closes; the function returned reads everything so far.
func ptyOutput(ptmx *os.File) func() string {
	var mu sync.Mutex
	var buf []byte
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := ptmx.Read(b)
			mu.Lock()
			buf = append(buf, b[:n]...)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return string(buf)
	}
}

// serve accepts on ln until the test ends and runs handle on each
// connection in its own goroutine, closing the connection after; it returns
// ln's port.
func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) int {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// loopback listens on a free loopback port.
func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startGateway runs `storegate run --policy path` in this process until the
// test ends and returns its stderr, where the events go.
func startGateway(t *testing.T, path string) *syncBuf {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &syncBuf{}
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"run", "--policy", path}, stdio{In: strings.NewReader(""), Out: io.Discard, Err: stderr})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return stderr
}

func TestRunStartsAndStopsWithEvents(t *testing.T) {
	path, ports := runPolicy(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"run", "--policy", path}, stdio{In: strings.NewReader(""), Out: io.Discard, Err: &stderr})
	}()

	waitFor(t, stderr.String, `"event_id":101`)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT example.com:443 HTTP/1.1\r\n\r\n")
	b := make([]byte, 12)
	io.ReadFull(c, b)
	c.Close()
	if string(b) != "HTTP/1.1 403" {
		t.Fatalf("refused host answered %q", b)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run exited %d", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not stop")
	}
	evs := eventLines(t, stderr.String())
	var first map[string]any
	for _, e := range evs {
		if e["event_id"].(float64) == 101 {
			first = e
			break
		}
	}
	last := evs[len(evs)-1]
	if first == nil || first["listen"] != fmt.Sprintf("127.0.0.1:%d", ports[0]) || first["policy"] != path {
		t.Fatalf("event 101: %v", first)
	}
	if last["event_id"].(float64) != 102 {
		t.Fatalf("last event %v, want 102", last)
	}
}

func TestRunRefusesBadPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("version: 1\nlisten_port: \"text\"\n"), 0o644)
	var stderr syncBuf
	code := dispatch(context.Background(), []string{"run", "--policy", path}, stdio{Out: io.Discard, Err: &stderr})
	if code == 0 {
		t.Fatal("run accepted a bad policy")
	}
	evs := eventLines(t, stderr.String())
	if len(evs) != 1 || evs[0]["event_id"].(float64) != 401 || evs[0]["key"] != "listen_port" || evs[0]["line"].(float64) != 2 {
		t.Fatalf("want one event 401 naming listen_port at line 2: %v", evs)
	}
	if !strings.Contains(evs[0]["msg"].(string), "valid: 1-65535") {
		t.Fatalf("message does not give the valid range: %v", evs[0]["msg"])
	}
}

func TestPolicyCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch(context.Background(), []string{"policy", "default"}, stdio{Out: &out, Err: &errb}); code != 0 {
		t.Fatal(errb.String())
	}
	if !bytes.Equal(out.Bytes(), policy.DefaultYAML()) || !strings.Contains(out.String(), "# ") {
		t.Fatal("policy default does not print the commented default")
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, out.Bytes(), 0o644)
	if code := dispatch(context.Background(), []string{"policy", "check", good}, stdio{Out: io.Discard, Err: io.Discard}); code != 0 {
		t.Fatal("the default policy does not pass policy check")
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nallowed_ports: [443]\nlimits:\n  max_conections: 5\n"), 0o644)
	errb.Reset()
	if code := dispatch(context.Background(), []string{"policy", "check", bad}, stdio{Out: io.Discard, Err: &errb}); code == 0 {
		t.Fatal("policy check accepted an unknown key")
	}
	if !strings.Contains(errb.String(), "bad.yaml:4: limits.max_conections: unknown key") {
		t.Fatalf("policy check message: %q", errb.String())
	}
	// A file the policy names that run could not load fails the check too,
	// as it would fail run at start.
	nocert := filepath.Join(dir, "nocert.yaml")
	os.WriteFile(nocert, []byte("version: 1\ntls_listener: {port: 8443, cert_file: "+filepath.Join(dir, "missing.pem")+", key_file: "+filepath.Join(dir, "missing.key")+"}\n"), 0o644)
	errb.Reset()
	if code := dispatch(context.Background(), []string{"policy", "check", nocert}, stdio{Out: io.Discard, Err: &errb}); code == 0 {
		t.Fatal("policy check accepted a TLS listener whose certificate does not exist")
	}
	if !strings.Contains(errb.String(), "tls_listener.cert_file") || !strings.Contains(errb.String(), "missing.pem") {
		t.Fatalf("policy check message: %q", errb.String())
	}
	errb.Reset()
	if code := dispatch(context.Background(), []string{"config", "set", "tls.ca_file", filepath.Join(dir, "nothing.pem"), "--policy", good}, stdio{Out: io.Discard, Err: &errb}); code == 0 {
		t.Fatal("config set accepted a tls.ca_file that does not exist")
	}
	if !strings.Contains(errb.String(), "tls.ca_file") || !strings.Contains(errb.String(), "nothing.pem") {
		t.Fatalf("config set message: %q", errb.String())
	}
	if b, _ := os.ReadFile(good); !bytes.Equal(b, out.Bytes()) {
		t.Fatal("a refused config set changed the file")
	}
	out.Reset()
	dispatch(context.Background(), []string{"policy", "presets"}, stdio{Out: &out, Err: io.Discard})
	for _, want := range []string{"log-analytics", "*.ods.opinsights.azure.com", "automation-westeurope", "we-jobruntimedata-prod-su1.azure-automation.net", "ncus-agentservice-prod-1.azure-automation.net"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("policy presets lacks %s", want)
		}
	}
}

// TestBinarySIGTERM runs the real binary on the embedded default's shape and
// stops it with SIGTERM, as a service manager would.
func TestBinarySIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "storegate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if out, _ := exec.Command(bin, "version").Output(); !strings.HasPrefix(string(out), "storegate ") {
		t.Fatalf("version: %q", out)
	}
	path, _ := runPolicy(t)
	cmd := exec.Command(bin, "run", "--policy", path)
	var stderr syncBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, stderr.String, `"event_id":101`)
	cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), `"event_id":102`) {
		t.Fatalf("no event 102: %s", stderr.String())
	}
}

// TestRunWithConsole: `storegate run --console DEV` serves the console on the
// device: the banner, then a prompt that answers status (here a pty).
func TestRunWithConsole(t *testing.T) {
	ptmx, pts, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer pts.Close()
	path, ports := runPolicy(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"run", "--policy", path, "--console", pts.Name()}, stdio{Out: io.Discard, Err: io.Discard})
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("run did not stop")
		}
	}()
	out := ptyOutput(ptmx)
	banner := waitFor(t, out, "storegate> ")
	if !strings.Contains(banner, fmt.Sprintf("127.0.0.1:%d", ports[0])) || !strings.Contains(banner, path) {
		t.Fatalf("banner lacks the listen address or policy:\n%s", banner)
	}
	ptmx.Write([]byte("status\r"))
	waitFor(t, out, "tunnels ")
}
