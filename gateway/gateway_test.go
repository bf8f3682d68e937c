package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestConnectThroughGoHTTPClient(t *testing.T) {
	pki := newPKI(t, "shop.example")
	port := tlsUpstream(t, pki, "hello from upstream")
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [shop.example]\nallowed_ports: [%d]\nallowed_networks: [127.0.0.0/8]\n", port),
		func(c *Config) { c.Resolver = mapResolver{"shop.example": {"127.0.0.1"}} })

	if body := getVia(t, gw.addr, pki.pool, fmt.Sprintf("https://SHOP.example.:%d/", port)); body != "hello from upstream" {
		t.Fatalf("body %q", body)
	}
	e := gw.rec.waitFor(t, events.ConnectReceived, map[string]string{events.KeyDecision: "allowed"})
	if e.fields[events.KeyBytesUp] == "0" || e.fields[events.KeyBytesDown] == "0" || e.fields[events.KeyClient] == "" {
		t.Fatalf("summary event lacks bytes or client: %v", e.fields)
	}
	c := gw.srv.Counters()
	if c.Tunnels != 1 || c.BytesDown == 0 || c.BytesUp == 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestConnectWithCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (make test-deps installs it)")
	}
	pki := newPKI(t, "pos.example")
	port := tlsUpstream(t, pki, "curl ok")
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [pos.example]\nallowed_ports: [%d]\nallowed_networks: [127.0.0.1/32]\n", port),
		func(c *Config) {
			c.Resolver = mapResolver{"pos.example": {"127.0.0.1"}, "other.example": {"127.0.0.1"}}
		})

	out, err := exec.Command(curl, "-sS", "--max-time", "10", "--proxy", "http://"+gw.addr, "--cacert", pki.caFile,
		fmt.Sprintf("https://pos.example:%d/", port)).CombinedOutput()
	if err != nil || string(out) != "curl ok" {
		t.Fatalf("curl through gateway: %v: %s", err, out)
	}
	// A refused host: curl reports the proxy's 403.
	out, err = exec.Command(curl, "-sS", "--max-time", "10", "--proxy", "http://"+gw.addr, "--cacert", pki.caFile,
		"-o", "/dev/null", "-w", "%{http_connect}", fmt.Sprintf("https://other.example:%d/", port)).Output()
	if err == nil || string(out) != "403" {
		t.Fatalf("curl to refused host: err=%v connect code %q", err, out)
	}
	gw.rec.waitFor(t, events.NotAllowed, map[string]string{events.KeyTarget: fmt.Sprintf("other.example:%d", port)})
}

