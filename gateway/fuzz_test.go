package gateway

import (
	"bytes"
	"testing"
)

func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST /spool/v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
		"CONNECT a:1 HTTP/1.0\n\n",
		"CONNECT a:1 HTTP/1.1\r\n folded\r\n\r\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		end := headEnd(data)
		if end < 0 {
			return
		}
		if end > len(data) {
			t.Fatalf("headEnd %d past %d", end, len(data))
		}
		var h requestHead
		if err := parseHead(data[:end], 64, &h); err != nil {
			return
		}
		if h.headers > 64 {
			t.Fatalf("accepted %d headers", h.headers)
		}
		if !bytes.HasPrefix(data, h.method) || len(h.method) == 0 {
			t.Fatalf("method %q not at the start", h.method)
		}
		for _, c := range h.target {
			if c <= ' ' {
				t.Fatalf("target %q holds a control or space", h.target)
			}
		}
		if bytes.Equal(h.method, []byte("CONNECT")) {
			host, port, err := parseAuthority(h.target)
			if err == nil {
				if port < 1 || port > 65535 || len(host) == 0 {
					t.Fatalf("authority %q gave host %q port %d", h.target, host, port)
				}
				_, _ = canonicalHost(string(host))
			}
		}
	})
}

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"example.com:443", "[::1]:443", "1.2.3.4:8443", "a:0", ":443", "[::1]", "x:y:1", "bücher.example:443", "[fe80::1%25eth0]:443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := parseAuthority([]byte(s))
		if err != nil {
			return
		}
		if port < 1 || port > 65535 {
			t.Fatalf("%q: port %d", s, port)
		}
		if bytes.ContainsAny(host, "/@?#[]") {
			t.Fatalf("%q: host %q", s, host)
		}
	})
}
