package tlspeek

import (
	"bytes"
	"errors"
	"testing"
)

// ext builds one extension.
func ext(typ uint16, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}, data...)
}

func u16s(vs ...uint16) []byte {
	var b []byte
	for _, v := range vs {
		b = append(b, byte(v>>8), byte(v))
	}
	return b
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0, byte(len(n)>>8), byte(len(n)))
		list = append(list, n...)
	}
	return ext(extServerName, append(u16s(uint16(len(list))), list...))
}

func versionsExt(vs ...uint16) []byte {
	return ext(extSupportedVersions, append([]byte{byte(2 * len(vs))}, u16s(vs...)...))
}

// helloBody builds a ClientHello body; exts == nil omits the extensions block.
func helloBody(legacy uint16, suites []uint16, exts ...[]byte) []byte {
	b := u16s(legacy)
	b = append(b, bytes.Repeat([]byte{7}, 32)...)
	b = append(b, 32)
	b = append(b, bytes.Repeat([]byte{9}, 32)...)
	b = append(b, u16s(uint16(2*len(suites)))...)
	b = append(b, u16s(suites...)...)
	b = append(b, 1, 0)
	return appendExts(b, exts)
}

// serverHelloBody builds a TLS 1.2-format ServerHello body choosing
// TLS_AES_128_GCM_SHA256; exts == nil omits the extensions block.
func serverHelloBody(random string, exts ...[]byte) []byte {
	b := u16s(0x0303)
	b = append(b, random...)
	b = append(b, 0)
	b = append(b, u16s(0x1301)...)
	b = append(b, 0)
	return appendExts(b, exts)
}

// appendExts appends the extensions block (length, then exts) unless exts is nil.
func appendExts(b []byte, exts [][]byte) []byte {
	if exts == nil {
		return b
	}
	var all []byte
	for _, e := range exts {
		all = append(all, e...)
	}
	b = append(b, u16s(uint16(len(all)))...)
	return append(b, all...)
}

// tls13ServerHello is a whole ServerHello record choosing TLS 1.3.
func tls13ServerHello() []byte {
	return handshakeRecord(msgServerHello, serverHelloBody(string(bytes.Repeat([]byte{1}, 32)), ext(extSupportedVersions, u16s(0x0304))))
}

func TestParseClientHello(t *testing.T) {
	suites := []uint16{0x2a2a, 0x1301, 0xc02f} // GREASE first, as Chrome sends
	cases := []struct {
		name    string
		body    []byte
		ok      bool
		version uint16
		sni     string
	}{
		{"grease everywhere", helloBody(0x0303, suites, ext(0x0a0a, nil), sniExt("example.com"),
			versionsExt(0x7a7a, 0x0304, 0x0303), ext(0xfafa, []byte{0})), true, VersionTLS13, "example.com"},
		{"grease-only versions", helloBody(0x0303, suites, versionsExt(0x1a1a)), false, 0, ""},
		{"tls1.2 without supported_versions", helloBody(0x0303, suites, sniExt("a.example")), true, VersionTLS12, "a.example"},
		{"no extensions block", helloBody(0x0301, suites), true, VersionTLS10, ""},
		{"empty extensions block", helloBody(0x0303, suites, []byte{}), true, VersionTLS12, ""},
		{"two server_name extensions", helloBody(0x0303, suites, sniExt("a"), sniExt("b")), false, 0, ""},
		{"two host names", helloBody(0x0303, suites, sniExt("a", "b")), false, 0, ""},
		{"NUL in host name", helloBody(0x0303, suites, sniExt("a\x00b")), false, 0, ""},
		{"empty host name", helloBody(0x0303, suites, sniExt("")), false, 0, ""},
		{"odd versions list", helloBody(0x0303, suites, ext(extSupportedVersions, []byte{3, 3, 4, 3})), false, 0, ""},
		{"extension overruns", append(helloBody(0x0303, suites, sniExt("a")[:6]), 0), false, 0, ""},
		{"trailing bytes", append(helloBody(0x0303, suites, sniExt("a")), 0), false, 0, ""},
		{"odd suites", append(append(u16s(0x0303), bytes.Repeat([]byte{7}, 32)...), 0, 0, 3, 1, 2, 3, 1, 0), false, 0, ""},
		{"no compression", append(append(u16s(0x0303), bytes.Repeat([]byte{7}, 32)...), 0, 0, 2, 0x13, 0x01, 0), false, 0, ""},
		{"session id too long", append(append(u16s(0x0303), bytes.Repeat([]byte{7}, 32)...), 33), false, 0, ""},
		{"truncated random", u16s(0x0303, 1, 2), false, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, ok := parseClientHello(tc.body)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && (ch.maxVersion != tc.version || string(ch.sni) != tc.sni) {
				t.Fatalf("version %#x sni %q", ch.maxVersion, ch.sni)
			}
		})
	}
}

