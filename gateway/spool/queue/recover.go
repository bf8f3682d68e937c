package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/storegate/storegate/internal/durable"
)

// Crash recovery. Open runs this on every start; `storegate spool check` runs
// it read-only. Every case below ends in a usable directory; none stops the
// start-up or waits for a person.
//
//  1. "meta.tmp" left by a crash during a metadata write: removed (the old
//     "meta" is intact because the rename never happened).
//  2. "meta" missing: a fresh directory, or metadata lost; every segment file
//     found is adopted. "meta" damaged (bad checksum or syntax): reported,
//     moved to quarantine/, and every segment file is adopted.
//  3. A segment listed in "meta" whose file is missing: reported in
//     Report.Missing and dropped from the list. (Also seen, with nothing lost,
//     if the disk was full when a delivered segment was deleted and the
//     process died before the metadata could be rewritten.)
//  4. A segment file not listed, numbered below "next": its deletion was cut
//     short (metadata is written before files are removed): removed. Numbered
//     at or above "next": its creation was cut short before the metadata
//     named it: adopted.
//  5. "limit N OFF" in the metadata: a write to segment N failed and the
//     truncation that should have followed failed too: truncated at OFF.
//  6. A segment header that is damaged: reported; its records are still read.
//  7. Damaged bytes followed by intact records (a bad sector, a bit flip, a
//     zeroed block in the middle): the range is copied to
//     quarantine/seg-N-OFF.bad, counted in Report, and skipped; the records
//     after it are delivered.
//  8. A damaged tail: in the newest segment this is a torn write the crash
//     cut short, zero-filled or garbage; it was never acknowledged, because
//     the 202 follows the fdatasync, so it is truncated. In an older segment
//     (which was complete when it was closed) the tail is damage: quarantined
//     as in 7, then truncated.
//  9. Ack files: a torn or damaged entry is ignored; its record is delivered
//     again (at-least-once; the idempotency key lets the receiver drop it).
//     An ack file without its segment is removed.
//  10. A segment whose records are all acknowledged: deleted.
//
// A new process never appends to a segment from before the crash: the first
// Append starts a new segment.

// Report describes what recovery or a check found.
type Report struct {
	Dir         string          `json:"dir"`
	Meta        string          `json:"meta"` // "ok", "missing", or the damage found
	Segments    []SegmentReport `json:"segments"`
	Missing     []uint64        `json:"missing_segments,omitempty"`
	Removed     []uint64        `json:"removed_segments,omitempty"` // leftovers of finished deletions
	Adopted     []uint64        `json:"adopted_segments,omitempty"` // files the metadata did not name
	Unreadable  []string        `json:"unreadable,omitempty"`       // files that could not be read
	Records     int             `json:"records"`
	Pending     int             `json:"pending"`
	PendingSize int64           `json:"pending_bytes"`
}

// SegmentReport is one segment's findings.
type SegmentReport struct {
	Num         uint64   `json:"num"`
	Size        int64    `json:"size"`
	HeaderOK    bool     `json:"header_ok"`
	Records     int      `json:"records"`
	Pending     int      `json:"pending"`
	Quarantined []Region `json:"quarantined,omitempty"`
	Tail        *Region  `json:"tail,omitempty"` // truncated tail
	TailZero    bool     `json:"tail_zero,omitempty"`
	TailTorn    bool     `json:"tail_torn,omitempty"` // newest segment: an unacknowledged write
	Limited     bool     `json:"limited,omitempty"`   // cut at a "limit" from the metadata
	BadAcks     int      `json:"bad_acks,omitempty"`
}

// QuarantinedRegions counts the damaged ranges set aside (cases 7 and 8).
func (r *Report) QuarantinedRegions() (n int, bytes int64) {
	for _, s := range r.Segments {
		for _, q := range s.Quarantined {
			n++
			bytes += q.Len()
		}
		if s.Tail != nil && !s.TailTorn {
			n++
			bytes += s.Tail.Len()
		}
	}
	return n, bytes
}

