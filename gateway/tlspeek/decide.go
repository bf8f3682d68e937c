package tlspeek

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/storegate/storegate/gateway/events"
)

// Rules is the TLS part of the policy. The zero value is the safe default:
// TLS 1.2 minimum, SNI must match the CONNECT host, no client-certificate
// check.
type Rules struct {
	// MinVersion is the lowest negotiated version allowed; zero means TLS 1.2.
	MinVersion uint16
	// AllowedSubjects, when non-empty, requires a client certificate whose
	// subject matches. Inspect must then run with NeedClientCert.
	AllowedSubjects *Subjects
	// AllowSNIMismatch lets a session through whose SNI names another host
	// than the CONNECT target (domain fronting). Off by default.
	AllowSNIMismatch bool
	// AllowUnobservableCert lets a session through, with event 107 and the
	// reason ReasonCertNotObservable, when AllowedSubjects is set but the
	// client certificate could not be seen (TLS 1.3, resumption). Off by
	// default: such sessions are refused with event 105.
	AllowUnobservableCert bool
	// Host is the CONNECT target's host (no port).
	Host string
}

// Reasons are stable labels for counters ("refusals by reason") and logs.
const (
	ReasonOK                = "ok"
	ReasonVersion           = "tls_version"
	ReasonSNIMismatch       = "sni_mismatch"
	ReasonNoClientCert      = "no_client_cert"
	ReasonCertNotAllowed    = "client_cert_not_allowed"
	ReasonCertNotObservable = "client_cert_not_observable"
	ReasonNotTLS            = "not_tls"
	ReasonParse             = "tls_parse"
	ReasonTooLarge          = "tls_too_large"
	ReasonTimeout           = "tls_timeout"
	ReasonAlert             = "tls_alert"
	ReasonClosed            = "closed"
)

// Decision is the outcome of a check: whether the tunnel may go on, the event
// to emit, a stable reason and a message for people.
type Decision struct {
	OK     bool
	Event  events.ID
	Reason string
	Msg    string
}

// Decide applies the rules to what Inspect saw.
func Decide(r Result, rules Rules) Decision {
	minVersion := rules.MinVersion
	if minVersion == 0 {
		minVersion = VersionTLS12
	}
	if r.Version < minVersion {
		return Decision{Event: events.TLSVersion, Reason: ReasonVersion,
			Msg: VersionName(r.Version) + " is below the minimum " + VersionName(minVersion)}
	}
	if !rules.AllowSNIMismatch && !SNIMatches(r.SNI, rules.Host) {
		return Decision{Event: events.NotAllowed, Reason: ReasonSNIMismatch,
			Msg: fmt.Sprintf("server name %q does not match the CONNECT host %q", r.SNI, rules.Host)}
	}
	if rules.AllowedSubjects.Len() > 0 {
		switch {
		case !r.CertObservable:
			why := "encrypted under " + VersionName(r.Version)
			if r.Resumed {
				why = "not sent in a resumed session"
			}
			if !rules.AllowUnobservableCert {
				return Decision{Event: events.NotAllowed, Reason: ReasonCertNotObservable,
					Msg: "client certificate not observable (" + why + ")"}
			}
			return Decision{OK: true, Event: events.TLSVerified, Reason: ReasonCertNotObservable,
				Msg: "TLS session allowed; client certificate not observable (" + why + ")"}
		case r.ClientCert == nil:
			return Decision{Event: events.NotAllowed, Reason: ReasonNoClientCert,
				Msg: "no client certificate"}
		}
		if _, ok := rules.AllowedSubjects.Match(r.ClientCert); !ok {
			return Decision{Event: events.NotAllowed, Reason: ReasonCertNotAllowed,
				Msg: fmt.Sprintf("client certificate subject %q not allowed", r.ClientCert.Subject)}
		}
	}
	return Decision{OK: true, Event: events.TLSVerified, Reason: ReasonOK, Msg: "TLS session verified"}
}

// ErrorDecision maps an Inspect error to a refusal. KindNotTLS maps to event
// 402; a caller whose policy allows raw TCP to the host overrides it.
func ErrorDecision(err error) Decision {
	var e *Error
	if !errors.As(err, &e) {
		return Decision{Event: events.OtherError, Reason: ReasonClosed, Msg: "TLS inspection failed"}
	}
	d := Decision{Event: events.TLSParse, Msg: e.Error()}
	switch e.Kind {
	case KindNotTLS:
		d.Reason = ReasonNotTLS
	case KindSSLv2, KindSSL3:
		d.Event, d.Reason = events.TLSVersion, ReasonVersion
		d.Msg = VersionName(e.Version) + " refused"
		if e.Kind == KindSSLv2 {
			d.Msg = "SSL 2.0-format ClientHello (offering " + VersionName(e.Version) + ") refused"
		}
	case KindTooLarge:
		d.Reason = ReasonTooLarge
	case KindTimeout:
		d.Reason = ReasonTimeout
	case KindAlert:
		d.Reason = ReasonAlert
		if e.Alert == 70 { // protocol_version: the server refused the client's versions
			d.Event, d.Reason = events.TLSVersion, ReasonVersion
		}
	case KindClosed:
		d.Event, d.Reason = events.NetworkError, ReasonClosed
		if e.Side == SideClient {
			d.Event = events.OtherError
		}
	default:
		d.Reason = ReasonParse
	}
	return d
}

// SNIMatches reports whether a ClientHello's server name fits the CONNECT
// host: equal ignoring case and a trailing dot. No SNI matches any host (the
// server then picks by address, so nothing is fronted). For an IP-literal
// host only that same address matches: RFC 6066 allows no addresses in SNI,
// but some clients (openssl s_client) send one, and it names exactly the
// host, while a name there could front another site.
func SNIMatches(sni, host string) bool {
	if sni == "" {
		return true
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		b, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(sni, "["), "]"))
		return err == nil && a.Unmap() == b.Unmap()
	}
	return strings.EqualFold(strings.TrimSuffix(sni, "."), host)
}

// VersionName names a protocol version for events: "TLS 1.2", "SSL 3.0".
func VersionName(v uint16) string {
	switch v {
	case 0:
		return "no version"
	case VersionSSL20, 0x0002:
		return "SSL 2.0"
	case VersionSSL30:
		return "SSL 3.0"
	case VersionTLS10:
		return "TLS 1.0"
	case VersionTLS11:
		return "TLS 1.1"
	case VersionTLS12:
		return "TLS 1.2"
	case VersionTLS13:
		return "TLS 1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// Fields returns the event fields for a session: version, SNI, cipher suite
// and, when seen, the client certificate's subject. dst is appended to.
func (r Result) Fields(dst []events.Field) []events.Field {
	dst = append(dst,
		events.Str(events.KeyTLSVersion, VersionName(r.Version)),
		events.Str(events.KeySNI, r.SNI),
		events.Str(events.KeyCipher, tls.CipherSuiteName(r.CipherSuite)))
	if r.ClientCert != nil {
		dst = append(dst, events.Str(events.KeySubject, r.ClientCert.Subject))
	}
	return dst
}