func TestRefusals(t *testing.T) {
	echo := echoServer(t)
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [ok.example, \"*.wild.example\"]\nallowed_ports: [%d, 443]\nallowed_networks: [127.0.0.0/8]\nlimits: {max_header_bytes: 2KiB, max_headers: 10}\n", echo),
		func(c *Config) {
			c.Resolver = mapResolver{"ok.example": {"127.0.0.1"}, "down.wild.example": {"127.0.0.1"}}
		})
	big := "CONNECT ok.example:443 HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", 3000) + "\r\n\r\n"
	many := "CONNECT ok.example:443 HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", 11) + "\r\n"
	cases := []struct {
		name, req, status string
		id                events.ID
	}{
		{"host not allowed", "CONNECT evil.example:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 403 Forbidden", events.NotAllowed},
		{"port not allowed", "CONNECT ok.example:22 HTTP/1.1\r\n\r\n", "HTTP/1.1 403 Forbidden", events.NotAllowed},
		{"wildcard apex", "CONNECT wild.example:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 403 Forbidden", events.NotAllowed},
		{"GET", "GET http://ok.example/ HTTP/1.1\r\nHost: ok.example\r\n\r\n", "HTTP/1.1 405 Method Not Allowed", events.NotConnect},
		{"malformed line", "CONNECT\r\n\r\n", "HTTP/1.1 400 Bad Request", events.OtherError},
		{"bad authority", "CONNECT ok.example HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request", events.OtherError},
		{"bad port", "CONNECT ok.example:99999 HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request", events.OtherError},
		{"userinfo", "CONNECT user@ok.example:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request", events.OtherError},
		{"bad header", "CONNECT ok.example:443 HTTP/1.1\r\nNo colon here\r\n\r\n", "HTTP/1.1 400 Bad Request", events.OtherError},
		{"bare LF", "CONNECT ok.example:443 HTTP/1.1\nHost: x\n\n", "HTTP/1.1 400 Bad Request", events.OtherError},
		{"oversized head", big, "HTTP/1.1 431 Request Header Fields Too Large", events.OtherError},
		{"too many headers", many, "HTTP/1.1 431 Request Header Fields Too Large", events.OtherError},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported", events.OtherError},
		{"unreachable", "CONNECT down.wild.example:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 502 Bad Gateway", events.NetworkError},
		{"unknown host", "CONNECT nx.wild.example:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 502 Bad Gateway", events.NetworkError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(gw.rec.evs)
			conn, br, status := rawConnect(t, gw.addr, c.req)
			if status != c.status {
				t.Fatalf("status %q, want %q", status, c.status)
			}
			resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(status+"\r\n"), br)), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if len(body) == 0 || len(body) > 200 {
				t.Fatalf("want a short reason, got %q", body)
			}
			if c.id == events.NotConnect && resp.Header.Get("Allow") != "CONNECT" {
				t.Fatalf("405 without Allow: CONNECT: %v", resp.Header)
			}
			conn.Close()
			deadline := time.Now().Add(5 * time.Second)
			for {
				gw.rec.mu.Lock()
				var got []events.ID
				for _, e := range gw.rec.evs[before:] {
					got = append(got, e.id)
				}
				gw.rec.mu.Unlock()
				if len(got) == 1 && got[0] == c.id {
					break
				}
				if len(got) > 1 || time.Now().After(deadline) {
					t.Fatalf("events %v, want exactly one %d", got, c.id)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestUpstreamTimeoutIs504(t *testing.T) {
	gw := startGW(t, "allowed_hosts: [slow.example]\nlimits: {dial_timeout: 200ms}\n", func(c *Config) {
		c.Resolver = mapResolver{"slow.example": {"93.184.216.34"}}
		// A dialer that never connects: the upstream "times out". No packet leaves the host.
		c.Dialer = dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
	})
	_, _, status := rawConnect(t, gw.addr, "CONNECT slow.example:443 HTTP/1.1\r\n\r\n")
	if status != "HTTP/1.1 504 Gateway Timeout" {
		t.Fatalf("status %q", status)
	}
	gw.rec.waitFor(t, events.NetworkError, nil)
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

func TestAddressSafetyMatrix(t *testing.T) {
	echo := echoServer(t)
	res := mapResolver{
		"public.example":  {"93.184.216.34"},
		"loop.example":    {"127.0.0.1"},
		"rfc1918.example": {"10.1.2.3"},
		"meta.example":    {"169.254.169.254"},
		"cgnat.example":   {"100.64.1.1"},
		"ula.example":     {"fd12::1"},
		"mcast.example":   {"224.0.0.251"},
		"bcast.example":   {"255.255.255.255"},
		"zero.example":    {"0.0.0.0"},
		"v6loop.example":  {"::1"},
		"mapped.example":  {"::ffff:127.0.0.1"},
		"nat64.example":   {"64:ff9b::a01:203"},
		"6to4.example":    {"2002:a01:203::1"},
		"teredo.example":  {"2001:0:4136:e378:8000:63bf:3fff:fdd2"},
		"mixed.example":   {"93.184.216.34", "10.0.0.1"},
		"inside.example":  {"10.20.30.40"},
		"linklocal6.test": {"fe80::1"},
	}
	var dialedMu sync.Mutex
	var dialed []string
	hosts := []string{}
	for h := range res {
		hosts = append(hosts, h)
	}
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [%s, 127.0.0.1]\nallowed_ports: [443, %d]\nallowed_networks: [10.20.0.0/16]\n", strings.Join(hosts, ", "), echo),
		func(c *Config) {
			c.Resolver = res
			c.Dialer = dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
				dialedMu.Lock()
				dialed = append(dialed, addr)
				dialedMu.Unlock()
				if strings.HasPrefix(addr, "127.0.0.1:") {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}
				return nil, errors.New("test dialer: not dialling " + addr)
			})
		})
	cases := []struct {
		target string
		want   string
	}{
		{"public.example:443", "502"}, // allowed; the test dialer refuses to leave the host
		{"inside.example:443", "502"}, // in allowed_networks
		{fmt.Sprintf("127.0.0.1:%d", echo), "200"},
		{"loop.example:443", "403"},
		{"rfc1918.example:443", "403"},
		{"meta.example:443", "403"},
		{"cgnat.example:443", "403"},
		{"ula.example:443", "403"},
		{"mcast.example:443", "403"},
		{"bcast.example:443", "403"},
		{"zero.example:443", "403"},
		{"v6loop.example:443", "403"},
		{"mapped.example:443", "403"},
		{"nat64.example:443", "403"},
		{"6to4.example:443", "403"},
		{"teredo.example:443", "403"},
		{"mixed.example:443", "403"},
		{"linklocal6.test:443", "403"},
		{"[::ffff:127.0.0.1]:443", "502"}, // the mapped form of the listed literal is that literal: allowed, nothing listens
		{"127.0.0.2:443", "403"},
		{"[::1]:443", "403"},
	}
	for _, c := range cases {
		t.Run(c.target, func(t *testing.T) {
			_, _, status := rawConnect(t, gw.addr, "CONNECT "+c.target+" HTTP/1.1\r\n\r\n")
			if !strings.HasPrefix(status, "HTTP/1.1 "+c.want) {
				t.Fatalf("status %q, want %s", status, c.want)
			}
		})
	}
	dialedMu.Lock()
	defer dialedMu.Unlock()
	for _, d := range dialed {
		host, _, _ := net.SplitHostPort(d)
		if host != "93.184.216.34" && host != "10.20.30.40" && host != "127.0.0.1" {
			t.Errorf("dialled an address the policy refuses: %s", d)
		}
	}
}