// Problems lists, in words, everything that was not a clean shutdown's state.
// Torn tails of the newest segment are normal after a crash and not listed.
func (r *Report) Problems() []string {
	var p []string
	if r.Meta != "ok" && r.Meta != "missing" {
		p = append(p, "metadata: "+r.Meta)
	}
	if r.Meta == "missing" && len(r.Segments) > 0 {
		p = append(p, "metadata missing; segment files adopted")
	}
	for _, n := range r.Missing {
		p = append(p, fmt.Sprintf("segment %d is listed but its file is missing", n))
	}
	for _, u := range r.Unreadable {
		p = append(p, "unreadable: "+u)
	}
	for _, s := range r.Segments {
		if !s.HeaderOK && s.Size >= segHeaderLen {
			p = append(p, fmt.Sprintf("segment %d: damaged header", s.Num))
		}
		for _, q := range s.Quarantined {
			p = append(p, fmt.Sprintf("segment %d: %d damaged bytes at %d quarantined", s.Num, q.Len(), q.Off))
		}
		if s.Tail != nil && !s.TailTorn {
			p = append(p, fmt.Sprintf("segment %d: %d damaged bytes at the end (%d) quarantined", s.Num, s.Tail.Len(), s.Tail.Off))
		}
		if s.BadAcks > 0 {
			p = append(p, fmt.Sprintf("segment %d: %d damaged ack entries (records will be delivered again)", s.Num, s.BadAcks))
		}
	}
	return p
}

type recovered struct {
	segs map[uint64]*segment
	next uint64
}

const quarantineDir = "quarantine"

func parseSegName(name string) (uint64, string, bool) {
	base, ok := strings.CutPrefix(name, "seg-")
	if !ok {
		return 0, "", false
	}
	num, ext, ok := strings.Cut(base, ".")
	if !ok || len(num) != 16 || (ext != "log" && ext != "ack") {
		return 0, "", false
	}
	n, err := strconv.ParseUint(num, 16, 64)
	return n, ext, err == nil
}

// recoverDir analyses dir and, if fix, repairs it. fn receives the pending
// records (fix or not).
func recoverDir(dir string, fix bool, maxSeg int64, fn func(Pos, []byte)) (*Report, recovered, error) {
	rep := &Report{Dir: dir, Meta: "ok"}
	st := recovered{segs: map[uint64]*segment{}, next: 1}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return rep, st, err
	}
	if fix {
		os.Remove(filepath.Join(dir, metaTmpName))
	}
	logs, acks := map[uint64]bool{}, map[uint64]bool{}
	for _, e := range entries {
		n, ext, ok := parseSegName(e.Name())
		if !ok {
			continue
		}
		if ext == "log" {
			logs[n] = true
		} else {
			acks[n] = true
		}
	}
	live := map[uint64]bool{}
	var m meta
	raw, err := os.ReadFile(filepath.Join(dir, metaName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rep.Meta = "missing"
	case err != nil:
		rep.Meta = "unreadable: " + err.Error()
	default:
		m, err = parseMeta(raw)
		if err != nil {
			rep.Meta = "damaged: " + err.Error()
			if fix {
				quarantine(dir, "meta.bad", raw)
			}
		}
	}
	if rep.Meta == "ok" {
		st.next = max(m.Next, 1)
		for _, n := range m.Live {
			if logs[n] {
				live[n] = true
			} else {
				rep.Missing = append(rep.Missing, n)
			}
		}
		for n := range logs {
			if live[n] {
				continue
			}
			if n < m.Next {
				rep.Removed = append(rep.Removed, n)
				if fix {
					os.Remove(filepath.Join(dir, segName(n)))
					os.Remove(filepath.Join(dir, ackName(n)))
				}
				continue
			}
			live[n] = true
			rep.Adopted = append(rep.Adopted, n)
		}
	} else {
		for n := range logs {
			live[n] = true
			rep.Adopted = append(rep.Adopted, n)
		}
	}
	slices.Sort(rep.Missing)
	slices.Sort(rep.Removed)
	slices.Sort(rep.Adopted)
	for n := range acks {
		if !live[n] && fix {
			os.Remove(filepath.Join(dir, ackName(n)))
		}
	}
	order := make([]uint64, 0, len(live))
	for n := range live {
		order = append(order, n)
		st.next = max(st.next, n+1)
	}
	slices.Sort(order)
	var deleted []uint64
	for i, n := range order {
		newest := i == len(order)-1
		s, sr, ok := recoverSegment(dir, n, newest, m.Limits[n], fix, maxSeg, fn, rep)
		if !ok {
			continue
		}
		rep.Segments = append(rep.Segments, sr)
		rep.Records += sr.Records
		rep.Pending += sr.Pending
		if sr.Pending == 0 {
			deleted = append(deleted, n)
			continue
		}
		st.segs[n] = s
	}
	if fix {
		mm := meta{Next: st.next}
		for n := range st.segs {
			mm.Live = append(mm.Live, n)
		}
		if err := durable.WriteFile(dir, metaName, metaTmpName, mm.encode(), 0o600); err == nil {
			for _, n := range deleted {
				os.Remove(filepath.Join(dir, segName(n)))
				os.Remove(filepath.Join(dir, ackName(n)))
			}
		}
	}
	return rep, st, nil
}

