package main

import (
	"bufio"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// spoolGW is a gateway run in this process whose spool may deliver to a
// loopback HTTPS receiver.
type spoolGW struct {
	path, dir string // its policy file and the directory holding it and the spool
	proxy     string // http://127.0.0.1:PORT, the proxy listener
	rport     string // the receiver's port
	stderr    *syncBuf
}

// startSpoolGateway writes a policy that allows 127.0.0.1 on recv's port and
// trusts the CAs in caFile (tls.ca_file), runs the gateway until the test
// ends and waits until it serves.
func startSpoolGateway(t *testing.T, dir string, recv *httptest.Server, caFile string) *spoolGW {
	t.Helper()
	_, rport, _ := net.SplitHostPort(recv.Listener.Addr().String())
	ports := freePorts(t, 2)
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`version: 1
listen_address: 127.0.0.1
listen_port: %d
admin_address: 127.0.0.1:%d
allowed_hosts: [127.0.0.1]
allowed_ports: [%s]
tls: {ca_file: %q}
spool: {dir: %q}
`, ports[0], ports[1], rport, caFile, filepath.Join(dir, "spool"))), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &spoolGW{path: path, dir: dir, proxy: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), rport: rport, stderr: startGateway(t, path)}
	waitFor(t, g.stderr.String, `"event_id":101`)
	return g
}

// submit posts body to the spool for dest and returns the status.
func (g *spoolGW) submit(t *testing.T, dest, body string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", g.proxy+"/spool/v1/messages", strings.NewReader(body))
	req.Header.Set("Storegate-Destination", dest)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// certPEM is a server's certificate as PEM, for a tls.ca_file.
func certPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// waitCount polls n until it is at least want; it fails the test after 20
// seconds, showing the gateway's events.
func waitCount(t *testing.T, mu *sync.Mutex, n func() int, want int, events *syncBuf) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := n()
		mu.Unlock()
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries, want %d:\n%s", got, want, events.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSpoolThroughRunningGateway submits to the proxy listener of a running
// gateway and sees the message delivered to a real HTTPS receiver through the
// gateway's own dial path; a destination the policy refuses gets 403.
func TestSpoolThroughRunningGateway(t *testing.T) {
	var mu sync.Mutex
	var got []string
	var keys []string
	recv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+string(b))
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
	}))
	defer recv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, certPEM(recv), 0o644)
	g := startSpoolGateway(t, dir, recv, ca)
	if code := g.submit(t, fmt.Sprintf("https://127.0.0.1:%s/ingest?x=1", g.rport), `{"n":1}`); code != 202 {
		t.Fatalf("submission: %d", code)
	}
	if code := g.submit(t, "https://example.com/ingest", `{"n":2}`); code != 403 {
		t.Fatalf("refused destination: %d", code)
	}
	waitCount(t, &mu, func() int { return len(got) }, 1, g.stderr)
	mu.Lock()
	defer mu.Unlock()
	if got[0] != `POST /ingest {"n":1}` || keys[0] == "" {
		t.Fatalf("receiver got %q with key %q", got[0], keys[0])
	}
}

// TestReloadMovesLinkProbeToNewRelay: the store's relay no longer answers
// (connections to it time out), so the link probe finds the uplink down and
// CONNECTs are answered 503. The policy is edited to name a working relay:
// the reload alone, with no restart, has the probe check the new relay at
// once, the link comes up and CONNECTs pass through it.
func TestReloadMovesLinkProbeToNewRelay(t *testing.T) {
	relay := fakeRelay(t)
	retired := blackhole(t)
	ports := freePorts(t, 2) // proxy, admin
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	doc := func(relayPort int) []byte {
		return []byte(fmt.Sprintf(`version: 1
listen_address: 127.0.0.1
listen_port: %d
admin_address: 127.0.0.1:%d
allowed_hosts: [cloud.example]
allowed_ports: [443]
tls: {inspect: false}
relay_proxy: {address: "http://127.0.0.1:%d"}
link: {probe_interval: 3s, hold: 200ms}
limits: {dial_timeout: 500ms}
spool: {disabled: true}
`, ports[0], ports[1], relayPort))
	}
	if err := os.WriteFile(path, doc(retired), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr := startGateway(t, path)
	waitFor(t, stderr.String, "uplink down")

	connect := func() (net.Conn, *bufio.Reader, string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "CONNECT cloud.example:443 HTTP/1.1\r\nHost: cloud.example:443\r\n\r\n")
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		return c, br, strings.TrimSpace(line)
	}
	if _, _, status := connect(); !strings.Contains(status, " 503 ") {
		t.Fatalf("CONNECT while the relay is gone: %q, want 503", status)
	}

	// The edit, written as editors and config tools do: a new file renamed over the old.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, doc(relay), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr.String, "uplink up again")
	c, br, status := connect()
	if !strings.Contains(status, " 200 ") {
		t.Fatalf("CONNECT after the reload: %q\n%s", status, stderr.String())
	}
	io.WriteString(c, "through the new relay\n")
	if line, err := br.ReadString('\n'); err != nil || line != "through the new relay\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
	c.Close() // before the gateway's shutdown, which would wait for the tunnel
}

// blackhole returns a loopback port where connections time out: a listener
// with a backlog of 0 whose one queued connection is never accepted, so the
// kernel drops every further SYN.
func blackhole(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return port // the queue is full: connections time out now
			}
			t.Fatalf("filling the blackhole's queue: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 8 {
			t.Fatal("the kernel keeps accepting into a backlog of 0")
		}
	}
}

// fakeRelay is a minimal CONNECT proxy on loopback: it answers 200 to any
// CONNECT and echoes the tunnel.
func fakeRelay(t *testing.T) int {
	t.Helper()
	return serve(t, loopback(t), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return // a probe: connected and closed
			}
			if l == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		io.Copy(c, br)
	})
}

// TestReloadGivesSpoolNewCA: the receiver's certificate is not trusted at
// first (tls.ca_file holds another CA), so delivery fails and is retried.
// Replacing the CA file is a policy change like any other: without a restart
// the next attempt trusts the receiver and the message arrives.
func TestReloadGivesSpoolNewCA(t *testing.T) {
	var mu sync.Mutex
	var got []string
	recv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, string(b))
		mu.Unlock()
	}))
	defer recv.Close()
	_, otherCA := glueUpstream(t) // some other CA
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeCA := func(pemBytes []byte) {
		t.Helper()
		tmp := ca + ".new"
		if err := os.WriteFile(tmp, pemBytes, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, ca); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(otherCA)
	g := startSpoolGateway(t, dir, recv, ca)
	if code := g.submit(t, fmt.Sprintf("https://127.0.0.1:%s/ingest", g.rport), `{"sale":1}`); code != 202 {
		t.Fatalf("submission: %d", code)
	}
	waitFor(t, g.stderr.String, "spool delivery failing")

	writeCA(certPEM(recv))
	waitFor(t, g.stderr.String, "policy reloaded")
	waitCount(t, &mu, func() int { return len(got) }, 1, g.stderr)
	mu.Lock()
	defer mu.Unlock()
	if got[0] != `{"sale":1}` {
		t.Fatalf("receiver got %q", got[0])
	}
}
