package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher reports a policy file's new content whenever it changes, however
// the file was replaced: written in place, truncated then written, written
// to a temporary file and renamed over (vim, atomic savers), deleted and
// re-created, or swapped through a symlink (Kubernetes' "..data" style).
//
// It watches directories, not files, because a rename or a symlink swap
// leaves a watch on the old file behind. Every event in a watched directory
// (except a chmod) starts a debounce; when it ends the file is read and its
// content hash compared, so a burst of saves is one change and a chmod or an
// editor's swap file is none. A periodic re-read catches what notifications
// miss (network filesystems, a FAT partition written by another host).
//
// Set the fields, then call Start. Nil and zero fields have the defaults noted.
type Watcher struct {
	// Path is the policy file. Required.
	Path string
	// OnChange receives the file's bytes (at most MaxFileBytes+1 of them;
	// Parse refuses more) and the sha256 of the whole file. It is called from
	// one goroutine, never concurrently, when the content differs from the
	// last content reported (or from Initial), and after a read that follows
	// a failed one. Required.
	OnChange func(data []byte, sum string)
	// OnError receives a read failure (file removed, unreadable). It is
	// called once per distinct failure until a read works again. A
	// *NotifyError says notifications are unavailable and only the periodic
	// re-read works; it is not a read failure. Nil: ignored.
	OnError func(err error)
	// Initial is the sha256 (hex) of the content already in force; equal
	// content read later is not a change.
	Initial string
	// Related returns further files whose content is part of the policy in
	// force (a relay password file, certificates). A change to one of them
	// is reported as a change of the policy. Nil: none.
	Related func() []string
	// Debounce is how long the directory must be quiet before the file is
	// read. Zero: 150ms. A stream of writes is read at least every MaxDelay.
	Debounce time.Duration
	// MaxDelay bounds how long a stream of events can postpone a read. Zero: 1s.
	MaxDelay time.Duration
	// Interval is the period of the re-read that catches missed
	// notifications. Zero: 2s. Negative: no periodic re-read.
	Interval time.Duration
	// Poll, when set, replaces the Interval ticker: each value is a re-read.
	// Tests use it to drive the re-read without waiting.
	Poll <-chan time.Time
	// PollOnly skips file notifications: for filesystems known not to
	// deliver them, and for tests of the re-read.
	PollOnly bool

	fs      *fsnotify.Watcher
	watched map[string]bool
	last    string // fingerprint of the last content reported
	lastErr string
	failed  bool
	done    chan struct{}
}

// Start begins watching and returns once the watches are in place, so a
// change made after Start returns is seen. Watching stops when ctx ends;
// Done is closed then. If the operating system refuses notifications (no
// inotify, too many watches), Start still succeeds and relies on the
// periodic re-read; the refusal goes to OnError.
func (w *Watcher) Start(ctx context.Context) error {
	if w.Path == "" || w.OnChange == nil {
		return errors.New("policy watcher: Path and OnChange are required")
	}
	abs, err := filepath.Abs(w.Path)
	if err != nil {
		return err
	}
	w.Path = abs
	if w.Debounce <= 0 {
		w.Debounce = 150 * time.Millisecond
	}
	if w.MaxDelay <= 0 {
		w.MaxDelay = time.Second
	}
	if w.Interval == 0 {
		w.Interval = 2 * time.Second
	}
	w.done = make(chan struct{})
	w.watched = map[string]bool{}
	if w.Initial != "" {
		w.last = w.fingerprint(w.Initial, w.related())
	}
	fw, err := w.newNotifier()
	if err != nil {
		if w.OnError != nil {
			w.OnError(&NotifyError{Err: err, Interval: w.Interval})
		}
	} else if fw != nil {
		w.fs = fw
		w.refreshWatches()
	}
	poll := w.Poll
	var ticker *time.Ticker
	if poll == nil && w.Interval > 0 {
		ticker = time.NewTicker(w.Interval)
		poll = ticker.C
	}
	go func() {
		defer close(w.done)
		if ticker != nil {
			defer ticker.Stop()
		}
		if w.fs != nil {
			defer w.fs.Close()
		}
		w.loop(ctx, poll)
	}()
	return nil
}

// NotifyError says the system refused file notifications; the watcher then
// relies on its periodic re-read.
type NotifyError struct {
	Err      error
	Interval time.Duration
}

func (e *NotifyError) Error() string {
	return fmt.Sprintf("file notifications unavailable (%v); re-reading the policy every %s", e.Err, e.Interval)
}

func (e *NotifyError) Unwrap() error { return e.Err }

func (w *Watcher) newNotifier() (*fsnotify.Watcher, error) {
	if w.PollOnly {
		return nil, nil
	}
	return fsnotify.NewWatcher()
}

// Done is closed when the watcher has stopped.
func (w *Watcher) Done() <-chan struct{} { return w.done }

