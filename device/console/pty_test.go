//go:build linux

package console

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/storegate/storegate/gateway/events"
)

var update = flag.Bool("update", false, "rewrite the golden transcripts in testdata/")

const prompt = "storegate> "

// term is the technician's side of a pseudo-terminal pair whose other side
// the console opens by path through tarm/serial.
type term struct {
	t    *testing.T
	link string
	ptmx *os.File
	pts  *os.File

	mu     sync.Mutex
	buf    []byte
	mark   int
	gate   chan struct{} // closed while reading is allowed
	paused bool
	done   chan struct{}
}

// plug creates a new pty pair and points link at its terminal side.
func plug(t *testing.T, link string) *term {
	t.Helper()
	ptmx, pts, err := pty.Open()
	if err != nil {
		t.Fatalf("pty: %v", err)
	}
	_ = os.Remove(link)
	if err := os.Symlink(pts.Name(), link); err != nil {
		t.Fatal(err)
	}
	tm := &term{t: t, link: link, ptmx: ptmx, pts: pts, gate: make(chan struct{}), done: make(chan struct{})}
	close(tm.gate)
	go tm.readLoop()
	t.Cleanup(tm.unplug)
	return tm
}

func (tm *term) readLoop() {
	defer close(tm.done)
	b := make([]byte, 4096)
	for {
		tm.mu.Lock()
		gate := tm.gate
		tm.mu.Unlock()
		<-gate
		n, err := tm.ptmx.Read(b)
		tm.mu.Lock()
		tm.buf = append(tm.buf, b[:n]...)
		tm.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// pause stops reading the terminal (a stuck terminal); resume reads again.
func (tm *term) pause() {
	tm.mu.Lock()
	if !tm.paused {
		tm.gate = make(chan struct{})
		tm.paused = true
	}
	tm.mu.Unlock()
}

func (tm *term) resume() {
	tm.mu.Lock()
	if tm.paused {
		close(tm.gate)
		tm.paused = false
	}
	tm.mu.Unlock()
}

// unplug removes the device path and closes both sides, like pulling a USB
// adapter. It is safe to call twice.
func (tm *term) unplug() {
	if tm.ptmx == nil {
		return
	}
	_ = os.Remove(tm.link)
	tm.ptmx.Close()
	tm.pts.Close()
	tm.resume()
	<-tm.done
	tm.ptmx = nil
}

func (tm *term) typ(s string) {
	tm.t.Helper()
	if _, err := tm.ptmx.Write([]byte(s)); err != nil {
		tm.t.Fatalf("typing %q: %v", s, err)
	}
}

// waitFor returns what the console printed since the last call, up to and
// including the first occurrence of want, polling until a deadline.
func (tm *term) waitFor(want string) string {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		tm.mu.Lock()
		rest := tm.buf[tm.mark:]
		if i := bytes.Index(rest, []byte(want)); i >= 0 {
			out := string(rest[:i+len(want)])
			tm.mark += i + len(want)
			tm.mu.Unlock()
			return out
		}
		tail := string(rest)
		tm.mu.Unlock()
		if time.Now().After(deadline) {
			tm.t.Fatalf("console never printed %q; got %q", want, lastN(tail, 600))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (tm *term) all() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return string(tm.buf)
}

func lastN(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// capture records events.
type capture struct {
	mu  sync.Mutex
	evs []string
}

func (c *capture) Emit(id events.ID, msg string, fields ...events.Field) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evs = append(c.evs, fmt.Sprintf("%d %s", id, msg))
}

func (c *capture) waitFor(t *testing.T, want string, count int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c.mu.Lock()
		n := 0
		for _, e := range c.evs {
			if e == want {
				n++
			}
		}
		evs := append([]string(nil), c.evs...)
		c.mu.Unlock()
		if n >= count {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %q seen %d times, want %d; events: %q", want, n, count, evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type rig struct {
	t    *testing.T
	dir  string
	link string
	tm   *term
	fp   *fakeProvider
	evs  *capture
	stop func()
}

// startRig plugs a pty in and runs the console device loop on its path.
func startRig(t *testing.T, mod func(*DeviceOptions)) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, dir: dir, link: filepath.Join(dir, "ttyUSB0"), fp: newFakeProvider(t), evs: &capture{}}
	r.tm = plug(t, r.link)
	o := DeviceOptions{
		Path:       r.link,
		Baud:       115200,
		Emit:       r.evs,
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
		Session: Options{
			Provider: r.fp,
			Version:  "1.2.3",
			Now:      func() time.Time { return fixedNow },
		},
	}
	if mod != nil {
		mod(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunDevice(ctx, o) }()
	r.stop = func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("RunDevice returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("RunDevice did not return after cancel")
		}
	}
	t.Cleanup(r.stop)
	return r
}

// transcript makes terminal output readable and stable for a golden file.
func transcript(s, dir string) string {
	s = strings.ReplaceAll(s, dir, "<DIR>")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\n' || (c >= 0x20 && c < 0x7f):
			b.WriteByte(c)
		case c == '\b':
			b.WriteString("<BS>")
		case c == '\a':
			b.WriteString("<BEL>")
		default:
			fmt.Fprintf(&b, "<%02x>", c)
		}
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got ---\n%s\n--- want ---\n%s", name, path, got, want)
	}
}

