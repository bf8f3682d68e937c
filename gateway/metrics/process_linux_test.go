package metrics

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// scrape returns the value of a series in one Process scrape, or -1.
func scrape(t *testing.T, name string) float64 {
	t.Helper()
	var b bytes.Buffer
	NewWriter(&b).Process()
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b.Bytes())
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

func TestProcessSeries(t *testing.T) {
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes",
		"process_virtual_memory_bytes", "process_open_fds", "process_max_fds"} {
		if v := scrape(t, name); v < 0 {
			t.Errorf("%s missing or negative", name)
		}
	}
	if rss := scrape(t, "process_resident_memory_bytes"); rss < 1<<20 {
		t.Errorf("resident memory %v bytes: not read from /proc/self/statm", rss)
	}
	// Open descriptors follow what the process really holds.
	before := scrape(t, "process_open_fds")
	var files []*os.File
	for range 10 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if got := scrape(t, "process_open_fds"); got != before+10 {
		t.Errorf("after opening 10 files: %v open fds, want %v", got, before+10)
	}
	for _, f := range files {
		f.Close()
	}
	if got := scrape(t, "process_open_fds"); got != before {
		t.Errorf("after closing them: %v open fds, want %v", got, before)
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and ')' must not shift the fields.
	line := []byte("4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 6 0 1234 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	st, ok := parseStat(line)
	if !ok || st.utime != 250 || st.stime != 75 {
		t.Fatalf("parseStat = %+v, %v", st, ok)
	}
	for _, bad := range []string{"", "4242 (x S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 500 0 0 0 2x0 75 0 0 20 0 6 0 1234 123456789 2048"} {
		if _, ok := parseStat([]byte(bad)); ok {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
	if b, err := os.ReadFile("/proc/self/stat"); err != nil {
		t.Fatal(err)
	} else if _, ok := parseStat(b); !ok {
		t.Fatalf("parseStat refused this process's stat: %q", b)
	}
}

func TestParseStatm(t *testing.T) {
	if size, res, ok := parseStatm([]byte("5000 1200 300 100 0 900 0\n")); !ok || size != 5000 || res != 1200 {
		t.Fatalf("parseStatm = %d, %d, %v", size, res, ok)
	}
	for _, bad := range []string{"", "12", "x 1", "1 -2"} {
		if _, _, ok := parseStatm([]byte(bad)); ok {
			t.Errorf("parseStatm(%q) accepted", bad)
		}
	}
}

func FuzzParseStatm(f *testing.F) {
	f.Add([]byte("5000 1200 300 100 0 900 0\n"))
	f.Add([]byte("1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		size, res, ok := parseStatm(b)
		if ok && (size < 0 || res < 0) || !ok && (size != 0 || res != 0) {
			t.Fatalf("parseStatm(%q) = %d, %d, %v", b, size, res, ok)
		}
	})
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560 100 0 0 0 5 7 0 0 20 0 1 0 10 1000 200 18446744073709551615\n"))
	f.Add([]byte("7 (a) b) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22\n"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, ok := parseStat(b)
		if !ok && st != (procStat{}) {
			t.Fatalf("refused input gave %+v", st)
		}
	})
}
