package gateway

import (
	"bufio"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// tlsOverTunnel opens a CONNECT tunnel and runs a TLS client inside it.
func tlsOverTunnel(t *testing.T, proxy, target string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, _ := openTunnel(t, proxy, target)
	tc := tls.Client(c, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	return tc, tc.Handshake()
}

func TestTLSInspectionDecisions(t *testing.T) {
	pki := newPKI(t, "tls.example", "other.example")
	ln := tls.NewListener(loopback(t), &tls.Config{Certificates: []tls.Certificate{pki.cert}, MinVersion: tls.VersionTLS10})
	port := serve(t, ln, func(c net.Conn) { io.Copy(c, c); c.Close() })
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [tls.example]\nallowed_ports: [%d]\nallowed_networks: [127.0.0.1/32]\n", port),
		func(c *Config) { c.Resolver = mapResolver{"tls.example": {"127.0.0.1"}} })
	target := fmt.Sprintf("tls.example:%d", port)

	t.Run("TLS 1.3 verified", func(t *testing.T) {
		tc, err := tlsOverTunnel(t, gw.addr, target, &tls.Config{ServerName: "tls.example", RootCAs: pki.pool})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(tc, "ping")
		b := make([]byte, 4)
		if _, err := io.ReadFull(tc, b); err != nil || string(b) != "ping" {
			t.Fatalf("echo %q %v", b, err)
		}
		tc.Close()
		e := gw.rec.waitFor(t, events.TLSVerified, nil)
		if e.fields[events.KeySNI] != "tls.example" || !strings.Contains(e.fields[events.KeyTLSVersion], "1.3") {
			t.Fatalf("event 107 fields %v", e.fields)
		}
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		_, err := tlsOverTunnel(t, gw.addr, target, &tls.Config{ServerName: "tls.example", RootCAs: pki.pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			t.Fatal("TLS 1.1 handshake succeeded through the gateway")
		}
		gw.rec.waitFor(t, events.TLSVersion, nil)
	})
	t.Run("SNI mismatch refused", func(t *testing.T) {
		tc, err := tlsOverTunnel(t, gw.addr, target, &tls.Config{ServerName: "other.example", RootCAs: pki.pool})
		if err == nil {
			// The server's first flight may have passed before the decision;
			// the tunnel is closed right after it, so no data gets through.
			io.WriteString(tc, "ping")
			if _, err := io.ReadFull(tc, make([]byte, 4)); err == nil {
				t.Fatal("domain-fronted tunnel carried data")
			}
		}
		gw.rec.waitFor(t, events.NotAllowed, map[string]string{events.KeySNI: "other.example"})
	})
	t.Run("not TLS", func(t *testing.T) {
		c, br, _ := rawConnect(t, gw.addr, "CONNECT "+target+" HTTP/1.1\r\n\r\n")
		br.ReadString('\n')
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: tls.example\r\n\r\n")
		if b, _ := io.ReadAll(br); len(b) != 0 {
			t.Fatalf("got %q back from a non-TLS tunnel", b)
		}
		gw.rec.waitFor(t, events.TLSParse, nil)
	})
	if c := gw.srv.Counters(); c.Rejections < 3 {
		t.Fatalf("TLS validation failures not counted as rejections: %+v", c)
	}
}

// regionalGW runs a gateway with a TLS listener that requires client
// certificates from pki's CA and allows the given subjects.
func regionalGW(t *testing.T, pki *testPKI, upstreamPort int, subjects string) (*testGW, string) {
	t.Helper()
	gw := startGW(t, regionalPolicy(pki, upstreamPort, freePort(t), subjects),
		func(c *Config) { c.Resolver = mapResolver{"cloud.example": {"127.0.0.1"}} })
	return gw, gw.srv.Addr("tls").String()
}

func regionalPolicy(pki *testPKI, upstreamPort, tlsPort int, subjects string) string {
	return fmt.Sprintf(`allowed_hosts: [cloud.example]
allowed_ports: [%d]
allowed_networks: [127.0.0.1/32]
allowed_client_certificates: [%s]
tls_listener: {port: %d, cert_file: %q, key_file: %q, client_ca_file: %q}
`, upstreamPort, subjects, tlsPort, pki.crtFile, pki.keyFile, pki.caFile)
}

func TestTLSListenerWithClientCertificates(t *testing.T) {
	pki := newPKI(t, "127.0.0.1", "cloud.example")
	upstream := tlsUpstream(t, pki, "through the HTTPS proxy")
	gw, tlsAddr := regionalGW(t, pki, upstream, `"CN=store-0001,O=Contoso", "CN=store-0002+OU=tills,O=Contoso"`)
	good, goodCrt, goodKey := pki.issue(t, pkix.Name{CommonName: "store-0001", Organization: []string{"Contoso"}}, nil, true)
	bad, _, _ := pki.issue(t, pkix.Name{CommonName: "intruder", Organization: []string{"Contoso"}}, nil, true)

	get := func(cert *tls.Certificate) (string, error) {
		cfg := &tls.Config{RootCAs: pki.pool}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			Proxy: http.ProxyURL(mustURL("https://" + tlsAddr)), TLSClientConfig: cfg, DisableKeepAlives: true,
		}}
		resp, err := client.Get(fmt.Sprintf("https://cloud.example:%d/", upstream))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	if body, err := get(&good); err != nil || body != "through the HTTPS proxy" {
		t.Fatalf("allowed store: %q %v", body, err)
	}
	// A multi-valued RDN (CN and OU in one RDN) is compared as written, as
	// in a tunnel, not as pkix.Name flattens it.
	multiDN, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "Contoso"}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "store-0002"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 11}, Value: "tills"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	multi, _, _ := pki.issueRaw(t, pkix.Name{}, multiDN, nil, true)
	if body, err := get(&multi); err != nil || body != "through the HTTPS proxy" {
		t.Fatalf("allowed store with a multi-valued RDN: %q %v", body, err)
	}
	if _, err := get(&bad); err == nil {
		t.Fatal("a certificate with a subject not on the list got through")
	}
	gw.rec.waitFor(t, events.NotAllowed, map[string]string{events.KeySubject: "CN=intruder,O=Contoso"})
	if _, err := get(nil); err == nil {
		t.Fatal("a client without a certificate got through")
	}

	// curl speaks HTTPS to the proxy, with its client certificate.
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (make test-deps installs it)")
	}
	out, err := exec.Command(curl, "-sS", "--max-time", "10",
		"--proxy", "https://"+tlsAddr, "--proxy-cacert", pki.caFile, "--proxy-cert", goodCrt, "--proxy-key", goodKey,
		"--cacert", pki.caFile, fmt.Sprintf("https://cloud.example:%d/", upstream)).CombinedOutput()
	if err != nil || string(out) != "through the HTTPS proxy" {
		t.Fatalf("curl --proxy https://: %v: %s", err, out)
	}
	// The plain listener runs beside the TLS one.
	if _, _, status := rawConnect(t, gw.addr, fmt.Sprintf("CONNECT cloud.example:%d HTTP/1.1\r\n\r\n", upstream)); status != "HTTP/1.1 200 Connection established" {
		t.Fatalf("plain listener: %q", status)
	}
}

