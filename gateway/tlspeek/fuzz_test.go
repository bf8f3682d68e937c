package tlspeek

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzInspect from live handshakes (Go, openssl, curl)")

// scriptConn is an in-memory net.Conn that serves a fixed byte stream in
// chunks, then EOF or, like a peer gone silent, a passed deadline. It
// fails the test if Inspect reads or writes without a deadline set.
type scriptConn struct {
	t         testing.TB
	data      []byte
	chunk     int
	silentEnd bool // at the end, act as a silent peer: the deadline passes
	read      int
	reads     int
	written   bytes.Buffer
	deadline  time.Time
	sets      int
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.deadline.IsZero() {
		c.t.Fatal("Read without a deadline: a silent peer would block it forever")
	}
	c.reads++
	if c.read == len(c.data) {
		if c.silentEnd {
			return 0, os.ErrDeadlineExceeded
		}
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.chunk)], c.data[c.read:])
	c.read += n
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	if c.deadline.IsZero() {
		c.t.Fatal("Write without a deadline")
	}
	return c.written.Write(p)
}

func (c *scriptConn) SetDeadline(t time.Time) error     { c.deadline, c.sets = t, c.sets+1; return nil }
func (c *scriptConn) SetReadDeadline(t time.Time) error { return c.SetDeadline(t) }
func (c *scriptConn) SetWriteDeadline(time.Time) error  { return nil }
func (c *scriptConn) Close() error                      { return nil }
func (c *scriptConn) LocalAddr() net.Addr               { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr              { return &net.TCPAddr{} }

// FuzzInspect drives Inspect with arbitrary client and server streams cut
// into arbitrary reads. It must never panic, read past the cap, touch a
// connection without a deadline, keep a deadline, forward anything but an
// unchanged prefix of what it read, or keep bytes back on success.
func FuzzInspect(f *testing.F) {
	f.Add(goClientHello(f, &tls.Config{ServerName: "example.test"}), []byte{}, byte(0), byte(0))
	f.Add(sslv2Hello(VersionTLS10), []byte{}, byte(0), byte(0))
	f.Add(sslv3Hello(), []byte{}, byte(0), byte(1))
	f.Add(handshakeRecord(msgClientHello, helloBody(0x0303, []uint16{0x2a2a, 0x1301}, ext(0x0a0a, nil),
		sniExt("example.com"), versionsExt(0x7a7a, 0x0304))), []byte{}, byte(2), byte(0))
	f.Fuzz(func(t *testing.T, client, server []byte, chunk, flags byte) {
		cfg := Config{NeedClientCert: flags&1 != 0, AllowNotTLS: flags&2 != 0}
		if flags&4 != 0 {
			cfg.MaxBytes = 700
		}
		maxBytes := cfg.withDefaults().MaxBytes
		c := &scriptConn{t: t, data: client, chunk: int(chunk) + 1, silentEnd: flags&8 != 0}
		u := &scriptConn{t: t, data: server, chunk: int(flags>>4)*97 + 1, silentEnd: flags&8 != 0}
		res, err := Inspect(c, u, cfg)

		if c.read > maxBytes || u.read > maxBytes {
			t.Fatalf("read %d/%d bytes, cap %d", c.read, u.read, maxBytes)
		}
		if c.reads > len(client)+2 || u.reads > len(server)+2 {
			t.Fatalf("%d/%d reads for %d/%d bytes", c.reads, u.reads, len(client), len(server))
		}
		if !c.deadline.IsZero() || !u.deadline.IsZero() {
			t.Fatal("deadline left set")
		}
		up, down := u.written.Bytes(), c.written.Bytes()
		if !bytes.Equal(up, client[:len(up)]) || len(up) > c.read || !bytes.Equal(down, server[:len(down)]) || len(down) > u.read {
			t.Fatal("forwarded bytes are not an unchanged prefix of those read")
		}
		if res.BytesUp != int64(len(up)) || res.BytesDown != int64(len(down)) {
			t.Fatalf("counted %d/%d, forwarded %d/%d", res.BytesUp, res.BytesDown, len(up), len(down))
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Kind < KindNotTLS || e.Kind > KindClosed || e.Error() == "" {
				t.Fatalf("untyped error %v", err)
			}
			if d := ErrorDecision(err); d.OK || d.Event == 0 {
				t.Fatalf("error %v allowed: %+v", err, d)
			}
			return
		}
		if len(up) != c.read || len(down) != u.read {
			t.Fatalf("success with bytes held back: read %d/%d, forwarded %d/%d", c.read, u.read, len(up), len(down))
		}
		if res.Version == 0 || res.ClientMaxVersion < VersionTLS10 {
			t.Fatalf("success without versions: %+v", res)
		}
		Decide(res, Rules{AllowedSubjects: &Subjects{entries: []subjectEntry{{cn: "x"}}}})
	})
}

// FuzzParseSubjects: the DN parser never panics, and an accepted entry
// matches a certificate whose subject is printed the same way.
func FuzzParseSubjects(f *testing.F) {
	for _, s := range []string{"CN=pos-0001,O=Contoso,C=SE", "C = SE, O = Contoso, CN = pos-0001", "/C=SE/CN=a",
		`CN=a\,b+OU=c;O=d`, "1.2.840.113549.1.9.1=#1603614062,CN=x", "pos-0001", `CN=\20lead\20`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		subj, err := ParseSubjects([]string{s})
		if err != nil {
			return
		}
		if _, ok := subj.Match(&ClientCert{Subject: s, CommonName: s}); !ok {
			t.Fatalf("%q does not match itself", s)
		}
	})
}