// TestTranscripts drives every command over a real pty and compares each
// exchange with its golden transcript. Line ends vary on purpose.
func TestTranscripts(t *testing.T) {
	r := startRig(t, nil)
	golden(t, "banner", transcript(r.tm.waitFor(prompt), r.dir))
	r.evs.waitFor(t, "100 console device opened", 1)

	cmds := []struct{ name, typed string }{
		{"help", "help\r"},
		{"version", "version\n"},
		{"status", "status\r\n"},
		{"counters", "counters\r"},
		{"policy", "policy\r"},
		{"spool", "spool\r"},
		{"link", "link\r"},
		{"events", "events\r"},
		{"events-3", "events 3\r"},
		{"events-bad", "events many\r"},
		{"check", "check upstream.test:8443\r"},
		{"check-bad", "check bad_host!\r"},
		{"check-usage", "check\r"},
		{"unknown", "reboot now\r"},
		{"empty", "\r"},
		{"edit", "stXX\x08\x7fatus\x15vers\x1b[Dion\r"},
	}
	for _, c := range cmds {
		r.tm.typ(c.typed)
		out := r.tm.waitFor(prompt)
		golden(t, "cmd-"+c.name, transcript(out, r.dir))
	}
	if strings.Contains(r.tm.all(), "hunter2") {
		t.Fatal("the relay password reached the console")
	}
	if calls := r.fp.checks(); len(calls) != 1 || calls[0] != "upstream.test:8443" {
		t.Errorf("provider checks: %v", calls)
	}
}

// TestBadInput feeds what a serial line really delivers and checks the
// console stays usable after each case.
func TestBadInput(t *testing.T) {
	r := startRig(t, nil)
	r.tm.waitFor(prompt)
	alive := func() {
		t.Helper()
		r.tm.typ("\x03version\r")
		r.tm.waitFor("storegate 1.2.3\r\n" + prompt)
	}

	// 1MB line refused.
	{
		line := bytes.Repeat([]byte("A"), 1<<20)
		errc := make(chan error, 1)
		go func() { _, err := r.tm.ptmx.Write(append(line, '\r')); errc <- err }()
		out := r.tm.waitFor("line refused: longer than 256 characters\r\n" + prompt)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out, "A"); n != 256 {
			t.Errorf("echoed %d of the long line's characters, want 256", n)
		}
		if !strings.Contains(out, "\a") {
			t.Error("no bell when the line got too long")
		}
		alive()
	}

	// binary garbage.
	{
		// Deterministic noise over all byte values, without CR/LF so it
		// cannot form commands, then a line end.
		var noise []byte
		x := uint32(2463534242)
		for len(noise) < 64<<10 {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			if c := byte(x); c != '\r' && c != '\n' {
				noise = append(noise, c)
			}
		}
		r.tm.typ(string(noise))
		alive()
	}

	// BREAK and NULs.
	{
		r.tm.typ("\x00\x00ver\x00sion\x00\r")
		r.tm.waitFor("storegate 1.2.3\r\n" + prompt)
	}

	// escape sequences.
	{
		// Arrow keys, a function key, and an unterminated CSI bounded at 16 bytes.
		r.tm.typ("\x1b[A\x1b[B\x1bOP\x1b[15~ver\x1b[" + strings.Repeat("1", 20) + "sion\r")
		out := r.tm.waitFor(prompt)
		if !strings.Contains(out, "unknown command") {
			// "ver" + swallowed escape + "1111sion" is not a command.
			t.Errorf("unterminated escape not bounded: %q", out)
		}
		r.tm.typ("\x1b[Aversion\r")
		r.tm.waitFor("storegate 1.2.3\r\n" + prompt)
	}

	// line ends.
	{
		r.tm.typ("version\r\nversion\nversion\r\r\n")
		out := r.tm.waitFor("storegate 1.2.3\r\n" + prompt + "version\r\nstoregate 1.2.3\r\n" + prompt + "version\r\nstoregate 1.2.3\r\n" + prompt + "\r\n" + prompt)
		if strings.Count(out, prompt) != 4 {
			t.Errorf("CR, LF and CRLF should each end exactly one line: %q", out)
		}
	}

	// ctrl-c cancels a line.
	{
		r.tm.typ("statu\x03")
		r.tm.waitFor("statu^C\r\n" + prompt)
	}
}

