package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// watchLog records what a Watcher reports.
type watchLog struct {
	mu      sync.Mutex
	changes []string // hashes
	errs    []string
}

func (l *watchLog) change(_ []byte, sum string) {
	l.mu.Lock()
	l.changes = append(l.changes, sum)
	l.mu.Unlock()
}

func (l *watchLog) fail(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err.Error())
	l.mu.Unlock()
}

func (l *watchLog) counts() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.changes), len(l.errs)
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// startWatch runs a Watcher on path driven only by the returned poll
// channel (no notifications). tick sends one re-read; a re-read that finds
// a change reads again after the (1ms) debounce.
func startWatch(t *testing.T, path string, related func() []string) (*watchLog, func()) {
	t.Helper()
	l := &watchLog{}
	poll := make(chan time.Time)
	initial, _ := os.ReadFile(path)
	w := &Watcher{Path: path, OnChange: l.change, OnError: l.fail, Related: related, Poll: poll, PollOnly: true,
		Initial: sumOf(initial), Debounce: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-w.Done() })
	return l, func() { poll <- time.Now() }
}

// waitCounts waits until the watcher has reported c changes and e errors.
func (l *watchLog) waitCounts(t *testing.T, c, e int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		gc, ge := l.counts()
		if gc == c && ge == e {
			return
		}
		if gc > c || ge > e || time.Now().After(deadline) {
			t.Fatalf("have %d changes %v and %d errors %v; want %d and %d", gc, l.changes, ge, l.errs, c, e)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWatcherRereadStates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	v1 := []byte("version: 1\n")
	os.WriteFile(path, v1, 0o644)
	l, tick := startWatch(t, path, nil)

	tick()
	tick()
	tick() // handled after the first two: an unchanged file armed nothing
	l.waitCounts(t, 0, 0)
	os.Remove(path)
	tick()
	l.waitCounts(t, 0, 1)
	if !strings.Contains(l.errs[0], "no such file") {
		t.Fatalf("error %q", l.errs[0])
	}
	tick() // the same failure is not reported twice
	tick()
	l.waitCounts(t, 0, 1)
	// The same content back: reported, so a consumer can clear its error.
	os.WriteFile(path, v1, 0o644)
	tick()
	l.waitCounts(t, 1, 1)
	if l.changes[0] != sumOf(v1) {
		t.Fatalf("file back: changes %v", l.changes)
	}
	// Oversized: refused by Parse, but identified by the hash of all of it.
	big := append(bytes.Clone(v1), bytes.Repeat([]byte("#"), 3*MaxFileBytes)...)
	os.WriteFile(path, big, 0o644)
	tick()
	l.waitCounts(t, 2, 1)
	if l.changes[1] != sumOf(big) {
		t.Fatalf("oversized file: changes %v, want the hash of the whole file", l.changes)
	}
}

func TestWatcherRelatedFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	pw := filepath.Join(dir, "relay-password")
	os.WriteFile(path, []byte("version: 1\n"), 0o644)
	os.WriteFile(pw, []byte("one\n"), 0o600)
	l, tick := startWatch(t, path, func() []string { return []string{pw} })
	tick()
	tick()
	tick()
	l.waitCounts(t, 0, 0)
	os.WriteFile(pw, []byte("two\n"), 0o600)
	tick()
	l.waitCounts(t, 1, 0)
}

// TestWatcherRelatedFileNamedByTheChange: a change that names a new related
// file is reported once, not a second time when the watcher first sees that
// file; later edits of the file are reported.
func TestWatcherRelatedFileNamedByTheChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	ca := filepath.Join(dir, "ca.pem")
	v1 := []byte("version: 1\n")
	os.WriteFile(path, v1, 0o644)
	os.WriteFile(ca, []byte("one"), 0o644)
	var mu sync.Mutex
	var rel []string
	l := &watchLog{}
	poll := make(chan time.Time)
	w := &Watcher{Path: path, PollOnly: true, Poll: poll, Initial: sumOf(v1), Debounce: time.Millisecond, OnError: l.fail,
		OnChange: func(b []byte, sum string) {
			l.change(b, sum)
			if bytes.Contains(b, []byte("ca_file")) { // as Apply would: the policy now names ca.pem
				mu.Lock()
				rel = []string{ca}
				mu.Unlock()
			}
		},
		Related: func() []string { mu.Lock(); defer mu.Unlock(); return rel }}
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-w.Done() })
	tick := func() { poll <- time.Now() }
	os.WriteFile(path, []byte("version: 1\ntls: {ca_file: "+ca+"}\n"), 0o644)
	tick()
	l.waitCounts(t, 1, 0)
	tick()
	tick()
	tick()
	// A second report of the same policy would follow one of those ticks by
	// the 1ms debounce; give it ample time to show (it never may).
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if c, _ := l.counts(); c != 1 {
			t.Fatalf("%d reports of one policy change", c)
		}
	}
	os.WriteFile(ca, []byte("two"), 0o644)
	tick()
	l.waitCounts(t, 2, 0)
}