func TestStoreToRegionalOverMutualTLS(t *testing.T) {
	pki := newPKI(t, "127.0.0.1", "cloud.example")
	upstream := tlsUpstream(t, pki, "terminal -> store -> regional -> cloud")
	regional, tlsAddr := regionalGW(t, pki, upstream, `"CN=store-0001,O=Contoso"`)
	_, crt, key := pki.issue(t, pkix.Name{CommonName: "store-0001", Organization: []string{"Contoso"}}, nil, true)
	_, badCrt, badKey := pki.issue(t, pkix.Name{CommonName: "store-9999", Organization: []string{"Contoso"}}, nil, true)

	storePolicy := func(crt, key string) string {
		return fmt.Sprintf("allowed_hosts: [cloud.example]\nallowed_ports: [%d]\nrelay_proxy: {address: \"https://%s\", client_cert_file: %q, client_key_file: %q, ca_file: %q}\n",
			upstream, tlsAddr, crt, key, pki.caFile)
	}
	store := startGW(t, storePolicy(crt, key), func(c *Config) { c.Resolver = mapResolver{} })
	if b := getVia(t, store.addr, pki.pool, fmt.Sprintf("https://cloud.example:%d/", upstream)); b != "terminal -> store -> regional -> cloud" {
		t.Fatalf("body %q", b)
	}

	// The next tunnels resume the store's TLS session with the regional
	// gateway: no certificate is signed or verified again.
	for range 2 {
		if b := getVia(t, store.addr, pki.pool, fmt.Sprintf("https://cloud.example:%d/", upstream)); b != "terminal -> store -> regional -> cloud" {
			t.Fatalf("body %q", b)
		}
	}
	sc, rc := store.srv.Counters(), regional.srv.Counters()
	if sc.RelayHandshakes != 3 || sc.RelayResumed != 2 || rc.ListenerHandshakes != 3 || rc.ListenerResumed != 2 {
		t.Fatalf("handshakes: store %d (%d resumed), regional %d (%d resumed); want 3 (2) each",
			sc.RelayHandshakes, sc.RelayResumed, rc.ListenerHandshakes, rc.ListenerResumed)
	}

	// A store whose certificate the regional gateway does not accept.
	intruder := startGW(t, storePolicy(badCrt, badKey), func(c *Config) { c.Resolver = mapResolver{} })
	_, _, status := rawConnect(t, intruder.addr, fmt.Sprintf("CONNECT cloud.example:%d HTTP/1.1\r\n\r\n", upstream))
	if status != "HTTP/1.1 502 Bad Gateway" {
		t.Fatalf("store with a refused certificate: %q", status)
	}
	intruder.rec.waitFor(t, events.NetworkError, nil)

	// A reload that stops accepting the store ends its sessions too: it
	// cannot resume one from before, and its certificate is checked again.
	_, port, _ := net.SplitHostPort(tlsAddr)
	tlsPort, _ := strconv.Atoi(port)
	if err := regional.srv.Apply(testSnap(t, regionalPolicy(pki, upstream, tlsPort, `"CN=store-0002,O=Contoso"`))); err != nil {
		t.Fatal(err)
	}
	_, _, status = rawConnect(t, store.addr, fmt.Sprintf("CONNECT cloud.example:%d HTTP/1.1\r\n\r\n", upstream))
	if status != "HTTP/1.1 502 Bad Gateway" {
		t.Fatalf("store no longer allowed, after a reload: %q", status)
	}
	if rc := regional.srv.Counters(); rc.ListenerResumed != 2 {
		t.Fatalf("a session from before the reload was resumed (%d resumed)", rc.ListenerResumed)
	}
}

