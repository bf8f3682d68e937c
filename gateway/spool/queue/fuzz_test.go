package queue

import (
	"bytes"
	"testing"
)

func seedSegment() []byte {
	b := segmentHeader(1)
	for _, p := range []string{"one", "", "three three", string(make([]byte, 40))} {
		b = appendRecord(b, []byte(p))
	}
	return b
}

// FuzzScanSegment feeds arbitrary segment files to the recovery scanner: it
// must not panic, every record it reports must be intact, in order and
// inside the input, the damaged ranges must lie inside the input and the
// damaged tail must end it. The ack parser gets the same bytes and must not
// panic either.
func FuzzScanSegment(f *testing.F) {
	good := seedSegment()
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(append(append([]byte{}, good...), make([]byte, 64)...))
	bad := append([]byte{}, good...)
	bad[segHeaderLen+recHeaderLen] ^= 1
	f.Add(bad)
	f.Add([]byte{})
	f.Add(segmentHeader(1)[:7])
	f.Fuzz(func(t *testing.T, b []byte) {
		pos := int64(segHeaderLen)
		res := scanSegment(b, 1, func(off int64, payload []byte) {
			if off < pos {
				t.Fatalf("record at %d before %d", off, pos)
			}
			p, n, ok := parseRecord(b[off:])
			if !ok || !bytes.Equal(p, payload) {
				t.Fatalf("reported record at %d does not parse", off)
			}
			pos = off + int64(n)
		})
		if res.Valid > int64(len(b)) {
			t.Fatalf("valid %d beyond %d", res.Valid, len(b))
		}
		for _, r := range res.Bad {
			if r.Off >= r.End || r.End > int64(len(b)) {
				t.Fatalf("bad region %+v", r)
			}
		}
		if res.Tail.Len() > 0 && res.Tail.End != int64(len(b)) {
			t.Fatalf("tail %+v does not end the file", res.Tail)
		}
		parseAcks(b)
	})
}

// FuzzParseMeta: the metadata parser rejects damage with an error and what it
// accepts survives an encode/parse round trip.
func FuzzParseMeta(f *testing.F) {
	f.Add(meta{Next: 5, Live: []uint64{1, 3}, Limits: map[uint64]int64{3: 100}}.encode())
	f.Add(meta{Next: 1}.encode())
	f.Add([]byte("storegate-spool 1\nnext 2\nlive 1\ncrc 00000000\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMeta(b)
		if err != nil {
			return
		}
		m2, err := parseMeta(m.encode())
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if m2.Next != m.Next || len(m2.Live) != len(m.Live) || len(m2.Limits) != len(m.Limits) {
			t.Fatalf("round trip %+v != %+v", m2, m)
		}
	})
}

// FuzzDecodeMessage: arbitrary payloads decode or fail cleanly; what decodes
// re-encodes to something that decodes to the same message.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(AppendMessage(nil, &Message{ID: "a", Key: "a", Destination: "https://h/p", Method: "POST",
		Header: map[string][]string{"X": {"1"}}, Body: []byte("hello")}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		m2, err := DecodeMessage(AppendMessage(nil, m))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if m2.ID != m.ID || m2.Destination != m.Destination || !bytes.Equal(m2.Body, m.Body) || len(m2.Header) != len(m.Header) {
			t.Fatalf("round trip differs")
		}
	})
}