// TestWatcherNotifiesSymlinkTargetDir: an edit in place of the file a
// symlink points to, in another directory, is seen by notification.
func TestWatcherNotifiesSymlinkTargetDir(t *testing.T) {
	etc, data := t.TempDir(), t.TempDir()
	real := filepath.Join(data, "store.yaml")
	os.WriteFile(real, []byte("version: 1\n"), 0o644)
	link := filepath.Join(etc, "policy.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	w := &Watcher{Path: link, Initial: sumOf([]byte("version: 1\n")), Interval: -1, Debounce: 20 * time.Millisecond,
		OnChange: func(_ []byte, sum string) { got <- sum }}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-w.Done() }()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	next := []byte("version: 1\nlisten_port: 9090\n")
	os.WriteFile(real, next, 0o644)
	select {
	case s := <-got:
		if s != sumOf(next) {
			t.Fatalf("reported %s", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a change in the symlink target's directory was not seen")
	}
}

type evRec struct {
	mu  sync.Mutex
	evs []string
}

func (r *evRec) Emit(id events.ID, msg string, fields ...events.Field) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString(msg)
	for _, f := range fields {
		b.WriteString(" " + f.Key + "=" + f.Str)
	}
	r.evs = append(r.evs, string(rune('0'+id/100))+" "+b.String())
}

// TestSummaryNamesStartOnlyKeys: a change a reload cannot put in force says
// so; its neighbours do not.
func TestSummaryNamesStartOnlyKeys(t *testing.T) {
	snap := func(doc string) *Snapshot {
		t.Helper()
		f, err := Parse([]byte(doc), "p.yaml")
		if err != nil {
			t.Fatal(err)
		}
		s, err := Compile(f, []byte(doc), "p.yaml", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := snap("version: 1\nspool: {dir: /var/a, max_bytes: 1MiB}\nnetwork: {interface: eth0}\n")
	b := snap("version: 1\nspool: {dir: /var/b, max_bytes: 2MiB}\nnetwork: {interface: eth1}\n")
	got := Summary(a, b)
	for _, want := range []string{
		"spool.dir /var/a -> /var/b (applies after a restart)",
		"network.interface eth0 -> eth1 (applies after a restart)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary %q lacks %q", got, want)
		}
	}
	seen := false
	for _, c := range strings.Split(got, "; ") {
		if strings.HasPrefix(c, "spool.max_bytes ") {
			seen = true
			if strings.Contains(c, "restart") {
				t.Errorf("%q: spool.max_bytes applies at once", c)
			}
		}
	}
	if !seen {
		t.Errorf("summary %q lacks spool.max_bytes", got)
	}
}

// TestReloaderSummaryAndRefusal: a reload's event says what changed, never
// a secret; a refusal names file, line and key and keeps the snapshot.
func TestReloaderSummaryAndRefusal(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("hunter2\n"), 0o600)
	v1 := []byte("version: 1\nlisten_port: 8080\nallowed_hosts: [a.example, b.example]\npresets: [log-analytics]\n")
	f1, err := Parse(v1, "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := Compile(f1, v1, "p.yaml", time.Now())
	rec := &evRec{}
	var failed []string
	succeeded := 0
	r := &Reloader{Path: "p.yaml", Current: func() *Snapshot { return cur }, Emit: rec,
		Apply:     func(s *Snapshot) error { cur = s; return nil },
		Failed:    func(err error, h string) { failed = append(failed, h) },
		Succeeded: func() { succeeded++ }}
	v2 := []byte("version: 1\nlisten_port: 9090\nallowed_hosts: [a.example, c.example]\npresets: [log-analytics, automation-westeurope]\n" +
		"relay_proxy: {address: \"http://10.0.0.1:3128\", username: u, password_file: " + pw + "}\nlimits: {dial_timeout: 3s}\n")
	if err := r.Reload(v2, sumOf(v2)); err != nil {
		t.Fatal(err)
	}
	want := []string{"listen_port 8080 -> 9090", "allowed_hosts +c.example -b.example", "presets +automation-westeurope",
		"relay_proxy.address \"\" -> http://10.0.0.1:3128", "limits.dial_timeout 10s -> 3s", "relay password changed"}
	for _, w := range want {
		if !strings.Contains(rec.evs[0], w) {
			t.Errorf("summary lacks %q: %s", w, rec.evs[0])
		}
	}
	if strings.Contains(strings.Join(rec.evs, "\n"), "hunter2") || succeeded != 1 || cur.Hash != sumOf(v2) {
		t.Fatalf("events %v, succeeded %d", rec.evs, succeeded)
	}
	bad := []byte("version: 1\nlisten_port: 8080\nlimits:\n  max_headers: 2\n")
	if err := r.Reload(bad, sumOf(bad)); err == nil {
		t.Fatal("bad policy applied")
	}
	last := rec.evs[len(rec.evs)-1]
	if !strings.HasPrefix(last, "4 ") || !strings.Contains(last, "file=p.yaml") || !strings.Contains(last, "key=limits.max_headers") ||
		!strings.Contains(last, "p.yaml:4") || cur.Hash != sumOf(v2) || len(failed) != 1 || failed[0] != sumOf(bad) {
		t.Fatalf("refusal: %q, failed %v", last, failed)
	}
	// Apply's refusal (a port in use) is a refusal too, naming the key.
	r.Apply = func(*Snapshot) error {
		return errors.New("listen_port: cannot listen on :8081: address already in use")
	}
	v3 := []byte("version: 1\nlisten_port: 8081\n")
	if err := r.Reload(v3, sumOf(v3)); err == nil || len(failed) != 2 {
		t.Fatal("Apply's error not reported")
	}
	if last := rec.evs[len(rec.evs)-1]; !strings.HasPrefix(last, "4 ") || !strings.Contains(last, "key=listen_port") {
		t.Fatalf("Apply's refusal: %q", last)
	}
}
