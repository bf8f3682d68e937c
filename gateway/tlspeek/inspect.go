package tlspeek

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// TLS and SSL protocol versions as they appear on the wire.
const (
	VersionSSL20 uint16 = 0x0200
	VersionSSL30 uint16 = 0x0300
	VersionTLS10 uint16 = 0x0301
	VersionTLS11 uint16 = 0x0302
	VersionTLS12 uint16 = 0x0303
	VersionTLS13 uint16 = 0x0304
)

// Defaults for a zero Config.
const (
	DefaultMaxBytes = 16 << 10
	DefaultTimeout  = 10 * time.Second
)

// readChunk is the largest single read. Handshake flights are a few KiB, so
// this keeps the per-inspection buffer small without many extra reads.
const readChunk = 4 << 10

// Config bounds one inspection. The zero value is usable.
type Config struct {
	// MaxBytes caps the handshake bytes read from each side. Zero means
	// DefaultMaxBytes. Inspect never reads more than this from either side.
	MaxBytes int
	// Timeout bounds the whole inspection, reads and writes on both sides.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// NeedClientCert makes Inspect follow a TLS <= 1.2 handshake past the
	// ServerHello, through the server's flight and the client's reply, to
	// see the client's Certificate message. Set it when the policy lists
	// allowed client certificates; otherwise CertObservable stays false.
	// The server's flight (its certificate chain) then counts against
	// MaxBytes too.
	NeedClientCert bool
	// AllowNotTLS makes Inspect forward the client's first bytes when they
	// are not TLS before it returns a KindNotTLS error, so a caller whose
	// policy allows raw TCP to this host can go on copying. When false they
	// are not forwarded and the caller should close both connections.
	// Protocols where the server speaks first never show the client's
	// first bytes; a caller allowing raw TCP to such a host should skip
	// Inspect for it.
	AllowNotTLS bool
	// Early holds client bytes already read before Inspect was called (sent
	// right behind the CONNECT request). Inspect treats them as the start of
	// the client's stream: parsed, counted against MaxBytes and forwarded.
	// The caller must not write them to upstream itself.
	Early []byte
	// HelloCheck, when set, is called once the client's first ClientHello is
	// whole and before any of it is forwarded, with the Result so far (SNI,
	// ClientMaxVersion). A non-nil error ends Inspect with that error, and
	// nothing of the hello reaches the upstream: a domain-fronted or refused
	// session is stopped before the upstream sees who the client wanted.
	HelloCheck func(*Result) error
}

