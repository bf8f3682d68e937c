package events

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestLogWritesJSONLines(t *testing.T) {
	var out lockedBuf
	l := NewLog(&out, Options{Now: func() time.Time { return time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC) }})
	l.Emit(NotAllowed, "host not allowed: \"evil\"\n\x00\xff", Str(KeyTarget, "evil.example:443"), Int(KeyStatus, 403))
	l.Emit(Started, "storegate started")
	l.Close()
	lines := strings.Split(strings.TrimSuffix(out.b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", out.b.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if m["event_id"] != float64(105) || m["level"] != "warn" || m["target"] != "evil.example:443" || m["status"] != float64(403) ||
		m["msg"] != "host not allowed: \"evil\"\n\x00\ufffd" || m["time"] != "2026-11-25T08:00:00.000Z" {
		t.Fatalf("decoded %v", m)
	}
	if got := l.Recent(5); len(got) != 2 || got[1] != lines[1] {
		t.Fatalf("Recent: %q", got)
	}
}

// stuckWriter blocks until released, like a full pipe or a stalled serial line.
type stuckWriter struct{ release chan struct{} }

func (s stuckWriter) Write(p []byte) (int, error) { <-s.release; return len(p), nil }

func TestLogNeverBlocksEmit(t *testing.T) {
	w := stuckWriter{release: make(chan struct{})}
	l := NewLog(w, Options{MaxPending: 4096})
	done := make(chan struct{})
	go func() {
		for i := 0; i < 10000; i++ {
			l.Emit(ConnectReceived, "tunnel closed", Int(KeyBytesUp, int64(i)))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Emit blocked on a stuck writer")
	}
	if l.Dropped() == 0 {
		t.Fatal("nothing counted as dropped while the writer was stuck")
	}
	close(w.release)
	l.Close()
}

func TestFollowGetsNewLines(t *testing.T) {
	var out lockedBuf
	l := NewLog(&out, Options{})
	ch, cancel := l.Follow(8)
	l.Emit(Info, "policy reloaded")
	select {
	case line := <-ch:
		if !strings.Contains(string(line), `"msg":"policy reloaded"`) {
			t.Fatalf("followed %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follower got nothing")
	}
	cancel()
	l.Close()
}

func BenchmarkEmitSummary(b *testing.B) {
	l := NewLog(&bytes.Buffer{}, Options{MaxPending: 64 << 20})
	defer l.Close()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.Emit(ConnectReceived, "tunnel closed", Str(KeyClient, "10.0.0.7:51234"), Str(KeyTarget, "x.ods.opinsights.azure.com:443"),
			Str(KeyDecision, "allowed"), Int(KeyBytesUp, 1234), Int(KeyBytesDown, 56789), Int(KeyDurationMS, 42))
	}
}

// countingBuf counts Write calls.
type countingBuf struct {
	lockedBuf
	writes int
}

func (c *countingBuf) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.lockedBuf.Write(p)
}

func (c *countingBuf) counts() (writes, lines int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, strings.Count(c.b.String(), "\n")
}

// Events emitted while the writer rests go out together in one write, and
// Close ends the rest at once and flushes them.
func TestLogBatchesWhileResting(t *testing.T) {
	var out countingBuf
	l := NewLog(&out, Options{Linger: time.Hour})
	resting := make(chan struct{}, 1)
	l.onRest = func() { resting <- struct{}{} } // set before the first Emit wakes the writer
	l.Emit(Started, "first")
	select {
	case <-resting:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not rest after writing the first event")
	}
	// The writer now rests for an hour: these wait and go out together.
	for i := range 50 {
		l.Emit(ConnectReceived, "tunnel closed", Int(KeyBytesUp, int64(i)))
	}
	if w, n := out.counts(); w != 1 || n != 1 {
		t.Fatalf("while resting: %d writes, %d lines; want 1 and 1", w, n)
	}
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the writer's rest")
	}
	if w, n := out.counts(); w != 2 || n != 51 {
		t.Fatalf("after Close: %d writes, %d lines; want 2 and 51", w, n)
	}
}
