package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/storegate/storegate/internal/durable"
)

// Options tune a Log. The zero value is usable.
type Options struct {
	// SegmentBytes is the size at which the active segment is closed and a new
	// one started. Zero means 8 MiB.
	SegmentBytes int64
	// MaxBatchBytes bounds how much one group commit writes. Zero means 4 MiB.
	MaxBatchBytes int
}

// Pos locates a record: segment number, offset of its header, payload length.
type Pos struct {
	Seg uint64
	Off int64
	Len int
}

// Stats are the log's counters since Open.
type Stats struct {
	Records         uint64 // records made durable
	Batches         uint64 // group commits: one write and one fdatasync each
	Syncs           uint64 // all fsync calls: batches, segment creation, metadata
	BytesWritten    uint64 // bytes passed to write(2) for segments, acks and metadata
	PayloadBytes    uint64 // payload bytes of the records made durable
	Acks            uint64
	AckErrors       uint64 // ack entries that could not be written (redelivered after a crash)
	WriteErrors     uint64 // group commits that failed (disk full, I/O error)
	SegmentsDeleted uint64
	Segments        int   // live segment files
	DiskBytes       int64 // bytes in live segment files
}

// ErrClosed is returned by a Log after Close.
var ErrClosed = errors.New("queue: closed")

// ErrLocked is returned by Open when another process has the directory open.
var ErrLocked = errors.New("queue: directory in use by another process")

// ErrCorrupt is returned by ReadAt when a record no longer matches its checksum.
var ErrCorrupt = errors.New("queue: record damaged on disk")

type segment struct {
	num   uint64
	size  int64 // committed bytes
	live  int   // records not yet acknowledged
	ack   *os.File
	read  *os.File // for ReadAt; the active segment uses Log.activeF
	dirty bool     // ack file written since the last sync
}

type request struct {
	payload []byte
	pos     Pos
	err     error
	done    chan struct{}
}

// Log is an append-only record log in a directory. Append is safe for
// concurrent use and returns once the record is on disk; concurrent appends
// share one write and one fdatasync (group commit).
type Log struct {
	dir  string
	opts Options

	mu        sync.Mutex // guards everything below except the writer's buffer
	segs      map[uint64]*segment
	active    *segment
	activeF   *os.File
	next      uint64
	metaDirty bool // the metadata on disk lists a segment already deleted
	stats     Stats

	qmu    sync.Mutex
	queue  []*request
	closed bool
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	buf    []byte // writer goroutine only
	unlock func()
}

func segName(n uint64) string { return fmt.Sprintf("seg-%016x.log", n) }
func ackName(n uint64) string { return fmt.Sprintf("seg-%016x.ack", n) }

// Open recovers the log in dir (creating dir if needed) and calls fn, in
// append order, for every record not yet acknowledged; payload is only valid
// during the call. Damage found on disk is repaired as described in
// recover.go and listed in the Report; Open fails only when dir itself cannot
// be created or read.
func Open(dir string, opts Options, fn func(pos Pos, payload []byte)) (*Log, *Report, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 8 << 20
	}
	if opts.SegmentBytes < segHeaderLen+recHeaderLen+1 {
		opts.SegmentBytes = segHeaderLen + recHeaderLen + 1
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 4 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	rep, st, err := recoverDir(dir, true, opts.SegmentBytes+MaxRecord+recHeaderLen, fn)
	if err != nil {
		unlock()
		return nil, rep, err
	}
	l := &Log{
		dir:    dir,
		opts:   opts,
		unlock: unlock,
		segs:   st.segs,
		next:   st.next,
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go l.writer()
	return l, rep, nil
}

// Dir is the directory the log lives in.
func (l *Log) Dir() string { return l.dir }

// Append writes payload as one record and returns once it is durable. If ctx
// ends first the error is ctx's, and the record may or may not be stored.
func (l *Log) Append(ctx context.Context, payload []byte) (Pos, error) {
	if len(payload) > MaxRecord {
		return Pos{}, fmt.Errorf("queue: record of %d bytes exceeds %d", len(payload), MaxRecord)
	}
	r := &request{payload: payload, done: make(chan struct{})}
	l.qmu.Lock()
	if l.closed {
		l.qmu.Unlock()
		return Pos{}, ErrClosed
	}
	l.queue = append(l.queue, r)
	l.qmu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
		return r.pos, r.err
	case <-ctx.Done():
		return Pos{}, ctx.Err()
	}
}

func (l *Log) writer() {
	defer close(l.done)
	for {
		select {
		case <-l.wake:
		case <-l.stop:
			l.qmu.Lock()
			rest := l.queue
			l.queue = nil
			l.qmu.Unlock()
			for _, r := range rest {
				r.err = ErrClosed
				close(r.done)
			}
			return
		}
		for {
			batch := l.take()
			if len(batch) == 0 {
				break
			}
			l.commit(batch)
		}
	}
}

