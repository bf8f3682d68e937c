package console

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

func FuzzFormatEvent(f *testing.F) {
	for _, s := range []string{
		`{"time":"2026-11-25T08:00:00.000Z","level":"warn","event_id":105,"msg":"target not allowed","target":"x:443"}`,
		`{"msg":"nested","a":{"b":[1,2,"\u001b"]},"n":null}`,
		`not json`, `{"time":1}`, `{`, `[]`, `{"a":"b"} trailing`, "{\"msg\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		out := FormatEvent(line)
		for i := 0; i < len(out); i++ {
			if out[i] < 0x20 || out[i] > 0x7e {
				t.Fatalf("FormatEvent(%q) = %q: byte %#x is not printable ASCII", line, out, out[i])
			}
		}
	})
}

func FuzzEditor(f *testing.F) {
	for _, s := range []string{"status\r\n", "ab\x08\x7fc\x15d\x03e\r", "\x1b[A\x1b[1;5Cx\n", "\x00\xff\xfe\r\r\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		e := editor{max: 16}
		for _, c := range in {
			a := e.key(c)
			if len(e.buf) > e.max {
				t.Fatalf("editor holds %d bytes, max %d", len(e.buf), e.max)
			}
			if a.done {
				if len(a.line) > e.max {
					t.Fatalf("line of %d bytes accepted, max %d", len(a.line), e.max)
				}
				for i := 0; i < len(a.line); i++ {
					if a.line[i] < 0x20 || a.line[i] > 0x7e {
						t.Fatalf("line %q has byte %#x", a.line, a.line[i])
					}
				}
			}
			if e.esc > maxEscape {
				t.Fatalf("escape state unbounded: %d", e.esc)
			}
		}
	})
}

// scripted is a device that delivers its input and then reports the line closed.
type scripted struct {
	mu   sync.Mutex
	in   []byte
	out  bytes.Buffer
	sent bool
}

func (s *scripted) Read(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.in) == 0 {
		return 0, ErrClosed
	}
	n := copy(b, s.in)
	s.in = s.in[n:]
	return n, nil
}

func (s *scripted) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(b)
}

// FuzzSession runs whole sessions on arbitrary input: Serve must return, and
// nothing but printable ASCII, CR, LF, backspace and bell may reach the
// terminal, whatever was typed.
func FuzzSession(f *testing.F) {
	for _, s := range []string{"help\r", "status\rcounters\npolicy\r\nspool\rlink\revents 2\r", "check a.test:1\r", "events 0\revents 99999\r", "\x1b]0;title\x07\r"} {
		f.Add([]byte(s))
	}
	fp := newFakeProvider(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		// "follow" would wait for a key that never comes; the device closing ends it.
		dev := &scripted{in: bytes.Clone(in)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := Serve(ctx, dev, Options{Provider: fp, Version: "1.2.3", Now: func() time.Time { return fixedNow }, CheckTimeout: time.Second})
		if err != ErrClosed {
			t.Fatalf("Serve returned %v, want ErrClosed", err)
		}
		dev.mu.Lock()
		out := dev.out.String()
		dev.mu.Unlock()
		for i := 0; i < len(out); i++ {
			c := out[i]
			if (c < 0x20 || c > 0x7e) && !strings.ContainsRune("\r\n\b\a", rune(c)) {
				t.Fatalf("byte %#x reached the terminal: %q", c, out)
			}
		}
	})
}

func FuzzCountersJSON(f *testing.F) {
	f.Add([]byte(gatewayStatusJSON))
	for _, s := range []string{`{"a":1}`, `{"a":{"b":{"c":{"d":1}}}}`, `{"a":"1","b":true,"c":[1]}`, `{"a":1e400}`, `[]`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Counters
		if err := c.UnmarshalJSON(b); err != nil {
			return
		}
		if len(c) > maxCounters {
			t.Fatalf("%d counters, max %d", len(c), maxCounters)
		}
		var buf bytes.Buffer
		WriteCounters(&buf, "\n", c)
		for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
			if len(line) > Width-1 {
				t.Fatalf("line of %d columns: %q", len(line), line)
			}
		}
	})
}
