package tlspeek

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"

	"github.com/storegate/storegate/gateway/events"
)

func TestSubjects(t *testing.T) {
	pos := pkix.Name{CommonName: "pos-0001", Organization: []string{"Contoso"}, Country: []string{"SE"}}
	comma := pkix.Name{CommonName: "a,b", Organization: []string{"Contoso"}}
	email := pkix.Name{CommonName: "pos-0001", ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "pos@contoso.example"}}}
	// As parseCertificate prints a multi-valued RDN: from the raw sequence.
	multi := &ClientCert{CommonName: "a", Subject: pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "Contoso"}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "a"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 11}, Value: "b"}},
	}.String()}
	cert := func(n pkix.Name) *ClientCert { return &ClientCert{Subject: n.String(), CommonName: n.CommonName} }
	if got := pos.String(); got != "CN=pos-0001,O=Contoso,C=SE" {
		t.Fatalf("pkix form changed: %q", got)
	}
	cases := []struct {
		name  string
		entry string
		cert  *ClientCert
		want  bool
	}{
		{"rfc4514 exact", "CN=pos-0001,O=Contoso,C=SE", cert(pos), true},
		{"case and spaces", "cn=POS-0001, o=contoso , c=se", cert(pos), true},
		{"openssl print order", "C = SE, O = Contoso, CN = pos-0001", cert(pos), true},
		{"openssl slash form", "/C=SE/O=Contoso/CN=pos-0001", cert(pos), true},
		{"long attribute names", "commonName=pos-0001,organizationName=Contoso,countryName=SE", cert(pos), true},
		{"semicolon separators", "CN=pos-0001;O=Contoso;C=SE", cert(pos), true},
		{"bare CN", "pos-0001", cert(pos), true},
		{"bare CN differs", "pos-000", cert(pos), false},
		{"missing RDN", "CN=pos-0001,O=Contoso", cert(pos), false},
		{"CN alone is a DN, not a CN", "CN=pos-0001", cert(pos), false},
		{"other CN", "CN=pos-0002,O=Contoso,C=SE", cert(pos), false},
		{"shuffled order", "O=Contoso,CN=pos-0001,C=SE", cert(pos), false},
		{"escaped comma", `CN=a\,b,O=Contoso`, cert(comma), true},
		{"hex-escaped comma", `CN=a\2cb,O=Contoso`, cert(comma), true},
		{"bare CN with comma", "a,b", cert(comma), true},
		{"email by name", "emailAddress=pos@contoso.example,CN=pos-0001", cert(email), true},
		{"email as E", "E=pos@contoso.example,CN=pos-0001", cert(email), true},
		{"multi-valued RDN any order", "OU=b+CN=a,O=Contoso", multi, true},
		{"multi-valued RDN split", "OU=b,CN=a,O=Contoso", multi, false},
		{"no certificate", "pos-0001", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSubjects(t, tc.entry)
			entry, ok := s.Match(tc.cert)
			if ok != tc.want {
				t.Fatalf("Match(%q) with %q = %v, want %v", tc.cert, tc.entry, ok, tc.want)
			}
			if ok && entry != tc.entry {
				t.Errorf("matched entry %q", entry)
			}
		})
	}
}

// SameSubject finds entries equal exactly when they allow the same
// certificates: the commands that edit allowed_client_certificates use it.
func TestSameSubject(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"CN=pos-0001,O=Contoso", "cn=POS-0001, o=contoso", true},
		{"CN=pos-0001,O=Contoso", "O=Contoso,CN=pos-0001", true}, // Match accepts either order
		{"/CN=pos-0001/O=Contoso", "CN=pos-0001,O=Contoso", true},
		{"CN=a\\,b,O=x", "CN=a\\,b, O=x", true}, // an escaped comma is part of the value
		{"CN=a\\,b,O=x", "CN=a,B=b,O=x", false},
		{"pos-0001", "POS-0001", true},
		{"pos-0001", "CN=pos-0001", false}, // a bare CN is not a one-attribute DN entry
		{"CN=pos-0001,O=Contoso", "CN=pos-0002,O=Contoso", false},
	} {
		if got := SameSubject(c.a, c.b); got != c.same {
			t.Errorf("SameSubject(%q, %q) = %v, want %v", c.a, c.b, got, c.same)
		}
	}
}

