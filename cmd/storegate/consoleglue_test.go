//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// glueUpstream is a loopback TLS server and the PEM of its CA.
func glueUpstream(t *testing.T) (port int, caPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "glue CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, _ := x509.CreateCertificate(rand.Reader, leafT, ca, &key.PublicKey, caKey)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	port = serve(t, ln, func(c net.Conn) { _ = c.(*tls.Conn).Handshake(); _, _ = io.Copy(io.Discard, c) })
	return port, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// glueRelay is a minimal CONNECT relay that records what it was asked for.
func glueRelay(t *testing.T) (addr string, seen func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	port := serve(t, loopback(t), func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			return
		}
		mu.Lock()
		got = append(got, req.Host)
		mu.Unlock()
		up, err := net.Dial("tcp", req.Host)
		if err != nil {
			fmt.Fprint(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
			return
		}
		defer up.Close()
		fmt.Fprint(c, "HTTP/1.1 200 OK\r\n\r\n")
		go func() { _, _ = io.Copy(up, br) }()
		_, _ = io.Copy(c, up)
	})
	return fmt.Sprintf("127.0.0.1:%d", port), func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
}

func glueGateway(t *testing.T, body string) (*gateway.Server, *events.Log) {
	t.Helper()
	yaml := "version: 1\nlisten_address: 127.0.0.1\nlisten_port: 1\nadmin_address: 127.0.0.1:1\n" + body
	f, err := policy.Parse([]byte(yaml), "glue.yaml")
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, yaml)
	}
	f.ListenPort, f.AdminAddress = 0, "127.0.0.1:0"
	snap, err := policy.Compile(f, []byte(yaml), "glue.yaml", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	log := events.NewLog(io.Discard, events.Options{})
	t.Cleanup(log.Close)
	srv := gateway.New(gateway.Config{Version: "glue-test", Events: log})
	if err := srv.Apply(snap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, log
}

func TestStatusCommand(t *testing.T) {
	srv, _ := glueGateway(t, "allowed_hosts: [example.com]\nrelay_proxy: {address: \"http://relay.corp.test:3128\", username: pos, password: hunter2}\n")
	admin := srv.Addr("admin").String()

	var out, errb bytes.Buffer
	if code := cmdStatus(context.Background(), []string{"--admin", admin}, stdio{Out: &out, Err: &errb}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"version       glue-test\n",
		"listen        " + srv.Addr("proxy").String() + "\n",
		"admin         " + admin + "\n",
		"policy        glue.yaml\n",
		"  reload      ok\n",
		"relay         http://relay.corp.test:3128 (user pos, password ****)\n",
		"tunnels       0 active\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("storegate status lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "hunter2") {
		t.Fatal("relay password printed")
	}

	out.Reset()
	if code := cmdStatus(context.Background(), []string{"--admin", admin, "--json"}, stdio{Out: &out, Err: &errb}); code != 0 {
		t.Fatalf("--json exit %d: %s", code, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || m["version"] != "glue-test" {
		t.Fatalf("--json: %v %s", err, out.String())
	}

	// Admin address from the policy file.
	dir := t.TempDir()
	pf := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pf, []byte("version: 1\nadmin_address: "+admin+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := cmdStatus(context.Background(), []string{"--policy", pf}, stdio{Out: &out, Err: &errb}); code != 0 || !strings.Contains(out.String(), "glue-test") {
		t.Fatalf("--policy: exit %d %s %s", code, out.String(), errb.String())
	}

	// Nobody there: a clear error, exit 1.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	errb.Reset()
	if code := cmdStatus(context.Background(), []string{"--admin", dead}, stdio{Out: &out, Err: &errb}); code != 1 || !strings.Contains(errb.String(), "cannot reach the gateway's admin endpoint at "+dead) {
		t.Fatalf("dead admin: exit %d: %s", code, errb.String())
	}
	// A broken explicit policy file is an error naming it.
	errb.Reset()
	if code := cmdStatus(context.Background(), []string{"--policy", filepath.Join(dir, "missing.yaml")}, stdio{Out: &out, Err: &errb}); code != 1 || !strings.Contains(errb.String(), "missing.yaml") {
		t.Fatalf("missing policy: exit %d: %s", code, errb.String())
	}
}

// glueTerm runs startConsole on a pty and returns a function that types a
// command and returns its output up to the next prompt.
func glueTerm(t *testing.T, p *consoleProvider, emit events.Emitter) func(cmd string) string {
	t.Helper()
	ptmx, pts, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close(); pts.Close() })
	link := filepath.Join(t.TempDir(), "ttyS0")
	if err := os.Symlink(pts.Name(), link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, err := startConsole(ctx, link, 115200, p, emit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("console did not stop")
		}
	})
	read := ptyOutput(ptmx)
	mark := 0
	next := func() string {
		t.Helper()
		out := waitFor(t, func() string { return read()[mark:] }, "storegate> ")
		i := strings.Index(out, "storegate> ")
		mark += i + len("storegate> ")
		return strings.ReplaceAll(out[:i], "\r\n", "\n")
	}
	banner := next()
	if !strings.Contains(strings.ReplaceAll(banner, "\n    ", ""), "storegate "+version+" serial console on "+link) {
		t.Fatalf("banner: %q", banner)
	}
	return func(cmd string) string {
		if _, err := ptmx.Write([]byte(cmd + "\r")); err != nil {
			t.Fatal(err)
		}
		return next()
	}
}

// TestConsoleOnGateway runs the console against a real gateway: status,
// policy, and check through the gateway's own dial (policy first), verified
// with the policy's tls.ca_file.
func TestConsoleOnGateway(t *testing.T) {
	upPort, caPEM := glueUpstream(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, log := glueGateway(t, fmt.Sprintf("allowed_hosts: [\"127.0.0.1\"]\nallowed_ports: [%d]\npresets: [log-analytics]\ntls: {ca_file: %q}\n", upPort, caFile))
	typ := glueTerm(t, newConsoleProvider(srv, log), log)

	st := typ("status")
	for _, want := range []string{"version       glue-test", "listen        " + srv.Addr("proxy").String(), "relay         direct (no relay)"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}
	pol := typ("policy")
	for _, want := range []string{"allowed hosts from policy (1):\n  127.0.0.1\n", "allowed hosts from preset log-analytics (6):\n  *.ods.opinsights.azure.com\n", fmt.Sprintf("ports         %d\n", upPort)} {
		if !strings.Contains(pol, want) {
			t.Errorf("policy lacks %q:\n%s", want, pol)
		}
	}
	ok := typ(fmt.Sprintf("check 127.0.0.1:%d", upPort))
	for _, want := range []string{"via direct", "  connect  ok", "  tls      ok", "  verify   ok", "by policy", "result: OK"} {
		if !strings.Contains(ok, want) {
			t.Errorf("check lacks %q:\n%s", want, ok)
		}
	}
	refused := typ(fmt.Sprintf("check 127.0.0.2:%d", upPort))
	if !strings.Contains(refused, "  connect  FAIL") || !strings.Contains(refused, "result: FAILED at connect") {
		t.Errorf("a target the policy refuses must fail at connect:\n%s", refused)
	}
	ev := typ("events 50")
	if !strings.Contains(ev, "console device opened") {
		t.Errorf("events lack the console's own open event:\n%s", ev)
	}
}

// TestConsoleCheckThroughRelay: with relay_proxy set, check goes through the
// gateway's relay dial and says so.
func TestConsoleCheckThroughRelay(t *testing.T) {
	upPort, caPEM := glueUpstream(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	relay, seen := glueRelay(t)
	srv, log := glueGateway(t, fmt.Sprintf("allowed_hosts: [\"127.0.0.1\"]\nallowed_ports: [%d]\ntls: {ca_file: %q}\nrelay_proxy: {address: \"http://%s\", username: pos, password: hunter2}\n", upPort, caFile, relay))
	typ := glueTerm(t, newConsoleProvider(srv, log), log)
	out := typ(fmt.Sprintf("check 127.0.0.1:%d", upPort))
	for _, want := range []string{"via relay http://" + relay, "  verify   ok", "result: OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("check lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Fatal("relay password on the console")
	}
	if got := seen(); len(got) != 1 || got[0] != fmt.Sprintf("127.0.0.1:%d", upPort) {
		t.Errorf("relay saw %v", got)
	}
}

// TestConsoleCommandAdHoc runs `storegate console --device` on a pty beside a
// running gateway: status comes from its admin endpoint, the policy from the
// file, and events say where they are.
func TestConsoleCommandAdHoc(t *testing.T) {
	srv, _ := glueGateway(t, "allowed_hosts: [example.com]\n")
	dir := t.TempDir()
	pf := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pf, []byte("version: 1\nallowed_hosts: [adhoc.example]\nadmin_address: "+srv.Addr("admin").String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	term, out := adhocConsole(t, pf)
	for _, step := range []struct{ cmd, want string }{
		{"status", "version       glue-test\r\n"},
		{"policy", "allowed hosts from policy (1):\r\n  adhoc.example\r\n"},
		{"events", "events are not served by the admin endpoint"},
	} {
		if _, err := term.Write([]byte(step.cmd + "\r")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, out, step.want)
	}
}

// adhocConsole runs `storegate console --device PTY --policy pf` on a pty
// until the test ends, when it must stop with status 0, and returns the
// terminal's input and its output so far once the prompt is up.
func adhocConsole(t *testing.T, pf string) (io.Writer, func() string) {
	t.Helper()
	ptmx, pts, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	codec := make(chan int, 1)
	errb := &syncBuf{}
	go func() {
		codec <- cmdConsole(ctx, []string{"--device", pts.Name(), "--policy", pf}, stdio{Out: io.Discard, Err: errb})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-codec:
			if code != 0 {
				t.Errorf("console exit %d: %s", code, errb.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("storegate console did not stop on cancel")
		}
		ptmx.Close()
		pts.Close()
	})
	out := ptyOutput(ptmx)
	waitFor(t, out, "storegate> ")
	return ptmx, out
}

// TestConsoleCommandAdHocSpool: the ad hoc console shows the running
// gateway's spool as the gateway counts it (asked on its proxy listener),
// not figures of its own.
func TestConsoleCommandAdHocSpool(t *testing.T) {
	recv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	defer recv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, certPEM(recv), 0o644)
	g := startSpoolGateway(t, dir, recv, ca)
	pf := g.path
	for _, path := range []string{"/ok", "/refuse"} {
		if code := g.submit(t, fmt.Sprintf("https://127.0.0.1:%s%s", g.rport, path), "{}"); code != 202 {
			t.Fatalf("submission to %s: %d", path, code)
		}
	}
	waitFor(t, g.stderr.String, "spool dead letter")

	term, out := adhocConsole(t, pf)
	term.Write([]byte("spool\r"))
	waitFor(t, out, "dead letters  1\r\n")
	if s := out(); !strings.Contains(s, "delivered     1\r\n") || !strings.Contains(s, "dir           "+filepath.Join(dir, "spool")) {
		t.Fatalf("console spool view:\n%s", s)
	}
}

// TestConsoleCommandAdHocCheck: the ad hoc console's check asks the running
// gateway for a tunnel, so it takes the gateway's policy and path and trusts
// the policy's tls.ca_file; a target the policy refuses fails at connect with
// the gateway's answer.
func TestConsoleCommandAdHocCheck(t *testing.T) {
	recv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer recv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, certPEM(recv), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startSpoolGateway(t, dir, recv, ca)

	term, out := adhocConsole(t, g.path)
	term.Write([]byte("check 127.0.0.1:" + g.rport + "\r"))
	waitFor(t, out, "result: ")
	for _, want := range []string{"via gateway " + strings.TrimPrefix(g.proxy, "http://"), "  verify   ok", "by policy", "result: OK"} {
		if !strings.Contains(out(), want) {
			t.Errorf("check lacks %q:\n%s", want, out())
		}
	}
	waitFor(t, g.stderr.String, `"target":"127.0.0.1:`+g.rport+`"`) // the gateway carried it

	term.Write([]byte("check 127.0.0.1:1\r"))
	waitFor(t, out, "result: FAILED at connect")
	if !strings.Contains(out(), "the gateway answered 403 Forbidden") {
		t.Errorf("a refused check should give the gateway's answer:\n%s", out())
	}
}