func TestOpenSSLThroughProxy(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is required (make test-deps installs it)")
	}
	pki := newPKI(t, "tls.example")
	port := tlsUpstream(t, pki, "x")
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [tls.example]\nallowed_ports: [%d]\nallowed_networks: [127.0.0.1/32]\n", port),
		func(c *Config) { c.Resolver = mapResolver{"tls.example": {"127.0.0.1"}} })
	for _, c := range []struct {
		flag string
		ok   bool
		id   events.ID
	}{{"-tls1_3", true, events.TLSVerified}, {"-tls1_2", true, events.TLSVerified}} {
		cmd := exec.Command(openssl, "s_client", "-proxy", gw.addr, "-connect", fmt.Sprintf("tls.example:%d", port),
			"-servername", "tls.example", "-CAfile", pki.caFile, "-verify_return_error", c.flag)
		cmd.Stdin = strings.NewReader("Q\n")
		out, err := cmd.CombinedOutput()
		if (err == nil) != c.ok || !strings.Contains(string(out), "Verify return code: 0") {
			t.Fatalf("openssl %s: %v\n%s", c.flag, err, out)
		}
		gw.rec.waitFor(t, c.id, map[string]string{events.KeySNI: "tls.example"})
	}
}

// TestClientCertificateInTunnel: the upstream asks for a client certificate
// under TLS 1.2; the gateway reads the client's Certificate message in the
// tunnel and checks its subject, with openssl s_client as the client.
func TestClientCertificateInTunnel(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is required (make test-deps installs it)")
	}
	pki := newPKI(t, "pos.example")
	ln := tls.NewListener(loopback(t), &tls.Config{
		Certificates: []tls.Certificate{pki.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
	})
	port := serve(t, ln, func(c net.Conn) { c.(*tls.Conn).Handshake(); io.Copy(io.Discard, c); c.Close() })
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [pos.example]\nallowed_ports: [%d]\nallowed_networks: [127.0.0.1/32]\nallowed_client_certificates: [\"CN=pos-0001,O=Contoso\"]\n", port),
		func(c *Config) { c.Resolver = mapResolver{"pos.example": {"127.0.0.1"}} })
	_, goodCrt, goodKey := pki.issue(t, pkix.Name{CommonName: "pos-0001", Organization: []string{"Contoso"}}, nil, true)
	_, badCrt, badKey := pki.issue(t, pkix.Name{CommonName: "pos-6666", Organization: []string{"Contoso"}}, nil, true)
	run := func(crt, key string) {
		args := []string{"s_client", "-proxy", gw.addr, "-connect", fmt.Sprintf("pos.example:%d", port),
			"-servername", "pos.example", "-CAfile", pki.caFile, "-tls1_2"}
		if crt != "" {
			args = append(args, "-cert", crt, "-key", key)
		}
		cmd := exec.Command(openssl, args...)
		cmd.Stdin = strings.NewReader("Q\n")
		cmd.Run() // the decision is read from the gateway's events
	}
	run(goodCrt, goodKey)
	e := gw.rec.waitFor(t, events.TLSVerified, map[string]string{events.KeySNI: "pos.example"})
	if !strings.Contains(e.fields[events.KeySubject], "pos-0001") {
		t.Fatalf("event 107 does not name the subject: %v", e.fields)
	}
	run(badCrt, badKey)
	e = gw.rec.waitFor(t, events.NotAllowed, map[string]string{events.KeySNI: "pos.example"})
	if !strings.Contains(e.fields[events.KeySubject], "pos-6666") {
		t.Fatalf("event 105 does not name the refused subject: %v", e.fields)
	}
	run("", "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		gw.rec.mu.Lock()
		for _, ev := range gw.rec.evs {
			if ev.id == events.NotAllowed {
				n++
			}
		}
		gw.rec.mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a tunnel without a client certificate was not refused")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFrontedHelloNeverReachesUpstream: a ClientHello naming another host
// than the CONNECT is refused before any byte of it is forwarded.
func TestFrontedHelloNeverReachesUpstream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		got <- len(b)
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [shop.example]\nallowed_ports: [%d]\nallowed_networks: [127.0.0.1/32]\n", port),
		func(c *Config) { c.Resolver = mapResolver{"shop.example": {"127.0.0.1"}} })
	_, err = tlsOverTunnel(t, gw.addr, fmt.Sprintf("shop.example:%d", port), &tls.Config{ServerName: "hidden.example", InsecureSkipVerify: true})
	if err == nil {
		t.Fatal("fronted handshake completed")
	}
	gw.rec.waitFor(t, events.NotAllowed, map[string]string{events.KeySNI: "hidden.example", events.KeyReason: "sni_mismatch"})
	select {
	case n := <-got:
		if n != 0 {
			t.Fatalf("the upstream received %d bytes of a refused hello", n)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the upstream connection was not closed")
	}
}

