package gateway

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
	"github.com/storegate/storegate/gateway/tlspeek"
)

// errFronted: the ClientHello names another host than the CONNECT.
var errFronted = errors.New("server name does not match the CONNECT host")

// inspect reads the TLS handshake of a new tunnel (package tlspeek), forwards
// it, and applies the policy's TLS rules. It returns the handshake bytes it
// moved each way; ok=false means the tunnel must be closed (the event has been
// emitted). On return nothing is buffered, so the plain copy path (splice)
// takes over.
func (s *Server) inspect(cc *clientConn, up net.Conn, snap *policy.Snapshot, host string, port int, early []byte) (upB, downB int64, ok bool) {
	f := snap.File
	subj := snap.ClientSubjects()
	if cc.certOK {
		subj = nil // authenticated on the TLS listener already
	}
	cfg := tlspeek.Config{
		Timeout:        f.TLS.HandshakeTimeout.D(),
		NeedClientCert: subj.Len() > 0,
		AllowNotTLS:    snap.AllowRawTCP(host),
		Early:          early,
	}
	allowMismatch := !policy.On(f.TLS.RequireSNIMatch, true)
	if !allowMismatch {
		// Decided before the hello is forwarded: a domain-fronted session
		// never shows the upstream which host the client asked for.
		cfg.HelloCheck = func(r *tlspeek.Result) error {
			if !tlspeek.SNIMatches(r.SNI, host) {
				return errFronted
			}
			return nil
		}
	}
	res, err := tlspeek.Inspect(cc.c, up, cfg) // cfg.Timeout bounds it: no context, timer or watcher per tunnel
	target := net.JoinHostPort(host, strconv.Itoa(port))
	var d tlspeek.Decision
	if err != nil && errors.Is(err, net.ErrClosed) {
		// The gateway itself closed the tunnel (shutdown, a reload with
		// reload.established: close, the idle sweep), which reports it: the
		// client did nothing wrong and the handshake did not fail.
		return res.BytesUp, res.BytesDown, false
	}
	if err != nil {
		var te *tlspeek.Error
		if cfg.AllowNotTLS && errors.As(err, &te) && te.Kind == tlspeek.KindNotTLS {
			return res.BytesUp, res.BytesDown, true // raw TCP allowed for this host
		}
		d = tlspeek.ErrorDecision(err)
		if errors.Is(err, errFronted) {
			d = tlspeek.Decision{Event: events.NotAllowed, Reason: tlspeek.ReasonSNIMismatch,
				Msg: fmt.Sprintf("server name %q does not match the CONNECT host %q", res.SNI, host)}
			err = nil // the reason says it all
		}
	} else {
		d = tlspeek.Decide(res, tlspeek.Rules{
			MinVersion:            snap.MinTLSVersion(),
			AllowedSubjects:       subj,
			AllowSNIMismatch:      allowMismatch,
			AllowUnobservableCert: f.TLS.TLS13ClientCert == "allow",
			Host:                  host,
		})
	}
	fields := make([]events.Field, 0, 10)
	fields = append(fields, events.Str(events.KeyClient, cc.client.String()), events.Str(events.KeyTarget, target))
	fields = res.Fields(fields)
	if !d.OK {
		fields = append(fields, events.Str(events.KeyDecision, "refused"), events.Str(events.KeyReason, d.Reason))
		if err != nil {
			fields = append(fields, events.Str(events.KeyError, err.Error()))
		}
		switch d.Event {
		case events.NotAllowed, events.TLSVersion, events.TLSParse:
			s.stats.rejections.Add(1) // TLS validation failures, as the original counted them
		default:
			s.stats.errors.Add(1)
		}
		s.countRefusal("tls: " + d.Reason)
		s.emit.Emit(d.Event, d.Msg, fields...)
		return res.BytesUp, res.BytesDown, false
	}
	s.emit.Emit(d.Event, d.Msg, fields...)
	return res.BytesUp, res.BytesDown, true
}