func TestGatewayNeverDialsItself(t *testing.T) {
	gw := startGW(t, "allowed_hosts: [127.0.0.1, me.example]\n", func(c *Config) {
		c.Resolver = mapResolver{"me.example": {"127.0.0.1"}}
	})
	_, port, _ := net.SplitHostPort(gw.addr)
	_, aport, _ := net.SplitHostPort(gw.srv.Addr("admin").String())
	// Allow the gateway's own ports, as a careless policy might.
	yaml := fmt.Sprintf("version: 1\nlisten_address: 127.0.0.1\nlisten_port: %s\nadmin_address: 127.0.0.1:%s\nallowed_hosts: [127.0.0.1, me.example]\nallowed_networks: [127.0.0.0/8]\nallowed_ports: [%s, %s]\n", port, aport, port, aport)
	f, err := policy.Parse([]byte(yaml), "self.yaml")
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := policy.Compile(f, []byte(yaml), "self.yaml", time.Now())
	if err := gw.srv.Apply(snap); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"127.0.0.1:" + port, "me.example:" + port, "127.0.0.1:" + aport} {
		_, _, status := rawConnect(t, gw.addr, "CONNECT "+target+" HTTP/1.1\r\n\r\n")
		if status != "HTTP/1.1 403 Forbidden" {
			t.Fatalf("CONNECT %s to the gateway itself: %q", target, status)
		}
	}
}

func TestEarlyBytesAndHalfClose(t *testing.T) {
	echo := echoServer(t)
	// raw_tcp_hosts: the echo protocol is not TLS; the inspector lets it through.
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {raw_tcp_hosts: [127.0.0.1]}\n", echo), nil)
	c, err := net.Dial("tcp", gw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// CONNECT and the first payload in one write, before reading the 200.
	if _, err := fmt.Fprintf(c, "CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\nearly-bytes|", echo); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if status != "HTTP/1.1 200 Connection established\r\n" {
		t.Fatalf("status %q", status)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("headers after 200: %q", blank)
	}
	io.WriteString(c, "late-bytes")
	// Half-close our side: the echo server sees EOF, sends "bye", closes.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "early-bytes|late-bytesbye" {
		t.Fatalf("echoed %q", rest)
	}
	e := gw.rec.waitFor(t, events.ConnectReceived, nil)
	if e.fields[events.KeyBytesUp] != strconv.Itoa(len("early-bytes|late-bytes")) {
		t.Fatalf("bytes_up %s", e.fields[events.KeyBytesUp])
	}
}

func TestHalfCloseFromUpstream(t *testing.T) {
	// The upstream says its piece and half-closes; the client can still send.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "banner")
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	// The upstream speaks first, so the handshake reader is off for this tunnel.
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\n", port), nil)
	c, br := openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", port))
	b := make([]byte, 6)
	if _, err := io.ReadFull(br, b); err != nil || string(b) != "banner" {
		t.Fatalf("read %q %v", b, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("want EOF after upstream half-close, got %v", err)
	}
	io.WriteString(c, "still talking")
	c.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "still talking" {
			t.Fatalf("upstream got %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream never got the client's bytes")
	}
}

func TestPerClientLimit(t *testing.T) {
	echo := echoServer(t)
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\nlimits: {max_connections_per_client: 2}\n", echo), nil)
	for i := 0; i < 2; i++ {
		openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", echo))
	}
	_, _, status := rawConnect(t, gw.addr, fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", echo))
	if status != "HTTP/1.1 429 Too Many Requests" {
		t.Fatalf("third connection: %q", status)
	}
	if c := gw.srv.Counters(); c.ActiveClientConnections != 2 || c.ConnectedClients != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestGracefulShutdownDrainsThenCuts(t *testing.T) {
	echo := echoServer(t)
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\n", echo), nil)
	finishing, fbr := openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", echo))
	stuck, sbr := openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", echo))
	admin := "http://" + gw.srv.Addr("admin").String()

	done := make(chan int, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 1*time.Second)
	defer cancel()
	go func() { done <- gw.srv.Shutdown(ctx) }()

	// New connections are refused once shutdown starts.
	deadline := time.Now().Add(5 * time.Second)
	for gw.srv.Addr("proxy") != nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", gw.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting during shutdown")
	}
	// The admin endpoint stays up while tunnels drain and says not ready.
	resp, err := http.Get(admin + "/readyz")
	if err != nil {
		t.Fatalf("admin endpoint gone during drain: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during drain: %d, want 503", resp.StatusCode)
	}
	// An open tunnel keeps working during the grace period.
	io.WriteString(finishing, "ping")
	b := make([]byte, 4)
	if _, err := io.ReadFull(fbr, b); err != nil || string(b) != "ping" {
		t.Fatalf("tunnel during drain: %q %v", b, err)
	}
	finishing.(*net.TCPConn).CloseWrite()
	io.ReadAll(fbr)

	cut := <-done
	if cut != 1 {
		t.Fatalf("cut %d tunnels, want 1 (the one still open)", cut)
	}
	// The cut tunnel ends for its client (EOF or reset), well before the
	// 10 s deadline rawConnect set: a timeout would mean it was left open.
	stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(sbr); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the tunnel still open after the grace period was not closed")
		}
	}
}