// TestOpenSSLToIPLiteral: openssl s_client -connect IP:port puts the address
// in SNI (RFC 6066 does not allow it, but it names exactly the host): the
// gateway lets that through, and refuses an SNI naming another address.
func TestOpenSSLToIPLiteral(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is required (make test-deps installs it)")
	}
	pki := newPKI(t, "tls.example")
	port := tlsUpstream(t, pki, "x")
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\n", port), nil)
	run := func(extra ...string) (string, error) {
		args := append([]string{"s_client", "-proxy", gw.addr, "-connect", fmt.Sprintf("127.0.0.1:%d", port), "-tls1_3"}, extra...)
		cmd := exec.Command(openssl, args...)
		cmd.Stdin = strings.NewReader("Q\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(); err != nil || !strings.Contains(out, "TLSv1.3") {
		t.Fatalf("openssl to the IP literal: %v\n%s", err, out)
	}
	gw.rec.waitFor(t, events.TLSVerified, map[string]string{events.KeySNI: "127.0.0.1"})
	if out, err := run("-servername", "127.0.0.2"); err == nil && strings.Contains(out, "TLSv1.3") {
		t.Fatalf("an SNI naming another address got through:\n%s", out)
	}
	gw.rec.waitFor(t, events.NotAllowed, map[string]string{events.KeySNI: "127.0.0.2"})
}