// TestStuckTerminal shows that a terminal that stops reading costs dropped
// console output, not a stalled gateway: the event source keeps going and
// the console recovers and says what it dropped.
func TestStuckTerminal(t *testing.T) {
	r := startRig(t, func(o *DeviceOptions) { o.Session.OutputBuffer = 8 << 10 })
	r.tm.waitFor(prompt)
	r.tm.typ("follow\r")
	r.tm.waitFor("press any key to stop\r\n")
	r.tm.pause()
	// The gateway keeps emitting; Emit never waits for the console.
	for i := 0; i < 20000; i++ {
		r.fp.Emit(events.ConnectReceived, "tunnel closed", events.Str(events.KeyTarget, "x.ods.opinsights.azure.com:443"), events.Int("n", int64(i)))
	}
	// The provider still answers while the console is stuck.
	_ = r.fp.Status()
	r.tm.resume()
	r.tm.waitFor("bytes of output dropped, terminal too slow]")
	r.tm.typ("q")
	r.tm.waitFor("stopped following\r\n")
	// On a loaded machine the terminal may still have been too slow for what
	// was queued before the q: the console reports that drop too, so a
	// notice may come between "stopped following" and the prompt.
	if out := r.tm.waitFor(prompt); strings.Contains(out, "tunnel closed") {
		t.Fatalf("events still followed after q: %q", lastN(out, 300))
	}
	r.tm.typ("version\r")
	r.tm.waitFor("storegate 1.2.3\r\n" + prompt)
}

// TestFollow prints live events and stops on a key, ignoring the LF of CRLF.
func TestFollow(t *testing.T) {
	r := startRig(t, nil)
	r.tm.waitFor(prompt)
	r.tm.typ("follow\r")
	r.tm.waitFor("press any key to stop\r\n")
	r.tm.typ("\n") // the tail of a CRLF line end must not stop following
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; !strings.Contains(r.tm.all(), "live-event"); i++ {
		r.fp.Emit(events.NotAllowed, "live-event", events.Str(events.KeyTarget, "evil.example:443"))
		if time.Now().After(deadline) {
			t.Fatal("followed event never shown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := r.tm.waitFor("live-event target=evil.example:443\r\n")
	if strings.Contains(out, "stopped following") {
		t.Fatal("the LF after CR stopped follow")
	}
	r.tm.typ(" ")
	r.tm.waitFor("stopped following\r\n" + prompt)
}

// TestUnplugReplug removes the device path and closes the pty (a USB adapter
// pulled out), then plugs a new pty in at the same path.
func TestUnplugReplug(t *testing.T) {
	r := startRig(t, nil)
	r.tm.waitFor(prompt)
	r.evs.waitFor(t, "100 console device opened", 1)

	for round := 1; round <= 3; round++ {
		r.tm.unplug()
		r.evs.waitFor(t, "400 console device lost; waiting for it to return", round)
		r.evs.waitFor(t, "400 console device not available; retrying", round)

		r.tm = plug(t, r.link)
		banner := r.tm.waitFor(prompt)
		if !strings.Contains(banner, "storegate 1.2.3 serial console") {
			t.Fatalf("no banner after replug: %q", banner)
		}
		r.evs.waitFor(t, "100 console device opened", round+1)
		r.tm.typ("version\r")
		r.tm.waitFor("storegate 1.2.3\r\n" + prompt)
	}
}

// TestMissingAtStart: the device is absent when the gateway starts; the
// console appears when it is plugged in, with one "not available" event.
func TestMissingAtStart(t *testing.T) {
	// The console serves a path where nothing is plugged in yet (the rig's own
	// pty stays at its other path, unused).
	missing := filepath.Join(t.TempDir(), "ttyUSB1")
	r := startRig(t, func(o *DeviceOptions) { o.Path = missing })
	r.evs.waitFor(t, "400 console device not available; retrying", 1)
	plug(t, missing).waitFor(prompt)
	r.evs.mu.Lock()
	n := 0
	for _, e := range r.evs.evs {
		if strings.Contains(e, "not available") {
			n++
		}
	}
	r.evs.mu.Unlock()
	if n != 1 {
		t.Errorf("%d 'not available' events for one outage, want 1", n)
	}
}