func (c Config) withDefaults() Config {
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// ClientCert is what Inspect saw of a client certificate: the leaf of the
// TLS <= 1.2 Certificate message. It is not verified: the server does that.
type ClientCert struct {
	Subject    string // RFC 4514 form, as pkix.Name.String gives it
	CommonName string
	Issuer     string
}

// Result is what an inspection saw. Fields not reached stay zero.
type Result struct {
	// Version is the negotiated version: the ServerHello's
	// supported_versions extension if present, else its legacy version.
	Version uint16
	// ClientMaxVersion is the highest version the client offered (GREASE
	// ignored).
	ClientMaxVersion uint16
	// SNI is the ClientHello's host_name, or "" if it sent none.
	SNI string
	// CipherSuite is the suite the server chose.
	CipherSuite uint16
	// HelloRetry is set when a TLS 1.3 HelloRetryRequest was seen; SNI and
	// the version are then from the second ClientHello and ServerHello.
	HelloRetry bool
	// Resumed is set for a TLS <= 1.2 abbreviated handshake (seen only with
	// NeedClientCert); it carries no certificate.
	Resumed bool
	// CertRequested is set when a TLS <= 1.2 server sent CertificateRequest.
	CertRequested bool
	// CertObservable is true when Inspect saw the point where a client
	// certificate would be sent in the clear, so ClientCert == nil means
	// the client sent none. It is false under TLS 1.3 (the certificate is
	// encrypted), for resumed sessions, and without NeedClientCert.
	CertObservable bool
	// ClientCert is the client's certificate, or nil if none was seen.
	ClientCert *ClientCert
	// BytesUp and BytesDown count the bytes forwarded client->upstream and
	// upstream->client during the inspection.
	BytesUp, BytesDown int64
}

// Side names a direction of the tunnel.
type Side uint8

// The two sides of a tunnel.
const (
	SideClient   Side = 1 // the terminal that sent CONNECT
	SideUpstream Side = 2 // the TLS server it reaches
)

func (s Side) String() string {
	if s == SideClient {
		return "client"
	}
	return "upstream"
}

// Kind classifies inspection errors so the caller can map them to events.
type Kind uint8

// Error kinds. See ErrorDecision for the event each one maps to.
const (
	KindNotTLS   Kind = iota + 1 // the client's first bytes are not TLS
	KindSSLv2                    // an SSL 2.0-format ClientHello
	KindSSL3                     // a ClientHello offering at most SSL 3.0
	KindParse                    // malformed records or handshake messages
	KindTooLarge                 // the handshake did not finish within MaxBytes
	KindTimeout                  // the handshake did not finish within Timeout
	KindAlert                    // a side sent a TLS alert during the handshake
	KindClosed                   // a side closed, reset, or failed a write
)

// String returns a stable lower-case name, usable as a metric label.
func (k Kind) String() string {
	switch k {
	case KindNotTLS:
		return "not_tls"
	case KindSSLv2:
		return "sslv2"
	case KindSSL3:
		return "ssl3"
	case KindParse:
		return "parse"
	case KindTooLarge:
		return "too_large"
	case KindTimeout:
		return "timeout"
	case KindAlert:
		return "alert"
	case KindClosed:
		return "closed"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Error is the error Inspect returns. Use errors.As to reach it.
type Error struct {
	Kind    Kind
	Side    Side   // whose bytes (or connection) caused it
	Version uint16 // KindSSLv2, KindSSL3: the version the client offered
	Alert   uint8  // KindAlert: the alert description (RFC 8446 6)
	Detail  string // for people, never contains secrets
	Err     error  // the underlying I/O error, if any
}

func (e *Error) Error() string {
	msg := "tlspeek: " + e.Kind.String() + " from " + e.Side.String()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

func parseErr(s Side, format string, args ...any) *Error {
	return &Error{Kind: KindParse, Side: s, Detail: fmt.Sprintf(format, args...)}
}

// Inspect reads the cleartext handshake from client, forwarding every byte to
// upstream unchanged, and the server's reply, forwarding it to client
// unchanged, until the handshake turns encrypted: after the ServerHello for
// TLS 1.3 (after the second one when a HelloRetryRequest is seen), after the
// ServerHello for TLS <= 1.2, or with NeedClientCert after the client's
// Certificate (or the point where it would be).
//
// Every read is parsed before it is forwarded. The client's bytes are held
// back until its ClientHello is complete and acceptable, so an SSL hello, a
// malformed hello or one over the cap never reaches the upstream; later a
// read that fails to parse is not forwarded, except a TLS alert, which is
// passed on so the peer learns why.
//
// On return nothing is buffered: the caller goes on with io.Copy on the same
// connections (keep them *net.TCPConn so splice stays available). The
// deadlines Inspect set are cleared. On error the Result holds what was seen
// so far and the caller should close both connections (except KindNotTLS
// with AllowNotTLS, see Config).
func Inspect(client, upstream net.Conn, cfg Config) (Result, error) {
	return InspectContext(context.Background(), client, upstream, cfg)
}

// InspectContext is Inspect that also stops, with a KindTimeout error
// wrapping ctx.Err(), when ctx ends or its deadline (if earlier than
// cfg.Timeout) passes.
func InspectContext(ctx context.Context, client, upstream net.Conn, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	deadline := time.Now().Add(cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = client.SetDeadline(deadline)
	_ = upstream.SetDeadline(deadline)
	// Cancellation moves the deadlines into the past, which wakes any
	// blocked Read or Write. mu orders that against the final clearing.
	var mu sync.Mutex
	stop := func() bool { return true }
	if ctx.Done() != nil { // Background never ends: skip the watcher
		stop = context.AfterFunc(ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			_ = client.SetDeadline(time.Unix(1, 0))
			_ = upstream.SetDeadline(time.Unix(1, 0))
		})
	}
	defer func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		_ = client.SetDeadline(time.Time{})
		_ = upstream.SetDeadline(time.Time{})
	}()
	res, err := inspect(client, upstream, cfg)
	if e, ok := err.(*Error); ok && e.Kind == KindTimeout && ctx.Err() != nil {
		e.Err = ctx.Err()
	}
	return res, err
}

func inspect(client, upstream net.Conn, cfg Config) (Result, error) {
	s := newSession(cfg)
	buf := make([]byte, min(readChunk, cfg.MaxBytes))
	held := 0 // client bytes read but held back until the ClientHello is whole
	early := cfg.Early
	var readUp, readDown int
	checked := false // HelloCheck has run
	for !s.done {
		src, dst, read := client, upstream, &readUp
		side := SideClient
		if !s.phase.readsClient() {
			src, dst, read, side = upstream, client, &readDown, SideUpstream
		}
		room := cfg.MaxBytes - *read
		if room <= 0 {
			return s.res, &Error{Kind: KindTooLarge, Side: side,
				Detail: fmt.Sprintf("handshake not finished after %d bytes", cfg.MaxBytes)}
		}
		if held == len(buf) { // a ClientHello larger than one buffer
			buf = append(buf, make([]byte, min(len(buf), room))...)
		}
		var n int
		var rerr error
		if side == SideClient && len(early) > 0 {
			n = copy(buf[held:min(len(buf), held+room)], early)
			early = early[n:]
		} else {
			n, rerr = src.Read(buf[held:min(len(buf), held+room)])
		}
		*read += n
		if n > 0 {
			fwd, perr := s.process(side, buf[:held+n], held)
			switch {
			case perr == nil && side == SideClient && s.phase.holdsClient():
				// Parsed but not forwarded yet: a hello that turns out to be
				// refused never reaches the upstream.
				held += n
			case fwd:
				if side == SideClient && cfg.HelloCheck != nil && !checked && s.phase != phaseClientHello {
					checked = true
					if err := cfg.HelloCheck(&s.res); err != nil {
						return s.res, err
					}
				}
				if err := s.forward(side, dst, buf[:held+n]); err != nil {
					return s.res, err
				}
				held = 0
			}
			if perr != nil {
				return s.res, perr
			}
		}
		if rerr != nil && !s.done {
			return s.res, ioErr(side, rerr)
		}
	}
	return s.res, nil
}

func (s Side) other() Side {
	if s == SideClient {
		return SideUpstream
	}
	return SideClient
}

func ioErr(side Side, err error) *Error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Kind: KindTimeout, Side: side, Detail: "handshake not finished in time", Err: err}
	case errors.Is(err, io.EOF):
		return &Error{Kind: KindClosed, Side: side, Detail: "closed during the handshake"}
	default:
		return &Error{Kind: KindClosed, Side: side, Err: err}
	}
}