// take removes up to MaxBatchBytes of waiting requests (at least one).
func (l *Log) take() []*request {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	n, size := 0, 0
	for n < len(l.queue) && (n == 0 || size+len(l.queue[n].payload) <= l.opts.MaxBatchBytes) {
		size += len(l.queue[n].payload) + recHeaderLen
		n++
	}
	batch := l.queue[:n:n]
	l.queue = l.queue[n:]
	if len(l.queue) == 0 {
		l.queue = nil
	}
	return batch
}

func (l *Log) commit(batch []*request) {
	start := 0
	buf := l.buf[:0]
	for i, r := range batch {
		if l.activeF == nil {
			if err := l.openActive(); err != nil {
				fail(batch[i:], err)
				return
			}
		}
		need := int64(recHeaderLen + len(r.payload))
		used := l.active.size + int64(len(buf))
		if used+need > l.opts.SegmentBytes && used > segHeaderLen {
			if err := l.flush(buf, batch[start:i]); err != nil {
				fail(batch[i:], err)
				return
			}
			buf, start = buf[:0], i
			l.rotate()
			if err := l.openActive(); err != nil {
				fail(batch[i:], err)
				return
			}
		}
		r.pos = Pos{Seg: l.active.num, Off: l.active.size + int64(len(buf)), Len: len(r.payload)}
		buf = appendRecord(buf, r.payload)
	}
	l.flush(buf, batch[start:])
	if cap(buf) <= 2*l.opts.MaxBatchBytes {
		l.buf = buf[:0]
	}
}

func fail(rs []*request, err error) {
	for _, r := range rs {
		r.err = err
		close(r.done)
	}
}

// flush writes buf at the end of the active segment, syncs it and completes
// rs. On failure the segment is abandoned at its last durable size.
func (l *Log) flush(buf []byte, rs []*request) error {
	if len(rs) == 0 {
		return nil
	}
	f, off := l.activeF, l.active.size
	_, err := f.WriteAt(buf, off)
	if err == nil {
		err = syncData(f)
	}
	l.mu.Lock()
	if err != nil {
		l.stats.WriteErrors++
		l.abandonActive()
		l.mu.Unlock()
		fail(rs, fmt.Errorf("queue: writing %s: %w", segName(l.activeNum(rs)), err))
		return err
	}
	l.active.size += int64(len(buf))
	l.active.live += len(rs)
	l.stats.Records += uint64(len(rs))
	l.stats.Batches++
	l.stats.Syncs++
	l.stats.BytesWritten += uint64(len(buf))
	for _, r := range rs {
		l.stats.PayloadBytes += uint64(len(r.payload))
	}
	l.mu.Unlock()
	for _, r := range rs {
		close(r.done)
	}
	return nil
}

func (l *Log) activeNum(rs []*request) uint64 { return rs[0].pos.Seg }

// abandonActive gives up the active segment after a failed write: after a
// failed fsync the kernel's copy of the file can no longer be trusted, so the
// segment is cut back to its last durable size and never appended to again.
// If even the truncation fails, the metadata records the limit for recovery.
// Called with l.mu held.
func (l *Log) abandonActive() {
	s, f := l.active, l.activeF
	l.active, l.activeF = nil, nil
	if err := f.Truncate(s.size); err != nil {
		l.writeMetaLocked(map[uint64]int64{s.num: s.size})
	}
	f.Close()
	if s.live == 0 {
		l.deleteLocked(s)
	}
}

// rotate closes the active segment after its last flush.
func (l *Log) rotate() {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, f := l.active, l.activeF
	l.active, l.activeF = nil, nil
	f.Close()
	if s.live == 0 {
		l.deleteLocked(s)
	}
}

// openActive creates the next segment: file, header, fsync, directory fsync,
// then the metadata naming it. A crash between the file and the metadata is
// covered by recovery adopting files numbered at or above "next".
func (l *Log) openActive() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	num := l.next
	path := filepath.Join(l.dir, segName(num))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		l.stats.WriteErrors++
		return fmt.Errorf("queue: creating segment: %w", err)
	}
	l.next++
	hdr := segmentHeader(num)
	_, err = f.WriteAt(hdr, 0)
	if err == nil {
		err = syncData(f)
	}
	if err == nil {
		err = durable.SyncDir(l.dir)
	}
	s := &segment{num: num, size: segHeaderLen}
	if err == nil {
		l.segs[num] = s
		err = l.writeMetaLocked(nil)
		if err != nil {
			delete(l.segs, num)
		}
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		l.stats.WriteErrors++
		return fmt.Errorf("queue: creating segment: %w", err)
	}
	l.stats.Syncs += 2
	l.stats.BytesWritten += segHeaderLen
	l.active, l.activeF = s, f
	return nil
}

