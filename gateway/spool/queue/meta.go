package queue

import (
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"

	"github.com/storegate/storegate/internal/durable"
)

// The metadata file "meta" names the live segments. It changes only when a
// segment is created or deleted, is replaced atomically (temp file, fsync,
// rename, fsync of the directory) and ends in a checksum line:
//
//	storegate-spool 1
//	next 17
//	live 3 5 16
//	limit 16 4096
//	crc 1a2b3c4d
//
// "limit N OFF" marks a segment whose tail after OFF belongs to a write that
// failed; recovery truncates it there.
const (
	metaName    = "meta"
	metaTmpName = "meta.tmp"
	metaHeader  = "storegate-spool 1"
)

type meta struct {
	Next   uint64
	Live   []uint64
	Limits map[uint64]int64
}

func (m meta) encode() []byte {
	var b strings.Builder
	b.WriteString(metaHeader + "\n")
	fmt.Fprintf(&b, "next %d\n", m.Next)
	b.WriteString("live")
	live := slices.Clone(m.Live)
	slices.Sort(live)
	for _, n := range live {
		fmt.Fprintf(&b, " %d", n)
	}
	b.WriteString("\n")
	keys := make([]uint64, 0, len(m.Limits))
	for k := range m.Limits {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "limit %d %d\n", k, m.Limits[k])
	}
	body := b.String()
	return fmt.Appendf([]byte(body), "crc %08x\n", crc32.Checksum([]byte(body), castagnoli))
}

// parseMeta decodes a metadata file strictly: any damage is an error.
func parseMeta(b []byte) (meta, error) {
	m := meta{Limits: map[uint64]int64{}}
	s := string(b)
	i := strings.LastIndex(strings.TrimSuffix(s, "\n"), "\n")
	if i < 0 || !strings.HasSuffix(s, "\n") {
		return m, errors.New("truncated")
	}
	body, crcLine := s[:i+1], strings.TrimSuffix(s[i+1:], "\n")
	want, ok := strings.CutPrefix(crcLine, "crc ")
	if !ok {
		return m, errors.New("no checksum line")
	}
	if got := fmt.Sprintf("%08x", crc32.Checksum([]byte(body), castagnoli)); got != want {
		return m, fmt.Errorf("checksum %s does not match %s", want, got)
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if lines[0] != metaHeader {
		return m, fmt.Errorf("unknown header %q", lines[0])
	}
	seenNext, seenLive := false, false
	for _, ln := range lines[1:] {
		f := strings.Fields(ln)
		if len(f) == 0 {
			return m, errors.New("empty line")
		}
		switch f[0] {
		case "next":
			if len(f) != 2 || seenNext {
				return m, fmt.Errorf("bad line %q", ln)
			}
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return m, fmt.Errorf("bad next: %v", err)
			}
			m.Next, seenNext = n, true
		case "live":
			if seenLive {
				return m, errors.New("two live lines")
			}
			seenLive = true
			for _, v := range f[1:] {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return m, fmt.Errorf("bad live segment: %v", err)
				}
				m.Live = append(m.Live, n)
			}
		case "limit":
			if len(f) != 3 {
				return m, fmt.Errorf("bad line %q", ln)
			}
			n, err1 := strconv.ParseUint(f[1], 10, 64)
			off, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil || off < segHeaderLen {
				return m, fmt.Errorf("bad line %q", ln)
			}
			m.Limits[n] = off
		default:
			return m, fmt.Errorf("unknown line %q", ln)
		}
	}
	if !seenNext || !seenLive {
		return m, errors.New("missing next or live line")
	}
	for _, n := range m.Live {
		if n >= m.Next {
			return m, fmt.Errorf("live segment %d not below next %d", n, m.Next)
		}
	}
	return m, nil
}

// WriteFileDurable is for other parts of the spool (dead letters): the file
// is complete and on disk, or absent, after a crash.
func WriteFileDurable(dir, name string, data []byte) error {
	return durable.WriteFile(dir, name, name+".tmp", data, 0o600)
}
