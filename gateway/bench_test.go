package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

var benchHead = []byte("CONNECT abc.ods.opinsights.azure.com:443 HTTP/1.1\r\nHost: abc.ods.opinsights.azure.com:443\r\nUser-Agent: MMA/10.20\r\nProxy-Connection: Keep-Alive\r\n\r\n")

func BenchmarkParseHead(b *testing.B) {
	b.ReportAllocs()
	var h requestHead
	for i := 0; i < b.N; i++ {
		if err := parseHead(benchHead, 64, &h); err != nil {
			b.Fatal(err)
		}
		if _, _, err := parseAuthority(h.target); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPolicyDecision(b *testing.B) {
	snap := policy.Default(time.Now())
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := snap.CheckTarget("abc.ods.opinsights.azure.com", 443); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHotPathDoesNotAllocate guards the per-request parse and decision: they
// must not start allocating as the code changes.
func TestHotPathDoesNotAllocate(t *testing.T) {
	var h requestHead
	if n := testing.AllocsPerRun(200, func() {
		_ = parseHead(benchHead, 64, &h)
		_, _, _ = parseAuthority(h.target)
	}); n != 0 {
		t.Errorf("parseHead+parseAuthority allocate %.0f times per request", n)
	}
	snap := policy.Default(time.Now())
	if n := testing.AllocsPerRun(200, func() {
		_, _, _ = snap.CheckTarget("abc.ods.opinsights.azure.com", 443)
	}); n != 0 {
		t.Errorf("CheckTarget allocates %.0f times per decision", n)
	}
	if n := testing.AllocsPerRun(200, func() {
		_, _ = policy.NormalizeHost("abc.ods.opinsights.azure.com")
	}); n != 0 {
		t.Errorf("NormalizeHost allocates %.0f times for a canonical name", n)
	}
	if n := testing.AllocsPerRun(200, func() {
		_, _ = canonicalHost("abc.ods.opinsights.azure.com")
	}); n != 0 {
		t.Errorf("canonicalHost allocates %.0f times for a canonical name", n)
	}
}

// benchGW runs a gateway with events written to a file, as in production.
func benchGW(b *testing.B, port int) string {
	b.Helper()
	return benchGWWith(b, port, "", "proxy")
}

// benchGWWith runs a gateway for benchmarks with extra policy lines and
// returns the address of its listener named which ("proxy" or "tls").
func benchGWWith(b *testing.B, port int, extra, which string) string {
	b.Helper()
	yaml := fmt.Sprintf("version: 1\nlisten_address: 127.0.0.1\nlisten_port: 1\nadmin_address: off\nallowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\nlimits: {max_connections: 100000, max_connections_per_client: 100000}\n", port) + extra
	f, err := policy.Parse([]byte(yaml), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	f.ListenPort = 0
	snap, _ := policy.Compile(f, []byte(yaml), "bench.yaml", time.Now())
	ev, err := os.Create(filepath.Join(b.TempDir(), "events.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	log := events.NewLog(ev, events.Options{})
	srv := New(Config{Events: log})
	if err := srv.Apply(snap); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(ctx)
		cancel()
		log.Close()
		ev.Close()
	})
	return srv.Addr(which).String()
}

// sourceServer writes zeros to every connection until it is closed, or (sink
// mode) reads and discards everything.
func sourceServer(b *testing.B, sink bool) int {
	return sourceOn(b, loopback(b), sink)
}

// sourceOn is sourceServer on a listener of the caller's (TLS, say).
func sourceOn(b *testing.B, ln net.Listener, sink bool) int {
	buf := make([]byte, 256<<10)
	return serve(b, ln, func(c net.Conn) {
		defer c.Close()
		if sink {
			io.Copy(io.Discard, c)
			return
		}
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
}

func dialVia(b *testing.B, proxy string, port int) net.Conn {
	target := fmt.Sprintf("127.0.0.1:%d", port)
	if proxy == "" {
		c, err := net.Dial("tcp", target)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		b.Fatal(err)
	}
	connectOn(b, c, target)
	return c
}

// connectOn asks storegate at the other end of c for a tunnel to target.
func connectOn(b *testing.B, c net.Conn, target string) {
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", target)
	// Read exactly the 39-byte answer so no tunnel byte is buffered.
	resp := make([]byte, len("HTTP/1.1 200 Connection established\r\n\r\n"))
	if _, err := io.ReadFull(c, resp); err != nil || !strings.HasPrefix(string(resp), "HTTP/1.1 200") {
		b.Fatalf("CONNECT: %q %v", resp, err)
	}
}

// moveChunks reads (down) or writes (up) b.N chunks of 1 MiB on c, timed.
func moveChunks(b *testing.B, c net.Conn, down bool) {
	const chunk = 1 << 20
	buf := make([]byte, 256<<10)
	b.SetBytes(chunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if down {
			for got := 0; got < chunk; {
				n, err := c.Read(buf)
				if err != nil {
					b.Fatal(err)
				}
				got += n
			}
		} else {
			for sent := 0; sent < chunk; sent += len(buf) {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// BenchmarkTunnelThroughput moves bulk data through one connection, directly
// and through storegate, in both directions. Compare MB/s of the pairs.
func BenchmarkTunnelThroughput(b *testing.B) {
	for _, dir := range []string{"down", "up"} {
		for _, via := range []string{"direct", "storegate"} {
			b.Run(dir+"/"+via, func(b *testing.B) {
				port := sourceServer(b, dir == "up")
				proxy := ""
				if via == "storegate" {
					proxy = benchGW(b, port)
				}
				c := dialVia(b, proxy, port)
				defer c.Close()
				moveChunks(b, c, dir == "down")
			})
		}
	}
}

// BenchmarkTLSListenerThroughput moves bulk data through one TLS connection:
// directly to a TLS server that sources or sinks it, and through storegate's
// TLS listener, which ends the TLS and relays to a plain server (user-space
// copies, not splice). Each variant has one TLS session, so the pair
// compares what the gateway's copy costs.
func BenchmarkTLSListenerThroughput(b *testing.B) {
	pki := newPKI(b, "127.0.0.1")
	cert, err := tls.LoadX509KeyPair(pki.crtFile, pki.keyFile)
	if err != nil {
		b.Fatal(err)
	}
	client := &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"}
	for _, dir := range []string{"down", "up"} {
		for _, via := range []string{"direct", "storegate"} {
			b.Run(dir+"/"+via, func(b *testing.B) {
				var c net.Conn
				if via == "direct" {
					ln := tls.NewListener(loopback(b), &tls.Config{Certificates: []tls.Certificate{cert}})
					port := sourceOn(b, ln, dir == "up")
					c, err = tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), client)
					if err != nil {
						b.Fatal(err)
					}
				} else {
					port := sourceServer(b, dir == "up")
					addr := benchGWWith(b, port, fmt.Sprintf("tls_listener: {port: %d, cert_file: %q, key_file: %q}\n", freePort(b), pki.crtFile, pki.keyFile), "tls")
					tc, err := tls.Dial("tcp", addr, client)
					if err != nil {
						b.Fatal(err)
					}
					connectOn(b, tc, fmt.Sprintf("127.0.0.1:%d", port))
					c = tc
				}
				defer c.Close()
				moveChunks(b, c, dir == "down")
			})
		}
	}
}

// BenchmarkConnectRate measures connection set-up to first upstream byte at
// 32 concurrent clients: a TCP connect directly, or CONNECT, 200 and the
// first byte through storegate.
func BenchmarkConnectRate(b *testing.B) {
	for _, via := range []string{"direct", "storegate"} {
		b.Run(via, func(b *testing.B) {
			port := serve(b, loopback(b), func(c net.Conn) { c.Write([]byte{'!'}); io.Copy(io.Discard, c); c.Close() })
			proxy := ""
			if via == "storegate" {
				proxy = benchGW(b, port)
			}
			b.SetParallelism(16) // 32 clients on 2 cores
			var once sync.Once
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				one := make([]byte, 1)
				for pb.Next() {
					c := dialVia(b, proxy, port)
					if _, err := io.ReadFull(bufio.NewReaderSize(c, 16), one); err != nil {
						once.Do(func() { b.Error(err) })
					}
					c.Close()
				}
			})
		})
	}
}

// BenchmarkRelayHandshake is one TLS handshake between a store and its
// regional gateway, with the configurations storegate builds from their
// policies (listenerTLS with client_ca_file; loadRelayTLS with a client
// certificate): full, as every tunnel made before sessions were resumed, and
// resumed, as the tunnels after a store's first. Both sides run here, so the
// time is theirs together.
func BenchmarkRelayHandshake(b *testing.B) {
	pki := newPKI(b, "127.0.0.1")
	_, crt, key := pki.issue(b, pkix.Name{CommonName: "store-0001", Organization: []string{"Contoso"}}, nil, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	yaml := fmt.Sprintf("version: 1\nallowed_hosts: [cloud.example]\nallowed_client_certificates: [\"CN=store-0001,O=Contoso\"]\n"+
		"tls_listener: {port: 8443, cert_file: %q, key_file: %q, client_ca_file: %q}\n"+
		"relay_proxy: {address: \"https://%s\", client_cert_file: %q, client_key_file: %q, ca_file: %q}\n",
		pki.crtFile, pki.keyFile, pki.caFile, ln.Addr(), crt, key, pki.caFile)
	f, err := policy.Parse([]byte(yaml), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	snap, err := policy.Compile(f, []byte(yaml), "bench.yaml", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	srv, err := listenerTLS(snap)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := tls.Server(c, srv)
				if tc.Handshake() == nil {
					_, _ = tc.Write([]byte{1}) // after the session ticket
					_, _ = io.Copy(io.Discard, tc)
				}
			})
		}
	})
	for _, resume := range []bool{false, true} {
		b.Run(map[bool]string{false: "full", true: "resumed"}[resume], func(b *testing.B) {
			st, err := loadRelayTLS(snap)
			if err != nil {
				b.Fatal(err)
			}
			cfg := st.cfg
			if !resume {
				cfg = cfg.Clone()
				cfg.ClientSessionCache = nil
			}
			resumed := 0
			for b.Loop() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				tc := tls.Client(c, cfg)
				var one [1]byte
				if _, err := io.ReadFull(tc, one[:]); err != nil {
					b.Fatal(err)
				}
				if tc.ConnectionState().DidResume {
					resumed++
				}
				tc.Close()
			}
			b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
		})
	}
}
