package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

type got struct {
	pos     []Pos
	payload []string
}

func openT(t *testing.T, dir string, opts Options) (*Log, *Report, *got) {
	t.Helper()
	g := &got{}
	l, rep, err := Open(dir, opts, func(p Pos, b []byte) {
		g.pos = append(g.pos, p)
		g.payload = append(g.payload, string(b))
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, rep, g
}

func appendN(t *testing.T, l *Log, prefix string, n int) []Pos {
	t.Helper()
	var ps []Pos
	for i := range n {
		p, err := l.Append(context.Background(), []byte(fmt.Sprintf("%s-%03d", prefix, i)))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		ps = append(ps, p)
	}
	return ps
}

func names(prefix string, idx ...int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return out
}

func TestAppendReopenAck(t *testing.T) {
	dir := t.TempDir()
	l, _, _ := openT(t, dir, Options{SegmentBytes: 100})
	ps := appendN(t, l, "m", 20)
	for i, p := range ps {
		b, err := l.ReadAt(p)
		if err != nil || string(b) != fmt.Sprintf("m-%03d", i) {
			t.Fatalf("ReadAt(%v) = %q, %v", p, b, err)
		}
	}
	segsBefore := l.Stats().Segments
	if segsBefore < 3 {
		t.Fatalf("expected rotation into several segments, got %d", segsBefore)
	}
	// Ack the first 10: whole closed segments go away.
	for _, p := range ps[:10] {
		l.Ack(p)
	}
	st := l.Stats()
	if st.SegmentsDeleted == 0 || st.Segments >= segsBefore {
		t.Fatalf("no segment deleted after acks: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, segName(ps[0].Seg))); !os.IsNotExist(err) {
		t.Fatalf("first segment still on disk: %v", err)
	}
	l.Ack(ps[12]) // ack inside a live segment: recorded in its ack file
	l.Close()

	_, rep, g := openT(t, dir, Options{SegmentBytes: 100})
	want := names("m", 10, 11, 13, 14, 15, 16, 17, 18, 19)
	if !slices.Equal(g.payload, want) {
		t.Fatalf("pending after reopen = %v, want %v", g.payload, want)
	}
	if p := rep.Problems(); len(p) != 0 {
		t.Fatalf("clean reopen reported problems: %v", p)
	}
}

func TestGroupCommitSharesSyncs(t *testing.T) {
	l, _, _ := openT(t, t.TempDir(), Options{})
	const workers, each = 32, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := l.Append(context.Background(), bytes.Repeat([]byte{byte(w)}, 100+i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	if st.Records != workers*each {
		t.Fatalf("records = %d", st.Records)
	}
	if st.Batches >= st.Records {
		t.Fatalf("no batching: %d batches for %d records", st.Batches, st.Records)
	}
	t.Logf("%d records in %d batches (%.1f per fdatasync)", st.Records, st.Batches, float64(st.Records)/float64(st.Batches))
}

// writeSegments makes a directory with the given records, closes the log and
// returns the positions.
func writeSegments(t *testing.T, dir string, opts Options, prefix string, n int) []Pos {
	t.Helper()
	l, _, _ := openT(t, dir, opts)
	ps := appendN(t, l, prefix, n)
	l.Close()
	return ps
}

func segPath(dir string, n uint64) string { return filepath.Join(dir, segName(n)) }

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestRecoveryTornTail(t *testing.T) {
	dir := t.TempDir()
	ps := writeSegments(t, dir, Options{}, "a", 5)
	path := segPath(dir, ps[0].Seg)
	clean := size(t, path)
	// A record whose write the crash cut short: header and half the payload.
	rec := appendRecord(nil, []byte("this record was never acknowledged"))
	appendFile(t, path, rec[:len(rec)/2])

	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pending != 5 || len(rep.Segments) != 1 || rep.Segments[0].Tail == nil || !rep.Segments[0].TailTorn {
		t.Fatalf("check report: %+v", rep)
	}
	if size(t, path) == clean {
		t.Fatal("Check changed the file")
	}
	_, rep, g := openT(t, dir, Options{})
	if !slices.Equal(g.payload, names("a", 0, 1, 2, 3, 4)) {
		t.Fatalf("pending = %v", g.payload)
	}
	if got := size(t, path); got != clean {
		t.Fatalf("torn tail not truncated: size %d, want %d", got, clean)
	}
	if len(rep.Problems()) != 0 {
		t.Fatalf("a torn tail is normal after a crash, not a problem: %v", rep.Problems())
	}
}

func TestRecoveryZeroTail(t *testing.T) {
	dir := t.TempDir()
	ps := writeSegments(t, dir, Options{}, "z", 3)
	path := segPath(dir, ps[0].Seg)
	clean := size(t, path)
	appendFile(t, path, make([]byte, 8192))
	_, rep, g := openT(t, dir, Options{})
	if !slices.Equal(g.payload, names("z", 0, 1, 2)) {
		t.Fatalf("pending = %v", g.payload)
	}
	if !rep.Segments[0].TailZero {
		t.Fatalf("zero tail not reported: %+v", rep.Segments[0])
	}
	if got := size(t, path); got != clean {
		t.Fatalf("zero tail not truncated: %d, want %d", got, clean)
	}
}

func TestRecoveryCorruptMiddle(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte, off int64)
	}{
		{"payload bit flip", func(b []byte, off int64) { b[off+recHeaderLen+2] ^= 0x40 }},
		{"length field", func(b []byte, off int64) { b[off+5] = 0x7f }},
		{"zeroed record", func(b []byte, off int64) { clear(b[off : off+recHeaderLen+5]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ps := writeSegments(t, dir, Options{}, "c", 6)
			path := segPath(dir, ps[0].Seg)
			b, _ := os.ReadFile(path)
			tc.damage(b, ps[2].Off)
			os.WriteFile(path, b, 0o600)

			_, rep, g := openT(t, dir, Options{})
			if !slices.Equal(g.payload, names("c", 0, 1, 3, 4, 5)) {
				t.Fatalf("pending = %v, want the records after the damage too", g.payload)
			}
			n, _ := rep.QuarantinedRegions()
			if n != 1 || len(rep.Problems()) != 1 {
				t.Fatalf("quarantined %d regions, problems %v", n, rep.Problems())
			}
			qs, _ := filepath.Glob(filepath.Join(dir, quarantineDir, "*.bad"))
			if len(qs) != 1 {
				t.Fatalf("quarantine files: %v", qs)
			}
			// The damaged bytes are kept for inspection.
			q, _ := os.ReadFile(qs[0])
			if !bytes.Equal(q, b[ps[2].Off:ps[3].Off]) {
				t.Fatalf("quarantined bytes differ")
			}
		})
	}
}

func TestRecoveryOlderSegmentTailQuarantined(t *testing.T) {
	dir := t.TempDir()
	ps := writeSegments(t, dir, Options{SegmentBytes: 100}, "o", 6)
	first := ps[0].Seg
	if ps[5].Seg == first {
		t.Fatal("expected several segments")
	}
	path := segPath(dir, first)
	b, _ := os.ReadFile(path)
	last := ps[0]
	for _, p := range ps {
		if p.Seg == first {
			last = p
		}
	}
	b[last.Off+recHeaderLen] ^= 1
	os.WriteFile(path, b, 0o600)
	_, rep, g := openT(t, dir, Options{SegmentBytes: 100})
	if slices.Contains(g.payload, fmt.Sprintf("o-%03d", slices.Index(ps, last))) || len(g.payload) != 5 {
		t.Fatalf("pending = %v", g.payload)
	}
	if n, _ := rep.QuarantinedRegions(); n != 1 {
		t.Fatalf("damaged tail of a closed segment must be quarantined: %+v", rep.Segments)
	}
}

func TestRecoveryMissingSegment(t *testing.T) {
	dir := t.TempDir()
	ps := writeSegments(t, dir, Options{SegmentBytes: 100}, "s", 6)
	os.Remove(segPath(dir, ps[0].Seg))
	_, rep, g := openT(t, dir, Options{SegmentBytes: 100})
	if !slices.Equal(rep.Missing, []uint64{ps[0].Seg}) {
		t.Fatalf("missing = %v", rep.Missing)
	}
	for _, p := range g.payload {
		if p == "s-000" {
			t.Fatal("record of the missing segment returned")
		}
	}
	if len(g.payload) == 0 || g.payload[len(g.payload)-1] != "s-005" {
		t.Fatalf("later segments not recovered: %v", g.payload)
	}
	// Reported once: the metadata no longer lists it.
	l2rep, _ := Check(dir)
	if len(l2rep.Missing) != 0 {
		t.Fatalf("missing segment reported again: %v", l2rep.Missing)
	}
}

func TestRecoveryMetadataCases(t *testing.T) {
	t.Run("damaged meta adopts segments", func(t *testing.T) {
		dir := t.TempDir()
		writeSegments(t, dir, Options{}, "d", 3)
		os.WriteFile(filepath.Join(dir, metaName), []byte("storegate-spool 1\nnext x\n"), 0o600)
		_, rep, g := openT(t, dir, Options{})
		if len(g.payload) != 3 || rep.Meta == "ok" {
			t.Fatalf("pending %v, meta %q", g.payload, rep.Meta)
		}
		if _, err := os.Stat(filepath.Join(dir, quarantineDir, "meta.bad")); err != nil {
			t.Fatal("damaged meta not kept:", err)
		}
	})
	t.Run("missing meta adopts segments", func(t *testing.T) {
		dir := t.TempDir()
		writeSegments(t, dir, Options{}, "d", 3)
		os.Remove(filepath.Join(dir, metaName))
		_, _, g := openT(t, dir, Options{})
		if len(g.payload) != 3 {
			t.Fatalf("pending %v", g.payload)
		}
	})
	t.Run("leftover of a finished deletion removed", func(t *testing.T) {
		dir := t.TempDir()
		ps := writeSegments(t, dir, Options{}, "d", 3)
		m := meta{Next: ps[0].Seg + 1} // lists nothing: the segment was deleted
		os.WriteFile(filepath.Join(dir, metaName), m.encode(), 0o600)
		os.WriteFile(filepath.Join(dir, metaTmpName), []byte("half"), 0o600)
		_, rep, g := openT(t, dir, Options{})
		if len(g.payload) != 0 || !slices.Equal(rep.Removed, []uint64{ps[0].Seg}) {
			t.Fatalf("pending %v removed %v", g.payload, rep.Removed)
		}
		if _, err := os.Stat(segPath(dir, ps[0].Seg)); !os.IsNotExist(err) {
			t.Fatal("leftover segment still there")
		}
		if _, err := os.Stat(filepath.Join(dir, metaTmpName)); !os.IsNotExist(err) {
			t.Fatal("meta.tmp still there")
		}
	})
	t.Run("unrecorded new segment adopted", func(t *testing.T) {
		dir := t.TempDir()
		ps := writeSegments(t, dir, Options{}, "d", 3)
		m := meta{Next: ps[0].Seg} // the crash came before the metadata named it
		os.WriteFile(filepath.Join(dir, metaName), m.encode(), 0o600)
		_, rep, g := openT(t, dir, Options{})
		if len(g.payload) != 3 || !slices.Equal(rep.Adopted, []uint64{ps[0].Seg}) {
			t.Fatalf("pending %v adopted %v", g.payload, rep.Adopted)
		}
	})
	t.Run("limit truncates a failed write", func(t *testing.T) {
		dir := t.TempDir()
		ps := writeSegments(t, dir, Options{}, "d", 3)
		m := meta{Next: ps[0].Seg + 1, Live: []uint64{ps[0].Seg}, Limits: map[uint64]int64{ps[0].Seg: ps[2].Off}}
		os.WriteFile(filepath.Join(dir, metaName), m.encode(), 0o600)
		_, _, g := openT(t, dir, Options{})
		if !slices.Equal(g.payload, names("d", 0, 1)) {
			t.Fatalf("pending %v", g.payload)
		}
	})
	t.Run("damaged ack entry means redelivery", func(t *testing.T) {
		dir := t.TempDir()
		l, _, _ := openT(t, dir, Options{})
		ps := appendN(t, l, "k", 3)
		l.Ack(ps[0])
		l.Ack(ps[1])
		l.Close()
		ap := filepath.Join(dir, ackName(ps[0].Seg))
		b, _ := os.ReadFile(ap)
		b[1] ^= 0xff
		b = append(b, 1, 2, 3) // and a torn entry
		os.WriteFile(ap, b, 0o600)
		_, rep, g := openT(t, dir, Options{})
		if !slices.Equal(g.payload, names("k", 0, 2)) {
			t.Fatalf("pending %v", g.payload)
		}
		if rep.Segments[0].BadAcks != 2 {
			t.Fatalf("bad acks %d", rep.Segments[0].BadAcks)
		}
	})
}

func TestCheckIsReadOnly(t *testing.T) {
	dir := t.TempDir()
	ps := writeSegments(t, dir, Options{}, "r", 4)
	path := segPath(dir, ps[0].Seg)
	b, _ := os.ReadFile(path)
	b[ps[1].Off+recHeaderLen] ^= 1
	b = append(b, make([]byte, 100)...)
	os.WriteFile(path, b, 0o600)
	before := snapshot(t, dir)
	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := rep.QuarantinedRegions(); n != 1 || rep.Pending != 3 {
		t.Fatalf("report %+v", rep)
	}
	if after := snapshot(t, dir); !maps.Equal(before, after) {
		t.Fatal("Check changed the directory")
	}
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			m[p] = string(b)
		}
		return nil
	})
	return m
}

func TestOpenUnusableDirFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, _, err := Open(filepath.Join(file, "spool"), Options{}, nil); err == nil {
		t.Fatal("Open under a regular file succeeded")
	}
}

