package tlspeek

// TLS record content types (RFC 8446 section 5.1, RFC 5246 section 6.2.1).
const (
	recordChangeCipherSpec = 20
	recordAlert            = 21
	recordHandshake        = 22
	recordApplicationData  = 23
)

// Handshake message types this package looks at.
const (
	msgClientHello        = 1
	msgServerHello        = 2
	msgCertificate        = 11
	msgCertificateRequest = 13
	msgServerHelloDone    = 14
)

// maxRecordBody is the largest record body TLS allows on the wire: 2^14 of
// plaintext plus the 2048 bytes TLS 1.2 permits for compression and MAC.
const maxRecordBody = 1<<14 + 2048

// handler receives what a stream finds. Kept as a concrete type (not an
// interface or closure) so feeding a stream costs no allocation.
type handler = session

// stream parses one direction of a TLS connection incrementally: record
// headers, then the handshake messages inside handshake records, however they
// are split across records and reads. Only messages the session wants are
// reassembled; the rest are skipped by length.
type stream struct {
	side Side
	max  int // cap on a reassembled message body

	hdr  [5]byte
	hdrN int
	typ  byte // content type of the current record
	left int  // body bytes of the current record still to come

	// encrypted is set once this direction's handshake records are no longer
	// cleartext (after a TLS <= 1.2 ChangeCipherSpec); records are then only
	// framed, not parsed.
	encrypted bool

	hsHdr  [4]byte
	hsHdrN int
	inMsg  bool
	mtype  byte
	mlen   int
	mgot   int
	keep   bool
	buf    []byte // reassembly buffer, used only when a kept body is split
	alert  [2]byte
	alertN int
}

// feed parses p, calling back into h for every complete handshake message,
// ChangeCipherSpec and alert. It stops early, without error, once h reports
// that the inspection is over.
func (s *stream) feed(p []byte, h *handler) error {
	for len(p) > 0 && !h.done {
		if s.left == 0 {
			// Record header, possibly split across reads.
			n := copy(s.hdr[s.hdrN:], p)
			s.hdrN += n
			p = p[n:]
			if s.hdrN < len(s.hdr) {
				return nil
			}
			s.hdrN = 0
			if err := s.startRecord(); err != nil {
				return err
			}
			continue
		}
		n := min(s.left, len(p))
		frag := p[:n]
		p = p[n:]
		s.left -= n
		if err := s.body(frag, h); err != nil {
			return err
		}
	}
	return nil
}

func (s *stream) startRecord() error {
	typ := s.hdr[0]
	length := int(s.hdr[3])<<8 | int(s.hdr[4])
	switch typ {
	case recordChangeCipherSpec, recordAlert, recordHandshake, recordApplicationData:
	default:
		return parseErr(s.side, "unknown record type %d", typ)
	}
	if s.hdr[1] != 3 {
		return parseErr(s.side, "record version %d.%d is not SSL 3 or TLS", s.hdr[1], s.hdr[2])
	}
	if length > maxRecordBody {
		return parseErr(s.side, "record of %d bytes exceeds the TLS maximum", length)
	}
	if length == 0 && typ != recordApplicationData {
		// RFC 5246 6.2.1 and RFC 8446 5.1 forbid empty handshake, alert
		// and ChangeCipherSpec fragments.
		return parseErr(s.side, "empty record of type %d", typ)
	}
	if s.inMsg && typ != recordHandshake && !s.encrypted {
		// A handshake message must not be interleaved with other records.
		return parseErr(s.side, "record of type %d inside a handshake message", typ)
	}
	if s.hsHdrN > 0 && typ != recordHandshake && !s.encrypted {
		return parseErr(s.side, "record of type %d inside a handshake header", typ)
	}
	if typ == recordAlert {
		s.alertN = 0
	}
	s.typ = typ
	s.left = length
	return nil
}

// body handles one fragment of the current record's body.
func (s *stream) body(frag []byte, h *handler) error {
	switch s.typ {
	case recordHandshake:
		if s.encrypted {
			return nil
		}
		return s.handshake(frag, h)
	case recordChangeCipherSpec:
		if s.left == 0 {
			return h.changeCipherSpec(s)
		}
		return nil
	case recordAlert:
		if s.encrypted {
			return nil
		}
		for _, b := range frag {
			if s.alertN < len(s.alert) {
				s.alert[s.alertN] = b
			}
			s.alertN++
		}
		if s.left == 0 {
			if s.alertN != 2 {
				return parseErr(s.side, "alert record of %d bytes", s.alertN)
			}
			return h.alert(s, s.alert[0], s.alert[1])
		}
		return nil
	default: // application data: encrypted, opaque
		return h.applicationData(s)
	}
}

// handshake consumes handshake-record bytes: 4-byte message headers and
// bodies, each of which may be split anywhere.
func (s *stream) handshake(p []byte, h *handler) error {
	for len(p) > 0 && !h.done && !s.encrypted {
		if !s.inMsg {
			n := copy(s.hsHdr[s.hsHdrN:], p)
			s.hsHdrN += n
			p = p[n:]
			if s.hsHdrN < len(s.hsHdr) {
				return nil
			}
			s.hsHdrN = 0
			s.mtype = s.hsHdr[0]
			s.mlen = int(s.hsHdr[1])<<16 | int(s.hsHdr[2])<<8 | int(s.hsHdr[3])
			s.mgot = 0
			s.inMsg = true
			s.keep = h.wants(s, s.mtype)
			if s.keep && s.mlen > s.max {
				return &Error{Kind: KindTooLarge, Side: s.side, Detail: "handshake message larger than the cap"}
			}
			s.buf = s.buf[:0]
			if s.mlen == 0 {
				s.inMsg = false
				if err := h.message(s, s.mtype, nil); err != nil {
					return err
				}
			}
			continue
		}
		need := s.mlen - s.mgot
		n := min(need, len(p))
		chunk := p[:n]
		p = p[n:]
		s.mgot += n
		if !s.keep {
			if s.mgot == s.mlen {
				s.inMsg = false
				if err := h.message(s, s.mtype, nil); err != nil {
					return err
				}
			}
			continue
		}
		if s.mgot == s.mlen && len(s.buf) == 0 {
			// Whole body in one fragment: parse it in place, no copy.
			s.inMsg = false
			if err := h.message(s, s.mtype, chunk); err != nil {
				return err
			}
			continue
		}
		if s.buf == nil {
			s.buf = make([]byte, 0, s.mlen)
		}
		s.buf = append(s.buf, chunk...)
		if s.mgot == s.mlen {
			s.inMsg = false
			if err := h.message(s, s.mtype, s.buf); err != nil {
				return err
			}
			s.buf = s.buf[:0]
		}
	}
	return nil
}