// TestTLSListenerRefusesInsideTLS: a regional gateway at its connection
// limit answers a store on its TLS listener with a 503 the store can read
// (inside TLS), not with plain bytes its TLS client reports as a broken
// handshake.
func TestTLSListenerRefusesInsideTLS(t *testing.T) {
	pki := newPKI(t, "127.0.0.1", "cloud.example")
	upstream := tlsUpstream(t, pki, "x")
	tlsPort := freePort(t)
	gw := startGW(t, fmt.Sprintf(`allowed_hosts: [cloud.example]
allowed_ports: [%d]
allowed_client_certificates: ["CN=store-0001"]
tls_listener: {port: %d, cert_file: %q, key_file: %q, client_ca_file: %q}
limits: {max_connections: 1}
`, upstream, tlsPort, pki.crtFile, pki.keyFile, pki.caFile), nil)
	// One plain connection takes the only slot.
	hold, err := net.Dial("tcp", gw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	deadline := time.Now().Add(5 * time.Second)
	for gw.srv.Counters().ActiveClientConnections != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	store, _, _ := pki.issue(t, pkix.Name{CommonName: "store-0001"}, nil, true)
	c, err := tls.Dial("tcp", gw.srv.Addr("tls").String(), &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{store}, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake with a full gateway: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT cloud.example:%d HTTP/1.1\r\nHost: cloud.example:%d\r\n\r\n", upstream, upstream)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the refusal inside TLS: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %s, want the limit's 503 or 429", resp.Status)
	}
}

// tlsListenerGW runs a gateway whose TLS listener takes store-0001's
// certificate and tunnels to 127.0.0.1:port without inspection (the
// payloads below are not TLS), and returns a TLS client to that listener.
func tlsListenerGW(t *testing.T, port int) (*testGW, func() *tls.Conn) {
	t.Helper()
	pki := newPKI(t, "127.0.0.1")
	gw := startGW(t, fmt.Sprintf(`allowed_hosts: [127.0.0.1]
allowed_ports: [%d]
allowed_client_certificates: ["CN=store-0001"]
tls: {inspect: false}
tls_listener: {port: %d, cert_file: %q, key_file: %q, client_ca_file: %q}
`, port, freePort(t), pki.crtFile, pki.keyFile, pki.caFile), nil)
	store, _, _ := pki.issue(t, pkix.Name{CommonName: "store-0001"}, nil, true)
	return gw, func() *tls.Conn {
		c, err := tls.Dial("tcp", gw.srv.Addr("tls").String(), &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{store}, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(60 * time.Second))
		fmt.Fprintf(c, "CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port, port)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK || br.Buffered() != 0 {
			t.Fatalf("CONNECT on the TLS listener: %v %v", resp, err)
		}
		return c
	}
}

// TestTLSListenerBulkIntegrity moves 8 MiB each way at once through a tunnel
// on the TLS listener (user-space copies, not splice) and checks every byte,
// and that TLS close_notify and TCP half-close pass through.
func TestTLSListenerBulkIntegrity(t *testing.T) {
	up, down := randomBytes(8<<20, 1), randomBytes(8<<20, 2)
	port, peerGot := bulkPeer(t, down)
	_, dial := tlsListenerGW(t, port)
	c := dial()
	sendBothWays(t, c, c, up, down, peerGot)
}

// TestIdleTLSTunnelsHoldNoLargeBuffer: after a burst each way, tunnels on the
// TLS listener that go quiet give their 32 KiB copy buffers back (io.Copy
// held two per tunnel for its whole life).
func TestIdleTLSTunnelsHoldNoLargeBuffer(t *testing.T) {
	const burst = 256 << 10
	port := serve(t, loopback(t), func(c net.Conn) { io.Copy(c, c) })
	_, dial := tlsListenerGW(t, port)
	before := largeInUse.Load()
	for range 4 {
		c := dial()
		go c.Write(make([]byte, burst))
		if _, err := io.ReadFull(c, make([]byte, burst)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for largeInUse.Load() != before || gatherInUse.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("4 idle tunnels hold %d large buffers and %d gather buffers", largeInUse.Load()-before, gatherInUse.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
