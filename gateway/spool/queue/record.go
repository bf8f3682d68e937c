// Package queue is the spool's durable, append-only record log: segment files
// with a length and checksum per record, group commit, acknowledgements, crash
// recovery and an offline check. It uses only the standard library and x/sys, so
// the terminal-side client can embed it without the proxy server.
package queue

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
)

// On-disk layout of a segment file:
//
//	file header: "SGSPOOL1" | segment number (uint64 LE)          16 bytes
//	record:      'S' 'G' 'R' 0xA5 | length (uint32 LE) | crc (uint32 LE) | payload
//
// crc is CRC-32C over the four length bytes followed by the payload, so a
// damaged length is caught as surely as a damaged payload. The magic lets
// recovery find the next record after a damaged one.
const (
	segMagic     = "SGSPOOL1"
	segHeaderLen = 16
	recHeaderLen = 12
	// MaxRecord bounds one record's payload; a longer length is damage.
	MaxRecord = 64 << 20
)

var recMagic = [4]byte{'S', 'G', 'R', 0xA5}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func recordCRC(payload []byte) uint32 {
	var l [4]byte
	binary.LittleEndian.PutUint32(l[:], uint32(len(payload)))
	c := crc32.Update(0, castagnoli, l[:])
	return crc32.Update(c, castagnoli, payload)
}

// appendRecord appends the framed payload to dst.
func appendRecord(dst, payload []byte) []byte {
	dst = append(dst, recMagic[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, recordCRC(payload))
	return append(dst, payload...)
}

// parseRecord reads one record at the start of b. ok is false when b does not
// start with a complete, intact record.
func parseRecord(b []byte) (payload []byte, n int, ok bool) {
	if len(b) < recHeaderLen || !bytes.Equal(b[:4], recMagic[:]) {
		return nil, 0, false
	}
	l := binary.LittleEndian.Uint32(b[4:8])
	if l > MaxRecord || uint64(len(b)-recHeaderLen) < uint64(l) {
		return nil, 0, false
	}
	payload = b[recHeaderLen : recHeaderLen+int(l)]
	if binary.LittleEndian.Uint32(b[8:12]) != recordCRC(payload) {
		return nil, 0, false
	}
	return payload, recHeaderLen + int(l), true
}

// segmentHeader returns the 16-byte header of segment num.
func segmentHeader(num uint64) []byte {
	h := make([]byte, 0, segHeaderLen)
	h = append(h, segMagic...)
	return binary.LittleEndian.AppendUint64(h, num)
}

// Region is the byte range [Off, End) of a segment file.
type Region struct {
	Off int64 `json:"off"`
	End int64 `json:"end"`
}

// Len is the region's size in bytes.
func (r Region) Len() int64 { return r.End - r.Off }

// scanResult is what scanSegment found in one segment's bytes.
type scanResult struct {
	HeaderOK bool
	Records  int
	Valid    int64    // end of the last intact record: where the data ends
	Bad      []Region // damaged ranges followed by intact records
	Tail     Region   // damaged range at the end; empty if none
	TailZero bool     // the damaged tail is all zero bytes
}

// scanSegment walks the records of a whole segment file in b, calling fn with
// each intact record's offset and payload (valid only during the call). It
// never fails: damage is described in the result.
func scanSegment(b []byte, num uint64, fn func(off int64, payload []byte)) scanResult {
	var res scanResult
	pos := 0
	if len(b) >= segHeaderLen {
		res.HeaderOK = bytes.Equal(b[:segHeaderLen], segmentHeader(num))
		pos = segHeaderLen
	} else {
		// A header cut short by a crash: nothing was ever stored here.
		res.Valid = 0
		if len(b) > 0 {
			res.Tail = Region{0, int64(len(b))}
			res.TailZero = allZero(b)
		}
		return res
	}
	res.Valid = int64(pos)
	for pos < len(b) {
		payload, n, ok := parseRecord(b[pos:])
		if ok {
			if fn != nil {
				fn(int64(pos), payload)
			}
			res.Records++
			pos += n
			res.Valid = int64(pos)
			continue
		}
		next := findRecord(b, pos+1)
		if next < 0 {
			res.Tail = Region{int64(pos), int64(len(b))}
			res.TailZero = allZero(b[pos:])
			break
		}
		res.Bad = append(res.Bad, Region{int64(pos), int64(next)})
		pos = next
	}
	return res
}

// findRecord returns the offset of the first intact record at or after from,
// or -1.
func findRecord(b []byte, from int) int {
	for from < len(b) {
		i := bytes.Index(b[from:], recMagic[:])
		if i < 0 {
			return -1
		}
		if _, _, ok := parseRecord(b[from+i:]); ok {
			return from + i
		}
		from += i + 1
	}
	return -1
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Ack files hold 8-byte entries: record offset (uint32 LE) and the CRC-32C of
// those four bytes. A torn or damaged entry is skipped; its record is then
// delivered again, which at-least-once delivery allows.
const ackEntryLen = 8

func appendAck(dst []byte, off uint32) []byte {
	var o [4]byte
	binary.LittleEndian.PutUint32(o[:], off)
	dst = append(dst, o[:]...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(o[:], castagnoli))
}

// parseAcks returns the offsets recorded in an ack file and how many entries
// were damaged.
func parseAcks(b []byte) (offs map[int64]bool, bad int) {
	offs = make(map[int64]bool, len(b)/ackEntryLen)
	for len(b) >= ackEntryLen {
		o := b[:4]
		if binary.LittleEndian.Uint32(b[4:8]) == crc32.Checksum(o, castagnoli) {
			offs[int64(binary.LittleEndian.Uint32(o))] = true
		} else {
			bad++
		}
		b = b[ackEntryLen:]
	}
	if len(b) > 0 {
		bad++
	}
	return offs, bad
}
