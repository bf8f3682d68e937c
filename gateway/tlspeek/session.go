package tlspeek

import (
	"net"
	"strconv"
)

// phase is where the handshake stands, and so which side Inspect reads next.
type phase uint8

const (
	phaseClientHello  phase = iota // waiting for the client's first ClientHello
	phaseServerHello               // waiting for the ServerHello (or a HelloRetryRequest)
	phaseClientHello2              // after a HelloRetryRequest: the second ClientHello
	phaseServerFlight              // TLS <= 1.2: the rest of the server's flight
	phaseClientCert                // TLS <= 1.2: the client's Certificate, if any
)

func (p phase) readsClient() bool {
	return p == phaseClientHello || p == phaseClientHello2 || p == phaseClientCert
}

// holdsClient reports whether client bytes are held back rather than
// forwarded: until a ClientHello is complete and accepted.
func (p phase) holdsClient() bool {
	return p == phaseClientHello || p == phaseClientHello2
}

// session is one inspection: two streams and what they have shown so far.
type session struct {
	cfg    Config
	phase  phase
	done   bool
	res    Result
	client stream
	server stream

	classified bool
	sawCH      bool
	sawSH      bool
}

func newSession(cfg Config) *session {
	s := &session{cfg: cfg}
	s.client = stream{side: SideClient, max: cfg.MaxBytes}
	s.server = stream{side: SideUpstream, max: cfg.MaxBytes}
	return s
}

// process parses the bytes read from side and reports whether to forward
// them. For the client, p holds the bytes still held back (p[:held], already
// parsed) followed by the new ones.
func (s *session) process(side Side, p []byte, held int) (bool, error) {
	if side == SideClient && !s.classified {
		v, ver, more := classify(p)
		if more {
			return false, nil
		}
		s.classified = true
		switch v {
		case verdictNotTLS:
			return s.cfg.AllowNotTLS, &Error{Kind: KindNotTLS, Side: SideClient, Detail: "first bytes are not a TLS record"}
		case verdictSSLv2:
			s.res.ClientMaxVersion = ver
			return false, &Error{Kind: KindSSLv2, Side: SideClient, Version: ver, Detail: "SSL 2.0-format ClientHello"}
		case verdictNoHello:
			return false, parseErr(SideClient, "first record is not a handshake record")
		}
		held = 0 // a TLS start is known from the first byte: nothing parsed yet
	}
	st := &s.server
	if side == SideClient {
		st = &s.client
	}
	if err := st.feed(p[held:], s); err != nil {
		e, ok := err.(*Error)
		return ok && e.Kind == KindAlert, err
	}
	return true, nil
}

// forward writes bytes read from side to dst and counts them.
func (s *session) forward(side Side, dst net.Conn, p []byte) error {
	if _, err := dst.Write(p); err != nil {
		return ioErr(side.other(), err)
	}
	if side == SideClient {
		s.res.BytesUp += int64(len(p))
	} else {
		s.res.BytesDown += int64(len(p))
	}
	return nil
}

type verdict uint8

const (
	verdictTLS verdict = iota
	verdictNotTLS
	verdictSSLv2
	verdictNoHello
)

// classify looks at the client's first bytes. A TLS connection starts with a
// handshake record (0x16). An SSL 2.0-format hello has a 2-byte header with
// the high bit set, then msg_type 1 and the version (RFC 6101 appendix E.2,
// RFC 5246 appendix E.2); only the 2-byte-header form is recognised, the
// 3-byte one is indistinguishable from other protocols.
func classify(b []byte) (v verdict, version uint16, more bool) {
	switch {
	case len(b) == 0:
		return 0, 0, true
	case b[0] == recordHandshake:
		return verdictTLS, 0, false
	case b[0] == recordChangeCipherSpec || b[0] == recordAlert || b[0] == recordApplicationData:
		return verdictNoHello, 0, false
	case b[0]&0x80 == 0:
		return verdictNotTLS, 0, false
	case len(b) < 3:
		return 0, 0, true
	case b[2] != 1:
		return verdictNotTLS, 0, false
	case len(b) < 5:
		return 0, 0, true
	}
	return verdictSSLv2, uint16(b[3])<<8 | uint16(b[4]), false
}

// wants reports whether a handshake message's body is needed, so the stream
// reassembles it instead of skipping it.
func (s *session) wants(st *stream, typ byte) bool {
	if st.side == SideClient {
		switch s.phase {
		case phaseClientHello, phaseClientHello2:
			return typ == msgClientHello
		case phaseClientCert:
			return typ == msgCertificate
		}
		return false
	}
	return s.phase == phaseServerHello && typ == msgServerHello
}

// message handles one complete handshake message; body is nil unless wanted.
func (s *session) message(st *stream, typ byte, body []byte) error {
	if st.side == SideClient {
		return s.clientMessage(typ, body)
	}
	return s.serverMessage(typ, body)
}