func TestParseServerHello(t *testing.T) {
	sh := serverHelloBody
	plain := string(bytes.Repeat([]byte{1}, 32))
	cases := []struct {
		name    string
		body    []byte
		ok      bool
		version uint16
		retry   bool
	}{
		{"tls1.3", sh(plain, ext(extSupportedVersions, u16s(0x0304))), true, VersionTLS13, false},
		{"tls1.2", sh(plain), true, VersionTLS12, false},
		{"hello retry request", sh(helloRetryRandom, ext(extSupportedVersions, u16s(0x0304))), true, VersionTLS13, true},
		{"retry without tls1.3", sh(helloRetryRandom), false, 0, false},
		{"two supported_versions", sh(plain, ext(extSupportedVersions, u16s(0x0304)), ext(extSupportedVersions, u16s(0x0304))), false, 0, false},
		{"long supported_versions", sh(plain, ext(extSupportedVersions, u16s(0x0304, 0x0303))), false, 0, false},
		{"truncated", sh(plain)[:20], false, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseServerHello(tc.body)
			if ok != tc.ok || (ok && (got.version != tc.version || got.retry != tc.retry || got.suite != 0x1301)) {
				t.Fatalf("got %+v ok=%v", got, ok)
			}
		})
	}
}

func TestIsGREASE(t *testing.T) {
	n := 0
	for v := 0; v <= 0xffff; v++ {
		if isGREASE(uint16(v)) {
			n++
			if v&0x0f0f != 0x0a0a || v>>8 != v&0xff {
				t.Fatalf("%#04x is not GREASE", v)
			}
		}
	}
	if n != 16 { // RFC 8701: 0x0a0a, 0x1a1a, ..., 0xfafa
		t.Fatalf("%d GREASE values, want 16", n)
	}
}

// handshakeRecord wraps a handshake message body in one record.
func handshakeRecord(msgType byte, body []byte) []byte {
	n := len(body)
	msg := append([]byte{msgType, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
	return append([]byte{recordHandshake, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// A Chrome-style hello with GREASE goes through Inspect and is forwarded.
func TestInspectGREASEHello(t *testing.T) {
	hello := handshakeRecord(msgClientHello, helloBody(0x0303, []uint16{0x2a2a, 0x1301}, ext(0x0a0a, nil),
		sniExt("example.com"), versionsExt(0x7a7a, 0x0304, 0x0303)))
	serverHello := tls13ServerHello()
	c := &scriptConn{t: t, data: hello, chunk: 3}
	u := &scriptConn{t: t, data: serverHello, chunk: 2}
	res, err := Inspect(c, u, Config{})
	if err != nil || res.Version != VersionTLS13 || res.ClientMaxVersion != VersionTLS13 || res.SNI != "example.com" || res.CipherSuite != 0x1301 {
		t.Fatalf("%v %+v", err, res)
	}
	if !bytes.Equal(u.written.Bytes(), hello) || !bytes.Equal(c.written.Bytes(), serverHello) {
		t.Fatal("bytes not forwarded unchanged")
	}
}

// Hellos larger than one read buffer (Chrome's ~1.8 KB post-quantum hello,
// or bigger with padding) are held and parsed whole; over the cap they stop.
func TestInspectLargeHello(t *testing.T) {
	serverHello := tls13ServerHello()
	for _, tc := range []struct {
		size, chunk int
		tooLarge    bool
	}{{1800, 4096, false}, {1800, 100, false}, {9000, 4096, false}, {12000, 1500, false}, {16000, 4096, false}, {17000, 4096, true}} {
		pad := ext(21, make([]byte, tc.size)) // padding extension (RFC 7685)
		body := helloBody(0x0303, []uint16{0x1301}, sniExt("example.com"), versionsExt(0x0304), pad)
		var hello []byte
		for len(body) > 0 { // records of at most 2^14 bytes, as TLS requires
			n := min(len(body), 1<<14-4)
			if len(hello) == 0 {
				hello = handshakeRecord(msgClientHello, body)[:5+4+n]
				hello[3], hello[4] = byte((4+n)>>8), byte(4+n)
			} else {
				hello = append(hello, recordHandshake, 3, 3, byte(n>>8), byte(n))
				hello = append(hello, body[:n]...)
			}
			body = body[n:]
		}
		c := &scriptConn{t: t, data: hello, chunk: tc.chunk}
		u := &scriptConn{t: t, data: serverHello, chunk: 4096}
		res, err := Inspect(c, u, Config{})
		var e *Error
		switch {
		case tc.tooLarge && (!errors.As(err, &e) || e.Kind != KindTooLarge || u.written.Len() != 0 || c.read > DefaultMaxBytes):
			t.Errorf("%d-byte hello: %v, forwarded %d, read %d", tc.size, err, u.written.Len(), c.read)
		case !tc.tooLarge && (err != nil || res.SNI != "example.com" || !bytes.Equal(u.written.Bytes(), hello)):
			t.Errorf("%d-byte hello in %d-byte reads: %v %+v", tc.size, tc.chunk, err, res)
		}
	}
}
