package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

func TestRelayThroughSecondStoregate(t *testing.T) {
	pki := newPKI(t, "cloud.example")
	port := tlsUpstream(t, pki, "via regional")
	regional := startGW(t, fmt.Sprintf("allowed_hosts: [cloud.example]\nallowed_ports: [%d]\nallowed_networks: [127.0.0.0/8]\n", port),
		func(c *Config) { c.Resolver = mapResolver{"cloud.example": {"127.0.0.1"}} })
	store := startGW(t, fmt.Sprintf("allowed_hosts: [cloud.example, other.example]\nallowed_ports: [%d]\nrelay_proxy: {address: \"http://%s\"}\n", port, regional.addr),
		func(c *Config) {
			// The store box cannot resolve anything itself: only the relay can.
			c.Resolver = mapResolver{}
		})

	if b := getVia(t, store.addr, pki.pool, fmt.Sprintf("https://cloud.example:%d/", port)); b != "via regional" {
		t.Fatalf("body %q", b)
	}
	e := store.rec.waitFor(t, events.ConnectReceived, map[string]string{events.KeyVia: regional.addr})
	if e.fields[events.KeyBytesDown] == "0" {
		t.Fatalf("store summary: %v", e.fields)
	}
	regional.rec.waitFor(t, events.ConnectReceived, map[string]string{events.KeyDecision: "allowed"})

	// The store's allowlist is enforced before the relay is asked.
	before := regional.srv.Counters().Rejections
	_, _, status := rawConnect(t, store.addr, "CONNECT evil.example:443 HTTP/1.1\r\n\r\n")
	if status != "HTTP/1.1 403 Forbidden" {
		t.Fatalf("status %q", status)
	}
	// The relay refuses what it does not allow: the store answers 502, event 403 names the relay's status.
	_, _, status = rawConnect(t, store.addr, fmt.Sprintf("CONNECT other.example:%d HTTP/1.1\r\n\r\n", port))
	if status != "HTTP/1.1 502 Bad Gateway" {
		t.Fatalf("status %q", status)
	}
	ev := store.rec.waitFor(t, events.NetworkError, nil)
	if !strings.Contains(ev.fields[events.KeyError], "relay answered 403") {
		t.Fatalf("event 403 does not name the relay's status: %v", ev.fields)
	}
	if got := regional.srv.Counters().Rejections - before; got != 1 {
		t.Fatalf("regional saw %d refusals, want 1 (evil.example must never reach it)", got)
	}
}

// tinyproxy runs Debian's tinyproxy on loopback with Basic auth.
func tinyproxy(t *testing.T, user, pass string, connectPort int) string {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		for _, p := range []string{"/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Fatal("tinyproxy is required (make test-deps installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "tinyproxy.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`Port %d
Listen 127.0.0.1
Timeout 30
MaxClients 20
LogLevel Info
PidFile "%s/tinyproxy.pid"
BasicAuth %s %s
Allow 127.0.0.1
ConnectPort %d
`, port, dir, user, pass, connectPort)), 0o644)
	cmd := exec.Command(bin, "-d", "-c", conf)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("tinyproxy did not start on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRelayThroughTinyproxyWithBasicAuth(t *testing.T) {
	pki := newPKI(t, "127.0.0.1")
	port := tlsUpstream(t, pki, "via tinyproxy")
	const secret = "s3cret-Pa55"
	relay := tinyproxy(t, "store01", secret, port)
	pwFile := filepath.Join(t.TempDir(), "relay.pw")
	os.WriteFile(pwFile, []byte(secret+"\n"), 0o600)

	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\nrelay_proxy: {address: \"http://%s\", username: store01, password_file: %q}\n", port, relay, pwFile), nil)
	if b := getVia(t, gw.addr, pki.pool, fmt.Sprintf("https://127.0.0.1:%d/", port)); b != "via tinyproxy" {
		t.Fatalf("body %q", b)
	}

	// Wrong password: tinyproxy refuses (it answers 401 where RFC 9110 says
	// 407); the client gets 502 and event 403 names the relay's status.
	bad := filepath.Join(t.TempDir(), "bad.pw")
	os.WriteFile(bad, []byte("wrong-password\n"), 0o600)
	gw2 := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\nrelay_proxy: {address: \"http://%s\", username: store01, password_file: %q}\n", port, relay, bad), nil)
	_, _, status := rawConnect(t, gw2.addr, fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", port))
	if status != "HTTP/1.1 502 Bad Gateway" {
		t.Fatalf("status %q", status)
	}
	ev := gw2.rec.waitFor(t, events.NetworkError, nil)
	if e := ev.fields[events.KeyError]; !strings.Contains(e, "relay answered 401") && !strings.Contains(e, "relay answered 407") {
		t.Fatalf("event does not name the relay's refusal: %v", ev.fields)
	}
	for _, g := range []*testGW{gw, gw2} {
		g.rec.mu.Lock()
		for _, e := range g.rec.evs {
			if strings.Contains(fmt.Sprint(e), secret) || strings.Contains(fmt.Sprint(e), "wrong-password") {
				t.Errorf("password in event: %v", e)
			}
		}
		g.rec.mu.Unlock()
		st := fmt.Sprintf("%+v", g.srv.Status())
		if strings.Contains(st, secret) || strings.Contains(st, "wrong-password") || !strings.Contains(st, "password ****") {
			t.Errorf("status leaks or does not mask the password: %s", st)
		}
	}
}

// TestRelayBytesWithItsAnswer: a relay whose 200 arrives in the same segment
// as the first tunnel bytes (the server spoke first). The client gets them
// right after the 200, the tunnel carries data both ways, and it is still an
// ordinary socket tunnel: the idle sweeper closes it once nothing moves.
func TestRelayBytesWithItsAnswer(t *testing.T) {
	relay := serve(t, loopback(t), func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\nhello from the server\n")
		io.Copy(c, br)
	})
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [cloud.example]\nallowed_ports: [443]\ntls: {inspect: false}\nlimits: {idle_timeout: 300ms}\nrelay_proxy: {address: \"http://127.0.0.1:%d\"}\n", relay),
		func(c *Config) { c.Resolver = mapResolver{} })
	c, br := openTunnel(t, gw.addr, "cloud.example:443")
	if line, err := br.ReadString('\n'); err != nil || line != "hello from the server\n" {
		t.Fatalf("first tunnel bytes %q, %v", line, err)
	}
	io.WriteString(c, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read data from an idle tunnel")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("idle tunnel through the relay was not closed")
	}
	gw.rec.waitFor(t, events.Info, nil)
	e := gw.rec.waitFor(t, events.ConnectReceived, map[string]string{events.KeyDecision: "allowed"})
	if e.fields[events.KeyBytesDown] != "27" {
		t.Fatalf("bytes down %s, want 27 (22 sent with the 200, 5 echoed): %v", e.fields[events.KeyBytesDown], e.fields)
	}
}
