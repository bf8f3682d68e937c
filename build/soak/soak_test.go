package main

import (
	"strings"
	"testing"
)

func TestVerdict(t *testing.T) {
	start := sample{tag: "start", fds: 14, goroutines: 14, rssMiB: 9.5, reloadedAt: 100}
	during := []sample{{tag: "t+1m", rssMiB: 16}, {tag: "t+2m", rssMiB: 16.2}, {tag: "t+3m", rssMiB: 16.1}}
	good := sample{tag: "quiet", fds: 18, goroutines: 18, rssMiB: 16, delivered: 400, reloadedAt: 160}
	if p := verdict(start, during, good, 0, ""); len(p) != 0 {
		t.Fatalf("a clean run failed: %v", p)
	}
	for _, tc := range []struct {
		name string
		edit func(end *sample, during []sample) (errs int64)
		want string
	}{
		{"client errors", func(*sample, []sample) int64 { return 3 }, "3 client errors"},
		{"open connections", func(e *sample, _ []sample) int64 { e.conns = 2; return 0 }, "still open"},
		{"spool not drained", func(e *sample, _ []sample) int64 { e.spoolDepth = 5; return 0 }, "spool not drained"},
		{"fd leak", func(e *sample, _ []sample) int64 { e.fds = 40; return 0 }, "descriptors not given back"},
		{"goroutine leak", func(e *sample, _ []sample) int64 { e.goroutines = 60; return 0 }, "goroutines not given back"},
		{"nothing delivered", func(e *sample, _ []sample) int64 { e.delivered = 0; return 0 }, "delivered nothing"},
		{"no reloads", func(e *sample, _ []sample) int64 { e.reloadedAt = 100; return 0 }, "not reloaded"},
		{"reload errors", func(e *sample, _ []sample) int64 { e.reloadErrors = 1; return 0 }, "not reloaded"},
		{"memory growth", func(_ *sample, d []sample) int64 { d[len(d)-1].rssMiB = 80; return 0 }, "kept growing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end := good
			d := append([]sample(nil), during...)
			errs := tc.edit(&end, d)
			p := verdict(start, d, end, errs, "x")
			if len(p) != 1 || !strings.Contains(p[0], tc.want) {
				t.Fatalf("verdict = %q, want one problem with %q", p, tc.want)
			}
		})
	}
	if p := verdict(start, nil, good, 0, ""); len(p) != 1 {
		t.Fatalf("no samples during the load: %v", p)
	}
}