func TestMessageRoundTrip(t *testing.T) {
	m := &Message{ID: "id1", Key: "k", Destination: "https://example.com/x?y=1", Method: "PUT",
		Header: map[string][]string{"Content-Type": {"application/json"}, "X-A": {"1", "2"}}, Body: []byte("body")}
	b := AppendMessage(nil, m)
	got, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.Key != m.Key || got.Destination != m.Destination || got.Method != m.Method ||
		string(got.Body) != "body" || !slices.Equal(got.Header["X-A"], []string{"1", "2"}) {
		t.Fatalf("round trip: %+v", got)
	}
	// Truncation inside the fixed fields must be an error; inside the body it
	// would just be a shorter body, so only the cuts before the body are tried.
	for i := range len(b) - len(m.Body) {
		if _, err := DecodeMessage(b[:i]); err == nil {
			t.Fatalf("truncated at %d decoded", i)
		}
	}
}

func TestOneProcessPerDirectory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("flock-based lock is linux-only")
	}
	dir := t.TempDir()
	l, _, _ := openT(t, dir, Options{})
	if _, _, err := Open(dir, Options{}, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	l.Close()
	l2, _, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	l2.Close()
}

func TestRecoveryOversizedSegmentSetAside(t *testing.T) {
	dir := t.TempDir()
	ps := writeSegments(t, dir, Options{SegmentBytes: 100}, "big", 8)
	// A damaged file system reports a huge (sparse) segment.
	if err := os.Truncate(segPath(dir, ps[0].Seg), 200<<20); err != nil {
		t.Fatal(err)
	}
	_, rep, g := openT(t, dir, Options{SegmentBytes: 100})
	if len(rep.Unreadable) != 1 || !strings.Contains(rep.Unreadable[0], "more than a segment can hold") {
		t.Fatalf("unreadable %v", rep.Unreadable)
	}
	if len(g.payload) == 0 || g.payload[len(g.payload)-1] != "big-007" {
		t.Fatalf("the other segments were not recovered: %v", g.payload)
	}
	if _, err := os.Stat(filepath.Join(dir, quarantineDir, segName(ps[0].Seg))); err != nil {
		t.Fatal("oversized segment not set aside:", err)
	}
}