// seedCapture is one real handshake: the client's and the server's bytes.
type seedCapture struct {
	name           string
	client, server []byte
	flags          byte
}

// captureSeeds runs real handshakes through the test relay and keeps the
// inspected bytes of each direction (plus a little of what follows).
func captureSeeds(t *testing.T) []seedCapture {
	p := newPKI(t)
	ca, cert, key := p.files(t)
	var out []seedCapture
	run := func(name string, auth tls.ClientAuthType, curves []tls.CurveID, flags byte, client func(addr string)) {
		scfg := serverConfig(p, auth)
		scfg.CurvePreferences = curves
		srv := startTLSServerOpts(t, scfg, true)
		rl := startRelay(t, srv.ln.Addr().String(), relayOpts{cfg: Config{NeedClientCert: flags&1 != 0},
			rules: Rules{Host: p.serverName, MinVersion: VersionTLS10, AllowUnobservableCert: true}})
		client(rl.addr())
		o := rl.next(t)
		sc := srv.next(t)
		if o.err != nil {
			t.Fatalf("%s: %v", name, o.err)
		}
		cb, sb := sc.tap.readBytes(), sc.tap.writtenBytes()
		cb = cb[:min(len(cb), int(o.res.BytesUp)+64)]
		sb = sb[:min(len(sb), int(o.res.BytesDown)+64)]
		out = append(out, seedCapture{name: name, client: cb, server: sb, flags: flags})
	}
	goc := func(version uint16, withCert bool) func(string) {
		return func(addr string) { _, _ = goClient(t, addr, clientConfig(p, version, withCert), nil) }
	}
	run("go-tls13-pq", tls.NoClientCert, nil, 0, goc(tls.VersionTLS13, false))
	run("go-tls13-hrr", tls.NoClientCert, []tls.CurveID{tls.CurveP256}, 0, goc(tls.VersionTLS13, false))
	run("go-tls13-cert", tls.RequireAndVerifyClientCert, nil, 1, goc(tls.VersionTLS13, true))
	run("go-tls12-cert", tls.RequireAndVerifyClientCert, nil, 1, goc(tls.VersionTLS12, true))
	run("go-tls10", tls.NoClientCert, nil, 0, goc(tls.VersionTLS10, false))
	ossl := func(version string, withCert bool) func(string) {
		return func(addr string) {
			args := []string{"s_client", "-connect", addr, "-servername", p.serverName, "-CAfile", ca, version}
			if withCert {
				args = append(args, "-cert", cert, "-key", key)
			}
			runTool(t, "openssl", args...)
		}
	}
	run("openssl-tls13", tls.RequestClientCert, nil, 1, ossl("-tls1_3", false))
	run("openssl-tls12-cert", tls.RequestClientCert, nil, 1, ossl("-tls1_2", true))
	run("curl-tls12-cert", tls.RequireAndVerifyClientCert, nil, 1, func(addr string) {
		port := addr[bytes.LastIndexByte([]byte(addr), ':')+1:]
		runTool(t, "curl", "-sS", "--http0.9", "--max-time", "20", "--tls-max", "1.2", "--cacert", ca,
			"--cert", cert, "--key", key, "--resolve", p.serverName+":"+port+":127.0.0.1", "https://"+p.serverName+":"+port+"/")
	})
	return out
}

