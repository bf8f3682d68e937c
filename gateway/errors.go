package gateway

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

var (
	errDraining      = &headError{503, "gateway is shutting down"}
	errTooManyTotal  = &headError{503, "too many connections"}
	errTooManyClient = &headError{429, "too many connections from this client"}
	errHeaderTimeout = &headError{408, "request head not received in time"}
	errTruncatedHead = &headError{400, "connection closed in the middle of the request head"}
	errNotConnect    = &headError{405, "not a CONNECT request: this gateway only tunnels with CONNECT"}
	errLinkDown      = &headError{503, "uplink is down"}
)

// upstreamError is a failure to reach the target (directly or via the relay).
type upstreamError struct {
	status int    // 502 or 504
	what   string // short reason for the client
	err    error  // detail for the event; never includes credentials
}

func (e *upstreamError) Error() string { return e.what + ": " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

func dialFailure(err error) *upstreamError {
	var ue *upstreamError
	if errors.As(err, &ue) {
		return ue
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &upstreamError{status: 504, what: "upstream timeout", err: err}
	}
	return &upstreamError{status: 502, what: "upstream unreachable", err: err}
}

// response is how one error is answered: status, a short body, the event.
type response struct {
	status  int
	body    string
	event   events.ID
	reason  string
	headers string
}

// responseFor is the one place that maps errors to HTTP answers and events.
func responseFor(err error) response {
	var ref *policy.Refusal
	var he *headError
	var ue *upstreamError
	switch {
	case errors.As(err, &ref):
		return response{status: 403, body: ref.Error(), event: events.NotAllowed, reason: ref.Reason}
	case errors.As(err, &ue):
		return response{status: ue.status, body: ue.what, event: events.NetworkError, reason: ue.what}
	case errors.As(err, &he):
		r := response{status: he.status, body: he.msg, event: events.OtherError, reason: he.msg}
		switch he {
		case errNotConnect:
			r.event, r.headers = events.NotConnect, "Allow: CONNECT\r\n"
		case errLinkDown:
			r.event, r.headers = events.NetworkError, "Retry-After: 5\r\n"
		case errTooManyTotal, errTooManyClient, errDraining:
			r.headers = "Retry-After: 1\r\n"
		}
		return r
	default:
		return response{status: 500, body: "internal error", event: events.OtherError, reason: "internal error"}
	}
}

var statusText = map[int]string{
	400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
	408: "Request Timeout", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
	500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
	504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

// refuse answers a request the gateway will not serve, counts it and emits
// the decision's one event, with extra fields if given.
func (s *Server) refuse(cc *clientConn, target string, err error, extra ...events.Field) {
	r := responseFor(err)
	switch r.event {
	case events.NotAllowed:
		s.stats.rejections.Add(1)
		s.countRefusal(r.reason)
	case events.NotConnect:
		s.countRefusal("not connect")
	default:
		s.stats.errors.Add(1)
		if r.status == 429 || r.status == 503 {
			s.countRefusal("limit")
		}
	}
	fields := []events.Field{
		events.Str(events.KeyClient, cc.client.String()),
		events.Str(events.KeyDecision, "refused"),
		events.Int(events.KeyStatus, int64(r.status)),
		events.Str(events.KeyReason, r.reason),
	}
	if target != "" {
		fields = append(fields, events.Str(events.KeyTarget, target))
	}
	if r.event == events.NetworkError || r.event == events.OtherError {
		fields = append(fields, events.Str(events.KeyError, err.Error()))
	}
	fields = append(fields, extra...)
	s.emit.Emit(r.event, r.body, fields...)

	var b strings.Builder
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(r.status))
	b.WriteByte(' ')
	b.WriteString(statusText[r.status])
	b.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n")
	b.WriteString(r.headers)
	b.WriteString("Content-Length: ")
	b.WriteString(strconv.Itoa(len(r.body) + 1))
	b.WriteString("\r\n\r\n")
	b.WriteString(r.body)
	b.WriteByte('\n')
	_, _ = cc.c.Write([]byte(b.String()))
	if tc, ok := cc.c.(*net.TCPConn); ok {
		// Let the client read the answer instead of a reset from unread input.
		_ = tc.CloseWrite()
	}
}

func (s *Server) countRefusal(reason string) {
	s.stats.mu.Lock()
	s.stats.refusals[reason]++
	s.stats.mu.Unlock()
}