func TestParseSubjectsErrors(t *testing.T) {
	for _, bad := range []string{"", "  ", "=x", "FOO=bar", "CN=a,", `CN=a\`, "CN=#zz", "CN=a,,O=b"} {
		if _, err := ParseSubjects([]string{"CN=ok", bad}); err == nil {
			t.Errorf("ParseSubjects accepted %q", bad)
		} else if bad != "" && strings.TrimSpace(bad) != "" && !strings.Contains(err.Error(), bad) {
			t.Errorf("error %q does not name the entry %q", err, bad)
		}
	}
	var none *Subjects
	if none.Len() != 0 {
		t.Error("nil Subjects has entries")
	}
}

func TestDecide(t *testing.T) {
	pos := &ClientCert{Subject: "CN=pos-0001,O=Contoso,C=SE", CommonName: "pos-0001"}
	allowed := mustSubjects(t, "CN=pos-0001,O=Contoso,C=SE")
	ok12 := Result{Version: VersionTLS12, SNI: "example.com", CertObservable: true, ClientCert: pos}
	cases := []struct {
		name   string
		res    Result
		rules  Rules
		ok     bool
		event  events.ID
		reason string
		msg    string // substring of the message
	}{
		{"tls1.2 default", ok12, Rules{Host: "example.com"}, true, events.TLSVerified, ReasonOK, ""},
		{"tls1.1 below default", Result{Version: VersionTLS11}, Rules{}, false, events.TLSVersion, ReasonVersion, "TLS 1.1"},
		{"ssl3 negotiated", Result{Version: VersionSSL30}, Rules{MinVersion: VersionTLS10}, false, events.TLSVersion, ReasonVersion, "SSL 3.0"},
		{"tls1.2 below 1.3", ok12, Rules{Host: "example.com", MinVersion: VersionTLS13}, false, events.TLSVersion, ReasonVersion, "TLS 1.3"},
		{"sni case and dot", Result{Version: VersionTLS13, SNI: "Example.COM."}, Rules{Host: "example.com"}, true, events.TLSVerified, ReasonOK, ""},
		{"sni fronting", Result{Version: VersionTLS13, SNI: "evil.example"}, Rules{Host: "example.com"}, false, events.NotAllowed, ReasonSNIMismatch, "evil.example"},
		{"no sni", Result{Version: VersionTLS13}, Rules{Host: "example.com"}, true, events.TLSVerified, ReasonOK, ""},
		{"sni to ip host", Result{Version: VersionTLS13, SNI: "example.com"}, Rules{Host: "203.0.113.7"}, false, events.NotAllowed, ReasonSNIMismatch, ""},
		{"sni to bracketed ipv6", Result{Version: VersionTLS13, SNI: "example.com"}, Rules{Host: "[2001:db8::1]"}, false, events.NotAllowed, ReasonSNIMismatch, ""},
		{"sni is the ip host", Result{Version: VersionTLS13, SNI: "203.0.113.7"}, Rules{Host: "203.0.113.7"}, true, events.TLSVerified, ReasonOK, ""},
		{"sni is the ipv6 host", Result{Version: VersionTLS13, SNI: "2001:db8::1"}, Rules{Host: "[2001:db8::1]"}, true, events.TLSVerified, ReasonOK, ""},
		{"sni is another ip", Result{Version: VersionTLS13, SNI: "203.0.113.8"}, Rules{Host: "203.0.113.7"}, false, events.NotAllowed, ReasonSNIMismatch, "203.0.113.8"},
		{"sni mismatch allowed", Result{Version: VersionTLS13, SNI: "a.example"}, Rules{Host: "b.example", AllowSNIMismatch: true}, true, events.TLSVerified, ReasonOK, ""},
		{"cert allowed", ok12, Rules{Host: "example.com", AllowedSubjects: allowed}, true, events.TLSVerified, ReasonOK, ""},
		{"cert not allowed", Result{Version: VersionTLS12, CertObservable: true, ClientCert: &ClientCert{Subject: "CN=x"}},
			Rules{AllowedSubjects: allowed}, false, events.NotAllowed, ReasonCertNotAllowed, "CN=x"},
		{"no cert", Result{Version: VersionTLS12, CertObservable: true}, Rules{AllowedSubjects: allowed}, false, events.NotAllowed, ReasonNoClientCert, ""},
		{"tls1.3 not observable", Result{Version: VersionTLS13}, Rules{AllowedSubjects: allowed}, false, events.NotAllowed, ReasonCertNotObservable, "TLS 1.3"},
		{"resumed not observable", Result{Version: VersionTLS12, Resumed: true}, Rules{AllowedSubjects: allowed}, false, events.NotAllowed, ReasonCertNotObservable, "resumed"},
		{"not observable allowed", Result{Version: VersionTLS13}, Rules{AllowedSubjects: allowed, AllowUnobservableCert: true}, true, events.TLSVerified, ReasonCertNotObservable, ""},
		{"empty list means no check", Result{Version: VersionTLS13}, Rules{AllowedSubjects: mustSubjects(t)}, true, events.TLSVerified, ReasonOK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.res, tc.rules)
			if d.OK != tc.ok || d.Event != tc.event || d.Reason != tc.reason || !strings.Contains(d.Msg, tc.msg) {
				t.Fatalf("got %+v, want ok=%v event=%d reason=%s msg~%q", d, tc.ok, tc.event, tc.reason, tc.msg)
			}
		})
	}
}

func TestErrorDecision(t *testing.T) {
	cases := []struct {
		err    error
		event  events.ID
		reason string
	}{
		{&Error{Kind: KindNotTLS}, events.TLSParse, ReasonNotTLS},
		{&Error{Kind: KindSSLv2, Version: VersionTLS10}, events.TLSVersion, ReasonVersion},
		{&Error{Kind: KindSSL3, Version: VersionSSL30}, events.TLSVersion, ReasonVersion},
		{&Error{Kind: KindParse}, events.TLSParse, ReasonParse},
		{&Error{Kind: KindTooLarge}, events.TLSParse, ReasonTooLarge},
		{&Error{Kind: KindTimeout}, events.TLSParse, ReasonTimeout},
		{&Error{Kind: KindAlert, Alert: 40}, events.TLSParse, ReasonAlert},
		{&Error{Kind: KindAlert, Alert: 70}, events.TLSVersion, ReasonVersion},
		{&Error{Kind: KindClosed, Side: SideUpstream}, events.NetworkError, ReasonClosed},
		{&Error{Kind: KindClosed, Side: SideClient}, events.OtherError, ReasonClosed},
		{errors.New("other"), events.OtherError, ReasonClosed},
	}
	for _, tc := range cases {
		d := ErrorDecision(tc.err)
		if d.OK || d.Event != tc.event || d.Reason != tc.reason || d.Msg == "" {
			t.Errorf("%v: got %+v, want event %d reason %s", tc.err, d, tc.event, tc.reason)
		}
	}
	if d := ErrorDecision(&Error{Kind: KindSSLv2, Version: VersionTLS10}); !strings.Contains(d.Msg, "SSL 2.0") || !strings.Contains(d.Msg, "TLS 1.0") {
		t.Errorf("SSLv2 message %q", d.Msg)
	}
}

func TestVersions(t *testing.T) {
	if VersionName(0x7f1c) != "0x7f1c" || VersionName(VersionSSL30) != "SSL 3.0" {
		t.Error("VersionName")
	}
	r := Result{Version: VersionTLS13, SNI: "example.com", CipherSuite: 0x1301, ClientCert: &ClientCert{Subject: "CN=a"}}
	f := r.Fields(nil)
	if len(f) != 4 || f[0].Str != "TLS 1.3" || f[2].Str != "TLS_AES_128_GCM_SHA256" || f[3].Str != "CN=a" {
		t.Errorf("Fields = %+v", f)
	}
}