func (s *session) clientMessage(typ byte, body []byte) error {
	switch s.phase {
	case phaseClientHello, phaseClientHello2:
		if typ != msgClientHello {
			return parseErr(SideClient, "handshake message %d where a ClientHello belongs", typ)
		}
		ch, ok := parseClientHello(body)
		if !ok {
			return parseErr(SideClient, "malformed ClientHello")
		}
		if ch.maxVersion < VersionSSL30 {
			return parseErr(SideClient, "ClientHello version 0x%04x", ch.maxVersion)
		}
		s.res.ClientMaxVersion = ch.maxVersion
		if ch.maxVersion == VersionSSL30 {
			return &Error{Kind: KindSSL3, Side: SideClient, Version: ch.maxVersion, Detail: "ClientHello offers at most SSL 3.0"}
		}
		if s.phase == phaseClientHello2 {
			if string(ch.sni) != s.res.SNI {
				return parseErr(SideClient, "server name changed after HelloRetryRequest")
			}
		} else if ch.sni != nil {
			s.res.SNI = string(ch.sni)
		}
		s.sawCH = true
		s.phase = phaseServerHello
		return nil
	case phaseClientCert:
		if typ == msgCertificate {
			cert, ok := parseCertificate(body)
			if !ok {
				return parseErr(SideClient, "malformed client Certificate")
			}
			s.res.ClientCert = cert
		}
		// Any other first message (ClientKeyExchange) means no certificate.
		s.res.CertObservable = true
		s.done = true
		return nil
	}
	return parseErr(SideClient, "unexpected handshake message %d from the client", typ)
}

func (s *session) serverMessage(typ byte, body []byte) error {
	switch s.phase {
	case phaseServerHello:
		if typ != msgServerHello {
			return parseErr(SideUpstream, "handshake message %d where a ServerHello belongs", typ)
		}
		sh, ok := parseServerHello(body)
		if !ok {
			return parseErr(SideUpstream, "malformed ServerHello")
		}
		s.sawSH = true
		if sh.retry {
			if s.res.HelloRetry {
				return parseErr(SideUpstream, "second HelloRetryRequest")
			}
			s.res.HelloRetry = true
			s.phase = phaseClientHello2
			return nil
		}
		s.res.Version = sh.version
		s.res.CipherSuite = sh.suite
		switch {
		case sh.version > s.res.ClientMaxVersion:
			return parseErr(SideUpstream, "server chose version 0x%04x above the client's 0x%04x", sh.version, s.res.ClientMaxVersion)
		case sh.version >= VersionTLS13 || sh.version < VersionTLS10 || !s.cfg.NeedClientCert:
			s.done = true
		default:
			s.phase = phaseServerFlight
		}
		return nil
	case phaseServerFlight:
		switch typ {
		case msgCertificateRequest:
			s.res.CertRequested = true
		case msgServerHelloDone:
			if s.res.CertRequested {
				s.phase = phaseClientCert
			} else {
				// No certificate was asked for, so none will be sent.
				s.res.CertObservable = true
				s.done = true
			}
		}
		return nil
	}
	return parseErr(SideUpstream, "unexpected handshake message %d from the server", typ)
}

// changeCipherSpec handles a ChangeCipherSpec record from either side.
func (s *session) changeCipherSpec(st *stream) error {
	if s.res.Version != 0 && s.res.Version <= VersionTLS12 {
		// TLS <= 1.2: what follows in this direction is encrypted.
		st.encrypted = true
		switch {
		case st.side == SideUpstream && s.phase == phaseServerFlight:
			s.res.Resumed = true // abbreviated handshake: no certificates
			s.done = true
		case st.side == SideClient && s.phase == phaseClientCert:
			s.res.CertObservable = true
			s.done = true
		}
		return nil
	}
	// TLS 1.3 middlebox-compatibility CCS (RFC 8446 D.4), or one sent with
	// early data: allowed after the side's first hello, never before.
	if (st.side == SideClient && !s.sawCH) || (st.side == SideUpstream && !s.sawSH) {
		return parseErr(st.side, "ChangeCipherSpec before the hello")
	}
	return nil
}

// applicationData handles an application-data record before the handshake is
// over: only TLS 1.3 early data after the ClientHello is legitimate.
func (s *session) applicationData(st *stream) error {
	if st.side == SideClient && s.sawCH {
		return nil
	}
	return parseErr(st.side, "application data before the handshake finished")
}

// alert ends the inspection: the side refused the handshake (or closed).
func (s *session) alert(st *stream, level, desc byte) error {
	detail := alertName(desc)
	if level == 1 {
		detail = "warning " + detail
	}
	return &Error{Kind: KindAlert, Side: st.side, Alert: desc, Detail: detail}
}

func alertName(desc byte) string {
	switch desc {
	case 0:
		return "close_notify"
	case 10:
		return "unexpected_message"
	case 20:
		return "bad_record_mac"
	case 40:
		return "handshake_failure"
	case 42:
		return "bad_certificate"
	case 43:
		return "unsupported_certificate"
	case 46:
		return "certificate_unknown"
	case 47:
		return "illegal_parameter"
	case 48:
		return "unknown_ca"
	case 50:
		return "decode_error"
	case 51:
		return "decrypt_error"
	case 70:
		return "protocol_version"
	case 71:
		return "insufficient_security"
	case 80:
		return "internal_error"
	case 86:
		return "inappropriate_fallback"
	case 90:
		return "user_canceled"
	case 109:
		return "missing_extension"
	case 110:
		return "unsupported_extension"
	case 112:
		return "unrecognized_name"
	case 116:
		return "certificate_required"
	case 120:
		return "no_application_protocol"
	}
	return "alert " + strconv.Itoa(int(desc))
}
