package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Message is a request waiting for delivery: what a record's payload holds in
// both the gateway's spool and the terminal's local spool.
type Message struct {
	ID          string              // the spool's id for the message
	Key         string              // Idempotency-Key sent with every attempt
	Destination string              // https://host[:port]/path?query
	Method      string              // POST unless the submitter asked otherwise
	Submitted   time.Time           // when the spool accepted it
	Header      map[string][]string // headers to deliver, canonical names
	Body        []byte
}

// Encoding, version 1: a version byte, then ID, Key, Destination and Method
// as uvarint-length-prefixed strings (Key empty when it equals ID), Submitted as a varint of Unix
// nanoseconds, the header count and per header its name, value count and
// values, and the body as the rest of the payload.
const messageVersion = 1

// maxHeaders bounds the header count a decoder accepts.
const maxHeaders = 1024

// AppendMessage appends m's encoding to dst.
func AppendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, messageVersion)
	key := m.Key
	if key == m.ID {
		key = ""
	}
	for _, s := range []string{m.ID, key, m.Destination, m.Method} {
		dst = appendString(dst, s)
	}
	dst = binary.AppendVarint(dst, m.Submitted.UnixNano())
	dst = binary.AppendUvarint(dst, uint64(len(m.Header)))
	for k, vs := range m.Header {
		dst = appendString(dst, k)
		dst = binary.AppendUvarint(dst, uint64(len(vs)))
		for _, v := range vs {
			dst = appendString(dst, v)
		}
	}
	return append(dst, m.Body...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

var errShort = errors.New("message truncated")

// DecodeMessage decodes a payload made by AppendMessage. Body aliases b.
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) == 0 || b[0] != messageVersion {
		return nil, errors.New("queue: unknown message version")
	}
	d := decoder{b: b[1:]}
	m := &Message{}
	m.ID = d.str()
	m.Key = d.str()
	if m.Key == "" {
		m.Key = m.ID
	}
	m.Destination = d.str()
	m.Method = d.str()
	ns := d.varint()
	m.Submitted = time.Unix(0, ns)
	nh := d.uvarint()
	if d.err == nil && nh > maxHeaders {
		d.err = fmt.Errorf("%d headers", nh)
	}
	if d.err == nil && nh > 0 {
		m.Header = make(map[string][]string, nh)
	}
	for i := uint64(0); i < nh && d.err == nil; i++ {
		k := d.str()
		nv := d.uvarint()
		if d.err == nil && nv > uint64(len(d.b)) {
			d.err = errShort
		}
		var vs []string
		for j := uint64(0); j < nv && d.err == nil; j++ {
			vs = append(vs, d.str())
		}
		if d.err == nil {
			m.Header[k] = append(m.Header[k], vs...)
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("queue: decoding message: %w", d.err)
	}
	m.Body = d.b
	return m, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	l := d.uvarint()
	if d.err != nil {
		return ""
	}
	if l > uint64(len(d.b)) {
		d.err = errShort
		return ""
	}
	s := string(d.b[:l])
	d.b = d.b[l:]
	return s
}