// writeMetaLocked writes the metadata for the current segments. Called with
// l.mu held.
func (l *Log) writeMetaLocked(limits map[uint64]int64) error {
	m := meta{Next: l.next, Limits: limits}
	for n := range l.segs {
		m.Live = append(m.Live, n)
	}
	data := m.encode()
	err := durable.WriteFile(l.dir, metaName, metaTmpName, data, 0o600)
	if err == nil {
		l.metaDirty = false
		l.stats.Syncs += 2
		l.stats.BytesWritten += uint64(len(data))
	}
	return err
}

// Ack marks the record at pos as done. When every record of a closed segment
// is done, the segment is deleted. Ack each position once.
func (l *Log) Ack(pos Pos) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.segs[pos.Seg]
	if s == nil || s.live <= 0 {
		return
	}
	s.live--
	l.stats.Acks++
	if s.live == 0 && s != l.active {
		l.deleteLocked(s)
		return
	}
	if s.ack == nil {
		f, err := os.OpenFile(filepath.Join(l.dir, ackName(s.num)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			l.stats.AckErrors++
			return
		}
		s.ack = f
	}
	var e [ackEntryLen]byte
	if _, err := s.ack.Write(appendAck(e[:0], uint32(pos.Off))); err != nil {
		l.stats.AckErrors++
		return
	}
	s.dirty = true
	l.stats.BytesWritten += ackEntryLen
}

// deleteLocked removes a segment whose records are all done: metadata first,
// then the files, so a crash in between leaves a file that recovery knows to
// delete. If the metadata cannot be written (disk full) the files are deleted
// anyway to free space, and the metadata is rewritten at the next chance.
func (l *Log) deleteLocked(s *segment) {
	delete(l.segs, s.num)
	if s.ack != nil {
		s.ack.Close()
	}
	if s.read != nil {
		s.read.Close()
	}
	if err := l.writeMetaLocked(nil); err != nil {
		l.metaDirty = true
	}
	os.Remove(filepath.Join(l.dir, ackName(s.num)))
	os.Remove(filepath.Join(l.dir, segName(s.num)))
	l.stats.SegmentsDeleted++
	if l.metaDirty {
		if err := l.writeMetaLocked(nil); err != nil {
			l.metaDirty = true
		}
	}
}

// ReadAt returns the payload of the record at pos.
func (l *Log) ReadAt(pos Pos) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.segs[pos.Seg]
	if s == nil {
		return nil, fmt.Errorf("queue: segment %d is gone", pos.Seg)
	}
	f := s.read
	if s == l.active {
		f = l.activeF
	}
	if f == nil {
		var err error
		f, err = os.Open(filepath.Join(l.dir, segName(s.num)))
		if err != nil {
			return nil, err
		}
		s.read = f
	}
	b := make([]byte, recHeaderLen+pos.Len)
	if _, err := f.ReadAt(b, pos.Off); err != nil {
		return nil, fmt.Errorf("queue: reading %s at %d: %w", segName(s.num), pos.Off, err)
	}
	payload, _, ok := parseRecord(b)
	if !ok {
		return nil, fmt.Errorf("%w: %s at %d", ErrCorrupt, segName(s.num), pos.Off)
	}
	return payload, nil
}

// Stats returns a snapshot of the counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stats
	st.Segments = len(l.segs)
	for _, s := range l.segs {
		st.DiskBytes += s.size
	}
	return st
}

// SyncAcks fsyncs the ack files written since the last call, so fewer
// delivered records are delivered again after a power cut. Optional.
func (l *Log) SyncAcks() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		if s.dirty && s.ack != nil {
			s.dirty = false
			if s.ack.Sync() == nil {
				l.stats.Syncs++
			}
		}
	}
	if l.metaDirty {
		l.writeMetaLocked(nil)
	}
}

// Close stops the writer (waiting appends fail with ErrClosed) and closes
// the files. The log's directory stays as it is.
func (l *Log) Close() error {
	l.qmu.Lock()
	if l.closed {
		l.qmu.Unlock()
		return nil
	}
	l.closed = true
	l.qmu.Unlock()
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.activeF != nil {
		l.activeF.Close()
		l.active, l.activeF = nil, nil
	}
	for _, s := range l.segs {
		if s.ack != nil {
			s.ack.Close()
			s.ack = nil
		}
		if s.read != nil {
			s.read.Close()
			s.read = nil
		}
	}
	l.unlock()
	return nil
}