// variants derives truncated and bit-flipped inputs from a capture.
func variants(c seedCapture) []seedCapture {
	out := []seedCapture{c}
	add := func(suffix string, client, server []byte, flags byte) {
		out = append(out, seedCapture{name: c.name + "-" + suffix, client: client, server: server, flags: flags})
	}
	for _, cut := range []int{1, 5, 9, len(c.client) / 2} {
		if cut < len(c.client) {
			add("client-cut-"+strconv.Itoa(cut), c.client[:cut], c.server, c.flags|8)
		}
	}
	add("server-cut-half", c.client, c.server[:len(c.server)/2], c.flags)
	for _, at := range []int{3, 4, 8, 43, len(c.client) / 3} {
		if at < len(c.client) {
			b := bytes.Clone(c.client)
			b[at] ^= 0x10
			add("client-flip-"+strconv.Itoa(at), b, c.server, c.flags)
		}
	}
	for _, at := range []int{8, 45, 80} {
		if at < len(c.server) {
			b := bytes.Clone(c.server)
			b[at] ^= 0x01
			add("server-flip-"+strconv.Itoa(at), c.client, b, c.flags)
		}
	}
	add("1-byte-reads", c.client, c.server, c.flags) // chunk 0 means 1-byte reads
	return out
}

// TestFuzzSeeds checks the committed corpus is there; with -update-seeds it
// first rewrites it from live handshakes.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzInspect")
	if *updateSeeds {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range captureSeeds(t) {
			for _, v := range variants(c) {
				chunk := byte(255)
				if bytes.HasSuffix([]byte(v.name), []byte("1-byte-reads")) {
					chunk = 0
				}
				body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(%q)\nbyte(%q)\nbyte(%q)\n", v.client, v.server, chunk, v.flags)
				if err := os.WriteFile(filepath.Join(dir, v.name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) < 40 {
		t.Fatalf("seed corpus %s: %d files, %v (regenerate with go test -run TestFuzzSeeds -update-seeds)", dir, len(entries), err)
	}
}

// readSeed parses one corpus file written by TestFuzzSeeds.
func readSeed(t testing.TB, path string) (client, server []byte, flags byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) != 5 {
		t.Fatalf("%s: %d lines", path, len(lines))
	}
	unq := func(line []byte, prefix string) string {
		s, err := strconv.Unquote(string(bytes.TrimSuffix(bytes.TrimPrefix(line, []byte(prefix+"(")), []byte(")"))))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return s
	}
	return []byte(unq(lines[1], "[]byte")), []byte(unq(lines[2], "[]byte")), unq(lines[4], "byte")[0]
}

// The committed captures of real clients replay to a clean inspection.
func TestReplayCaptures(t *testing.T) {
	want := map[string]uint16{
		"go-tls13-pq": VersionTLS13, "go-tls13-hrr": VersionTLS13, "go-tls13-cert": VersionTLS13,
		"go-tls12-cert": VersionTLS12, "go-tls10": VersionTLS10, "openssl-tls13": VersionTLS13,
		"openssl-tls12-cert": VersionTLS12, "curl-tls12-cert": VersionTLS12,
	}
	for name, version := range want {
		client, server, flags := readSeed(t, filepath.Join("testdata", "fuzz", "FuzzInspect", name))
		// One-byte reads keep the replay causal: Inspect stops reading the
		// client once its hello is whole, as a live client would then wait
		// for the server. Bigger reads would deliver the client's next
		// flight before the server flight that asks for it.
		c := &scriptConn{t: t, data: client, chunk: 1}
		u := &scriptConn{t: t, data: server, chunk: 1}
		res, err := Inspect(c, u, Config{NeedClientCert: flags&1 != 0})
		if err != nil || res.Version != version || res.SNI != "example.test" {
			t.Fatalf("%s in 1-byte reads: %v %+v", name, err, res)
		}
		if strings.HasSuffix(name, "tls12-cert") && (res.ClientCert == nil || res.ClientCert.CommonName != "pos-0001") {
			t.Fatalf("%s: client cert %+v", name, res.ClientCert)
		}
	}
}