func (w *Watcher) loop(ctx context.Context, poll <-chan time.Time) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w.fs != nil {
		events, errs = w.fs.Events, w.fs.Errors
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var first time.Time // first event of the pending burst; zero: none pending
	arm := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		d := w.Debounce
		if rest := w.MaxDelay - now.Sub(first); rest < d {
			d = max(rest, 0)
		}
		timer.Reset(d)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Op == fsnotify.Chmod {
				continue // permissions only: the content is what it was
			}
			arm()
		case _, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// A queue overflow means events were lost: re-read to be sure.
			arm()
		case <-timer.C:
			first = time.Time{}
			w.check()
		case <-poll:
			// A change found by the re-read may be a write in progress
			// (truncated, half written): let it settle like a burst.
			if first.IsZero() && w.differs() {
				arm()
			}
		}
	}
}

// check reads the file and the related files and reports what changed.
func (w *Watcher) check() {
	if w.fs != nil {
		w.refreshWatches()
	}
	data, sum, err := readPolicyFile(w.Path)
	if err != nil {
		w.report(err)
		return
	}
	fp := w.fingerprint(sum, w.related())
	if fp == w.last && !w.failed {
		return
	}
	w.last, w.failed, w.lastErr = fp, false, ""
	w.OnChange(data, sum)
	// The change may name other related files (a new tls.ca_file): take
	// them into the fingerprint now, or the next check would see them as a
	// change and report the same policy again.
	w.last = w.fingerprint(sum, w.related())
}

// differs reports whether a check would report something.
func (w *Watcher) differs() bool {
	_, sum, err := readPolicyFile(w.Path)
	if err != nil {
		return err.Error() != w.lastErr
	}
	if w.failed {
		return true
	}
	return w.fingerprint(sum, w.related()) != w.last
}

// related returns the files Related names now; none when it is nil.
func (w *Watcher) related() []string {
	if w.Related == nil {
		return nil
	}
	return w.Related()
}

func (w *Watcher) report(err error) {
	w.failed = true
	if err.Error() == w.lastErr {
		return
	}
	w.lastErr = err.Error()
	if w.OnError != nil {
		w.OnError(err)
	}
}

// fingerprint combines the policy's hash with those of the related files.
func (w *Watcher) fingerprint(sum string, related []string) string {
	if len(related) == 0 {
		return sum
	}
	h := sha256.New()
	h.Write([]byte(sum))
	for _, p := range related {
		h.Write([]byte{0})
		h.Write([]byte(p))
		h.Write([]byte{0})
		if f, err := os.Open(p); err == nil {
			_, _ = io.Copy(h, io.LimitReader(f, maxHashBytes))
			f.Close()
		} else {
			h.Write([]byte("missing"))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// refreshWatches watches the directory of the policy file, of every symlink
// on the way to the real file, and of the related files. Directories that are
// no longer needed are dropped; ones that vanished are re-added when they
// come back.
func (w *Watcher) refreshWatches() {
	want := map[string]bool{filepath.Dir(w.Path): true}
	for _, d := range symlinkDirs(w.Path) {
		want[d] = true
	}
	for _, p := range w.related() {
		if !filepath.IsAbs(p) {
			continue
		}
		want[filepath.Dir(p)] = true
		for _, d := range symlinkDirs(p) {
			want[d] = true
		}
	}
	for d := range w.watched {
		if !want[d] {
			_ = w.fs.Remove(d)
			delete(w.watched, d)
		}
	}
	dirs := make([]string, 0, len(want))
	for d := range want {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		if err := w.fs.Add(d); err != nil {
			delete(w.watched, d)
			continue
		}
		w.watched[d] = true
	}
}

// symlinkDirs follows the symlinks from p (at most 16 hops) and returns the
// directory of each hop's target, so a swap anywhere on the way is seen.
func symlinkDirs(p string) []string {
	var dirs []string
	for range 16 {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			// A component above p may itself be a symlink (..data/policy.yaml).
			if real, err := filepath.EvalSymlinks(p); err == nil && real != p {
				dirs = append(dirs, filepath.Dir(real))
			}
			return dirs
		}
		t, err := os.Readlink(p)
		if err != nil {
			return dirs
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		dirs = append(dirs, filepath.Dir(t))
		p = t
	}
	return dirs
}

// maxHashBytes bounds how much of an oversized file is hashed.
const maxHashBytes = 64 << 20

// readPolicyFile returns the first MaxFileBytes+1 bytes of the file and the
// sha256 of all of it (up to 64 MiB), so an oversized file is refused by
// Parse yet still identified by its hash in /readyz and the metrics.
func readPolicyFile(path string) ([]byte, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", &Error{File: path, Msg: "cannot read: " + unwrapPathErr(err)}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		return nil, "", &Error{File: path, Msg: "is a directory, not a policy file"}
	}
	h := sha256.New()
	data, err := io.ReadAll(io.TeeReader(io.LimitReader(f, MaxFileBytes+1), h))
	if err == nil && len(data) > MaxFileBytes {
		_, err = io.Copy(h, io.LimitReader(f, maxHashBytes))
	}
	if err != nil {
		return nil, "", &Error{File: path, Msg: "cannot read: " + unwrapPathErr(err)}
	}
	return data, hexSum(h), nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }
