package tlspeek

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// parseHello runs one ClientHello through a session, as Inspect does.
func parseHello(s *session, hello []byte) error {
	*s = session{cfg: Config{MaxBytes: DefaultMaxBytes}}
	s.client = stream{side: SideClient, max: DefaultMaxBytes}
	s.server = stream{side: SideUpstream, max: DefaultMaxBytes}
	_, err := s.process(SideClient, hello, 0)
	return err
}

// Go 1.26's default ClientHello (X25519MLKEM768 key share, ~1.5 KB).
func pqHello(tb testing.TB) []byte {
	return goClientHello(tb, &tls.Config{ServerName: "pos-backend.example.com"})
}

// Parsing a ClientHello allocates only the SNI string.
func TestParseClientHelloAllocs(t *testing.T) {
	hello := pqHello(t)
	var s session
	if err := parseHello(&s, hello); err != nil || s.res.SNI != "pos-backend.example.com" || s.phase != phaseServerHello {
		t.Fatalf("parse: %v %+v", err, s.res)
	}
	if n := testing.AllocsPerRun(100, func() { _ = parseHello(&s, hello) }); n > 1 {
		t.Fatalf("%v allocations per ClientHello parse, want at most 1 (the SNI)", n)
	}
	split := oneByteRecordsOf(hello)
	if n := testing.AllocsPerRun(20, func() { _ = parseHello(&s, split) }); n > 2 {
		t.Fatalf("%v allocations for a ClientHello in 1-byte records, want at most 2", n)
	}
}

// oneByteRecordsOf re-records a single handshake record into 1-byte records.
func oneByteRecordsOf(rec []byte) []byte {
	var out []byte
	for _, b := range rec[5:] {
		out = append(out, rec[0], rec[1], rec[2], 0, 1, b)
	}
	return out
}

func BenchmarkParseClientHello(b *testing.B) {
	hello := pqHello(b)
	var s session
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		if err := parseHello(&s, hello); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseClientHello1ByteRecords(b *testing.B) {
	hello := oneByteRecordsOf(pqHello(b))
	var s session
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		if err := parseHello(&s, hello); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInspect runs a whole inspection over in-memory connections
// replaying a real TLS 1.3 handshake.
func BenchmarkInspect(b *testing.B) {
	for _, name := range []string{"go-tls13-pq", "go-tls12-cert"} {
		b.Run(name, func(b *testing.B) {
			client, server, flags := readSeed(b, "testdata/fuzz/FuzzInspect/"+name)
			cfg := Config{NeedClientCert: flags&1 != 0}
			b.ReportAllocs()
			for b.Loop() {
				c := &scriptConn{t: b, data: client, chunk: 1 << 20}
				u := &scriptConn{t: b, data: server, chunk: 1 << 20}
				if name == "go-tls12-cert" {
					c.chunk, u.chunk = 1, 1 // keep the two-flight replay causal
				}
				if _, err := Inspect(c, u, cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoopbackHandshake measures a full TLS 1.3 handshake plus one
// round trip through the test relay on loopback, with and without Inspect.
func BenchmarkLoopbackHandshake(b *testing.B) {
	p := newPKI(b)
	for _, inspect := range []bool{false, true} {
		name := "plain"
		if inspect {
			name = "inspected"
		}
		b.Run(name, func(b *testing.B) {
			srv := newBenchServer(b, serverConfig(p, tls.NoClientCert))
			rl := newBenchRelay(b, srv, inspect)
			ccfg := clientConfig(p, tls.VersionTLS13, false)
			b.ReportAllocs()
			for b.Loop() {
				c, err := tls.Dial("tcp", rl, ccfg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// newBenchServer answers each TLS connection with "hello\n" and closes.
func newBenchServer(b *testing.B, cfg *tls.Config) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte("hello\n"))
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// newBenchRelay is the test relay without the bookkeeping.
func newBenchRelay(b *testing.B, upstream string, inspect bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer up.Close()
				if inspect {
					res, err := Inspect(c, up, Config{})
					if err != nil || !Decide(res, Rules{Host: "example.test"}).OK {
						return
					}
				}
				go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String()
}