func recoverSegment(dir string, n uint64, newest bool, limit int64, fix bool, maxSeg int64, fn func(Pos, []byte), rep *Report) (*segment, SegmentReport, bool) {
	sr := SegmentReport{Num: n}
	path := filepath.Join(dir, segName(n))
	var b []byte
	fi, err := os.Stat(path)
	if err == nil && fi.Size() > maxSeg {
		// Segments never grow past SegmentBytes plus one record: this is
		// damage, and reading it whole could exhaust a small box's memory.
		err = fmt.Errorf("%d bytes, more than a segment can hold (%d)", fi.Size(), maxSeg)
	}
	if err == nil {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		rep.Unreadable = append(rep.Unreadable, fmt.Sprintf("%s: %v", segName(n), err))
		if fix {
			os.MkdirAll(filepath.Join(dir, quarantineDir), 0o700)
			os.Rename(path, filepath.Join(dir, quarantineDir, segName(n)))
		}
		return nil, sr, false
	}
	if limit > 0 && limit < int64(len(b)) {
		b = b[:limit]
		sr.Limited = true
		if fix {
			os.Truncate(path, limit)
		}
	}
	sr.Size = int64(len(b))
	var acked map[int64]bool
	if ab, err := os.ReadFile(filepath.Join(dir, ackName(n))); err == nil {
		acked, sr.BadAcks = parseAcks(ab)
	}
	res := scanSegment(b, n, func(off int64, payload []byte) {
		if acked[off] {
			return
		}
		sr.Pending++
		rep.PendingSize += int64(len(payload))
		if fn != nil {
			fn(Pos{Seg: n, Off: off, Len: len(payload)}, payload)
		}
	})
	sr.HeaderOK = res.HeaderOK
	sr.Records = res.Records
	sr.Quarantined = res.Bad
	for _, q := range res.Bad {
		if fix {
			quarantine(dir, fmt.Sprintf("%s-%d.bad", segName(n), q.Off), b[q.Off:q.End])
		}
	}
	if res.Tail.Len() > 0 {
		t := res.Tail
		sr.Tail = &t
		sr.TailZero = res.TailZero
		sr.TailTorn = newest
		if fix {
			if !sr.TailTorn {
				quarantine(dir, fmt.Sprintf("%s-%d.bad", segName(n), t.Off), b[t.Off:t.End])
			}
			os.Truncate(path, t.Off)
		}
		sr.Size = t.Off
	}
	return &segment{num: n, size: max(res.Valid, segHeaderLen), live: sr.Pending}, sr, true
}

// quarantine keeps a copy of damaged bytes for inspection. A name that
// exists already (the same damage seen at an earlier start) is left alone.
func quarantine(dir, name string, data []byte) {
	q := filepath.Join(dir, quarantineDir)
	if err := os.MkdirAll(q, 0o700); err != nil {
		return
	}
	if _, err := os.Stat(filepath.Join(q, name)); err == nil {
		return
	}
	durable.WriteFile(q, name, name+".tmp", data, 0o600)
}

// checkMaxSegment is the largest segment file Check reads; Open uses
// SegmentBytes plus the largest record.
const checkMaxSegment = 1 << 30

// Check verifies the log in dir without changing anything and reports what
// recovery would find and do.
func Check(dir string) (*Report, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	rep, _, err := recoverDir(dir, false, checkMaxSegment, nil)
	return rep, err
}