func TestAdminEndpoints(t *testing.T) {
	gw := startGW(t, "allowed_hosts: [a.example]\n", nil)
	admin := "http://" + gw.srv.Addr("admin").String()
	rawConnect(t, gw.addr, "CONNECT b.example:443 HTTP/1.1\r\n\r\n")
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": "storegate_rejections_total 1",
		"/status":  `"policy_file": "test.yaml"`,
	} {
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Fatalf("%s: %d %q, want %q", path, resp.StatusCode, b, want)
		}
	}
	resp, _ := http.Get(admin + "/metrics")
	b, _ := io.ReadAll(resp.Body)
	for _, name := range []string{"storegate_active_client_connections", "storegate_connected_clients", "storegate_errors_total",
		"storegate_tunnels_total", `storegate_tunnel_bytes_total{direction="up"}`, `storegate_tunnel_bytes_total{direction="down"}`,
		`storegate_tls_listener_handshakes_total{resumed="true"} 0`, `storegate_relay_tls_handshakes_total{resumed="false"} 0`,
		"go_goroutines", "process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"} {
		if !strings.Contains(string(b), name) {
			t.Errorf("metrics lack %s", name)
		}
	}
}

func TestIdleTunnelIsClosed(t *testing.T) {
	echo := echoServer(t)
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\nlimits: {idle_timeout: 300ms}\n", echo), nil)
	c, br := openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", echo))
	io.WriteString(c, "x")
	b := make([]byte, 1)
	io.ReadFull(br, b)
	// Nothing moves now: the sweeper closes the tunnel; the read ends.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read data from an idle tunnel")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("idle tunnel was not closed")
	}
	gw.rec.waitFor(t, events.Info, nil)
}

// TestBulkIntegrity moves 24 MiB each way at once through one tunnel and
// checks every byte: the splice loop must neither lose, reorder nor duplicate.
func TestBulkIntegrity(t *testing.T) {
	const size = 24 << 20
	up, down := randomBytes(size, 1), randomBytes(size, 2)
	port, peerGot := bulkPeer(t, down)
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\n", port), nil)
	c, br := openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", port))
	c.SetDeadline(time.Now().Add(60 * time.Second))
	sendBothWays(t, c, br, up, down, peerGot)
	e := gw.rec.waitFor(t, events.ConnectReceived, nil)
	if e.fields[events.KeyBytesUp] != strconv.Itoa(size) || e.fields[events.KeyBytesDown] != strconv.Itoa(size) {
		t.Fatalf("summary counts %v", e.fields)
	}
}

// TestShutdownDuringInspection: a tunnel cut by shutdown while its handshake
// is still being read is the gateway's doing: no error event blames the
// client or the network for it.
func TestShutdownDuringInspection(t *testing.T) {
	echo := echoServer(t)
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: true, handshake_timeout: 30s}\n", echo), nil)
	c, _ := openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", echo))
	io.WriteString(c, "\x16\x03\x01") // the start of a record header, then nothing
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if cut := gw.srv.Shutdown(ctx); cut != 1 {
		t.Fatalf("cut %d tunnels, want 1", cut)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(c) // the client sees the tunnel end
	// The connection's goroutine has finished (and said whatever it says)
	// once the gateway no longer counts it.
	deadline := time.Now().Add(5 * time.Second)
	for gw.srv.Counters().ActiveClientConnections != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	gw.rec.mu.Lock()
	defer gw.rec.mu.Unlock()
	for _, e := range gw.rec.evs {
		if e.id == events.OtherError || e.id == events.NetworkError {
			t.Fatalf("event %d after a cut at shutdown: %s %v", e.id, e.msg, e.fields)
		}
	}
}
