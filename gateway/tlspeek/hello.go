package tlspeek

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
)

// Extension numbers (IANA TLS ExtensionType registry).
const (
	extServerName        = 0
	extSupportedVersions = 43
)

// helloRetryRandom is the ServerHello.random that marks a HelloRetryRequest:
// SHA-256 of "HelloRetryRequest" (RFC 8446 section 4.1.3).
const helloRetryRandom = "\xCF\x21\xAD\x74\xE5\x9A\x61\x11\xBE\x1D\x8C\x02\x1E\x65\xB8\x91\xC2\xA2\x11\x16\x7A\xBB\x8C\x5E\x07\x9E\x09\xE2\xC8\xA8\x33\x9C"

// reader is a bounds-checked cursor over a handshake message body. Every
// read fails softly (ok=false) instead of panicking on short input.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) bytes(n int) []byte {
	if !r.ok || n < 0 || n > len(r.b) {
		r.ok = false
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.bytes(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.bytes(2)
	if v == nil {
		return 0
	}
	return int(v[0])<<8 | int(v[1])
}

func (r *reader) u24() int {
	v := r.bytes(3)
	if v == nil {
		return 0
	}
	return int(v[0])<<16 | int(v[1])<<8 | int(v[2])
}

// vec8, vec16 and vec24 read a length-prefixed vector.
func (r *reader) vec8() []byte  { return r.bytes(r.u8()) }
func (r *reader) vec16() []byte { return r.bytes(r.u16()) }
func (r *reader) vec24() []byte { return r.bytes(r.u24()) }

// isGREASE reports a GREASE value (RFC 8701): 0x?A?A with equal bytes.
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// clientHello holds what Inspect needs from a ClientHello.
type clientHello struct {
	maxVersion uint16
	sni        []byte // aliases the message body; copy before keeping
}

// parseClientHello reads a ClientHello body (RFC 8446 4.1.2, RFC 5246 7.4.1.2).
func parseClientHello(body []byte) (clientHello, bool) {
	var ch clientHello
	r := reader{b: body, ok: true}
	legacy := uint16(r.u16())
	r.bytes(32) // random
	if sid := r.vec8(); len(sid) > 32 {
		return ch, false
	}
	suites := r.vec16()
	if len(suites) < 2 || len(suites)%2 != 0 {
		return ch, false
	}
	if comp := r.vec8(); len(comp) < 1 {
		return ch, false
	}
	if !r.ok {
		return ch, false
	}
	ch.maxVersion = legacy
	if len(r.b) == 0 {
		return ch, true // no extensions (SSL 3.0, early TLS)
	}
	exts := reader{b: r.vec16(), ok: r.ok}
	if !r.ok || len(r.b) != 0 {
		return ch, false
	}
	var sawSNI, sawVersions bool
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec16()
		if !exts.ok {
			return ch, false
		}
		switch typ {
		case extServerName:
			if sawSNI {
				return ch, false
			}
			sawSNI = true
			name, ok := parseSNI(data)
			if !ok {
				return ch, false
			}
			ch.sni = name
		case extSupportedVersions:
			if sawVersions {
				return ch, false
			}
			sawVersions = true
			v := reader{b: data, ok: true}
			list := v.vec8()
			if !v.ok || len(v.b) != 0 || len(list) < 2 || len(list)%2 != 0 {
				return ch, false
			}
			var best uint16
			for i := 0; i+1 < len(list); i += 2 {
				ver := uint16(list[i])<<8 | uint16(list[i+1])
				if !isGREASE(ver) && ver > best {
					best = ver
				}
			}
			if best == 0 {
				return ch, false
			}
			ch.maxVersion = best
		}
	}
	return ch, true
}

// parseSNI returns the host_name entry of a server_name extension (RFC 6066 3).
func parseSNI(data []byte) ([]byte, bool) {
	r := reader{b: data, ok: true}
	list := reader{b: r.vec16(), ok: r.ok}
	if !r.ok || len(r.b) != 0 || len(list.b) == 0 {
		return nil, false
	}
	var host []byte
	for len(list.b) > 0 {
		typ := list.u8()
		name := list.vec16()
		if !list.ok {
			return nil, false
		}
		if typ == 0 {
			if host != nil || len(name) == 0 || bytes.IndexByte(name, 0) >= 0 {
				return nil, false
			}
			host = name
		}
	}
	return host, true
}

// serverHello holds what Inspect needs from a ServerHello.
type serverHello struct {
	version uint16 // negotiated: supported_versions if present, else legacy
	suite   uint16
	retry   bool // a HelloRetryRequest
}

// parseServerHello reads a ServerHello body (RFC 8446 4.1.3, RFC 5246 7.4.1.3).
func parseServerHello(body []byte) (serverHello, bool) {
	var sh serverHello
	r := reader{b: body, ok: true}
	sh.version = uint16(r.u16())
	random := r.bytes(32)
	if sid := r.vec8(); len(sid) > 32 {
		return sh, false
	}
	sh.suite = uint16(r.u16())
	r.u8() // compression method
	if !r.ok {
		return sh, false
	}
	sh.retry = string(random) == helloRetryRandom
	if len(r.b) == 0 {
		return sh, !sh.retry
	}
	exts := reader{b: r.vec16(), ok: r.ok}
	if !r.ok || len(r.b) != 0 {
		return sh, false
	}
	var sawVersions bool
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec16()
		if !exts.ok {
			return sh, false
		}
		if typ == extSupportedVersions {
			if sawVersions || len(data) != 2 {
				return sh, false
			}
			sawVersions = true
			sh.version = uint16(data[0])<<8 | uint16(data[1])
		}
	}
	if sh.retry && sh.version < VersionTLS13 {
		return sh, false
	}
	return sh, true
}

// parseCertificate reads a TLS <= 1.2 Certificate message (RFC 5246 7.4.2)
// and returns its leaf's subject, or nil for an empty list (no certificate).
func parseCertificate(body []byte) (*ClientCert, bool) {
	r := reader{b: body, ok: true}
	list := reader{b: r.vec24(), ok: r.ok}
	if !r.ok || len(r.b) != 0 {
		return nil, false
	}
	if len(list.b) == 0 {
		return nil, true
	}
	leaf := list.vec24()
	if !list.ok || len(leaf) == 0 {
		return nil, false
	}
	for len(list.b) > 0 { // the rest of the chain must be well formed too
		if c := list.vec24(); !list.ok || len(c) == 0 {
			return nil, false
		}
	}
	cert, err := x509.ParseCertificate(leaf)
	if err != nil {
		return nil, false
	}
	return ClientCertOf(cert), true
}

// ClientCertOf describes a certificate as Subjects.Match compares it, for a
// caller that has the certificate itself (the TLS listener's handshake).
func ClientCertOf(cert *x509.Certificate) *ClientCert {
	// The raw RDN sequence keeps multi-valued RDNs ("CN=a+OU=b") that
	// pkix.Name flattens; both print in RFC 4514 form.
	subject := cert.Subject.String()
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(cert.RawSubject, &seq); err == nil && len(rest) == 0 {
		subject = seq.String()
	}
	return &ClientCert{
		Subject:    subject,
		CommonName: cert.Subject.CommonName,
		Issuer:     cert.Issuer.String(),
	}
}
