package gateway

import (
	"bytes"
	"strconv"
)

// requestHead is a parsed HTTP/1.x request head. Its byte slices point into the
// read buffer and are valid only until the buffer is released.
type requestHead struct {
	method  []byte
	target  []byte
	proto   []byte
	headers int
	// contentLength is -1 when absent; parseHead reads it only to refuse a
	// malformed or conflicting Content-Length.
	contentLength int64
}

// headError is a request the gateway cannot accept, with the status to send.
type headError struct {
	status int
	msg    string
}

func (e *headError) Error() string { return e.msg }

var (
	errHeadTooLarge  = &headError{431, "request header fields too large"}
	errTooMany       = &headError{431, "too many header fields"}
	errBadLine       = &headError{400, "malformed request line"}
	errBadVersion    = &headError{505, "HTTP version not supported; use HTTP/1.1"}
	errBadHeader     = &headError{400, "malformed header field"}
	errBadAuthority  = &headError{400, "malformed CONNECT authority; want host:port"}
	errBadPort       = &headError{400, "malformed port in CONNECT authority; want 1-65535"}
	errBareLF        = &headError{400, "bare LF in request head"}
	errObsFold       = &headError{400, "obsolete line folding in header field"}
	errContentLength = &headError{400, "malformed Content-Length"}
)

// headEnd returns the length of the request head (through the blank line)
// in b, or -1 if the head is not complete yet. Both CRLF and bare-LF line
// ends are found here; parseHead refuses bare LF.
func headEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	return -1
}

// parseHead parses a complete request head (as delimited by headEnd). It
// allocates nothing.
func parseHead(b []byte, maxHeaders int, h *requestHead) error {
	*h = requestHead{contentLength: -1}
	line, rest, ok := cutLine(b)
	if !ok {
		return errBareLF
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errBadLine
	}
	h.method = line[:sp1]
	line = line[sp1+1:]
	sp2 := bytes.IndexByte(line, ' ')
	if sp2 <= 0 {
		return errBadLine
	}
	h.target, h.proto = line[:sp2], line[sp2+1:]
	for _, c := range h.method {
		if !isTokenChar(c) {
			return errBadLine
		}
	}
	for _, c := range h.target {
		if c <= ' ' || c == 0x7f {
			return errBadLine
		}
	}
	switch string(h.proto) {
	case "HTTP/1.1", "HTTP/1.0":
	default:
		if len(h.proto) >= 5 && string(h.proto[:5]) == "HTTP/" {
			return errBadVersion
		}
		return errBadLine
	}
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return errBareLF
		}
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errObsFold
		}
		h.headers++
		if h.headers > maxHeaders {
			return errTooMany
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errBadHeader
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !isTokenChar(c) {
				return errBadHeader
			}
		}
		for _, c := range value {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return errBadHeader
			}
		}
		if equalFold(name, "content-length") {
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (h.contentLength >= 0 && h.contentLength != n) {
				return errContentLength
			}
			h.contentLength = n
		}
	}
}

// cutLine splits off one CRLF-terminated line. A line ending in a bare LF is
// refused (ok=false): request smuggling lives in such differences.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil, len(b) == 0
	}
	if i == 0 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares ASCII case-insensitively against a lower-case string.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// parseAuthority splits a CONNECT target into host and port. IPv6 literals
// must be bracketed. The host is returned as written (not yet normalised).
func parseAuthority(a []byte) (host []byte, port int, err error) {
	if len(a) == 0 || len(a) > 300 {
		return nil, 0, errBadAuthority
	}
	var portb []byte
	if a[0] == '[' {
		end := bytes.IndexByte(a, ']')
		if end < 0 || end+1 >= len(a) || a[end+1] != ':' {
			return nil, 0, errBadAuthority
		}
		host, portb = a[1:end], a[end+2:]
		if bytes.IndexByte(host, ':') < 0 {
			return nil, 0, errBadAuthority // brackets are for IPv6 only
		}
	} else {
		colon := bytes.LastIndexByte(a, ':')
		if colon <= 0 {
			return nil, 0, errBadAuthority
		}
		host, portb = a[:colon], a[colon+1:]
		if bytes.IndexByte(host, ':') >= 0 {
			return nil, 0, errBadAuthority // unbracketed IPv6
		}
	}
	if len(host) == 0 || bytes.ContainsAny(host, "/@?#%\\[]") {
		return nil, 0, errBadAuthority
	}
	if len(portb) == 0 || len(portb) > 5 {
		return nil, 0, errBadPort
	}
	for _, c := range portb {
		if c < '0' || c > '9' {
			return nil, 0, errBadPort
		}
		port = port*10 + int(c-'0')
	}
	if port < 1 || port > 65535 {
		return nil, 0, errBadPort
	}
	return host, port, nil
}
