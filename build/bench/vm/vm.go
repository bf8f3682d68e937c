// Package vm holds what the host and the guest share when the idle-tunnel
// benchmark runs in a small KVM guest: the guest's initramfs, the kernel
// command line that carries the harness's flags, and the marked console lines
// that carry its results back.
package vm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"github.com/storegate/storegate/firmware/initramfs"
)

// Marks begin the console lines the guest's init writes for the host: one
// per JSON line of the harness's results, one per line of its table, and a
// last line with the harness's exit code and the counts sent.
const (
	MarkJSON = "BENCHVM-JSON "
	MarkText = "BENCHVM-TXT "
	MarkEnd  = "BENCHVM-END "
)

// InitSays begins every line the guest's init writes itself; the host
// takes the first as proof the kernel booted.
const InitSays = "benchvm-init: "

// Paths inside the guest.
const (
	GuestStoregate = "/storegate"
	GuestBench     = "/storegate-bench"
	GuestOut       = "/tmp/bench-vm.jsonl"
)

// TimeoutVar is the kernel command line parameter (name=value before "--")
// the kernel hands to init as an environment variable: the guest's own bound
// on the harness, a Go duration.
const TimeoutVar = "benchvm_timeout"

// maxInitArgs is what the kernel passes to init after "--": its argv holds
// at most CONFIG_INIT_ENV_ARG_LIMIT (32) entries, argv[0] included, and the
// kernel's own unknown parameters may take some.
const maxInitArgs = 24

// GuestArgs turns init's arguments (argv[1:], the words after "--" on the
// kernel command line) into the harness's: the given flags, with the
// storegate binary and the results file set to the guest's paths. A flag
// init sets itself is refused, so the results are where init looks.
func GuestArgs(args []string) ([]string, error) {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	owned := []string{"storegate", "out"}
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			continue
		}
		for _, o := range owned {
			if name == o {
				return nil, fmt.Errorf("flag -%s is set by the guest's init, not on the command line", o)
			}
		}
	}
	out := []string{"-storegate", GuestStoregate, "-out", GuestOut}
	return append(out, args...), nil
}

// Cmdline renders the harness's flags as kernel command line words for after
// "--". The kernel splits on spaces and strips a pair of double quotes around
// a word but has no escapes, so a word with a space is quoted and one with a
// double quote, a control character or nothing in it is refused.
func Cmdline(args []string) (string, error) {
	if len(args) > maxInitArgs {
		return "", fmt.Errorf("%d arguments: the kernel passes init at most %d here", len(args), maxInitArgs)
	}
	words := make([]string, 0, len(args))
	for _, a := range args {
		if a == "" {
			return "", errors.New("an empty argument cannot be passed on the kernel command line")
		}
		for _, r := range a {
			if r == '"' || r < 0x20 || r == 0x7f {
				return "", fmt.Errorf("argument %q: double quotes and control characters cannot be passed on the kernel command line", a)
			}
		}
		if strings.Contains(a, " ") {
			a = `"` + a + `"`
		}
		words = append(words, a)
	}
	return strings.Join(words, " "), nil
}

// WriteMarked copies r to w line by line, each line prefixed with mark, and
// returns how many lines it wrote.
func WriteMarked(w io.Writer, mark string, r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		if _, err := fmt.Fprintf(w, "%s%s\n", mark, sc.Text()); err != nil {
			return n, err
		}
		n++
	}
	return n, sc.Err()
}

// EndLine is init's last line: the harness's exit code and the line counts.
func EndLine(exit, jsonLines, textLines int) string {
	return fmt.Sprintf("%sexit=%d json=%d text=%d", MarkEnd, exit, jsonLines, textLines)
}

// Result is what a guest's console output carried.
type Result struct {
	JSON  []string // the harness's JSON lines, in order
	Text  []string // the lines of its table
	Ended bool     // the end line arrived
	Exit  int      // the harness's exit code from the end line
	// Sent are the counts the end line announced.
	SentJSON, SentText int
	// Bad counts marked lines that were damaged on the way (a kernel message
	// written into the middle of one, say).
	Bad int
}

// Complete says why the result cannot be trusted, or nil: no end line, a
// harness that failed, or lines lost or damaged on the console.
func (r Result) Complete() error {
	switch {
	case !r.Ended:
		return errors.New("the guest's console ended without the end line (the guest hung, crashed or was killed)")
	case r.Exit != 0:
		return fmt.Errorf("the harness in the guest exited with %d", r.Exit)
	case r.Bad > 0 || r.SentJSON != len(r.JSON) || r.SentText != len(r.Text):
		return fmt.Errorf("console lost or damaged lines: got %d of %d JSON and %d of %d table lines, %d damaged",
			len(r.JSON), r.SentJSON, len(r.Text), r.SentText, r.Bad)
	}
	return nil
}

// Extract reads a guest's console output. Marked lines are collected,
// everything else is copied to echo as it arrives. A marked JSON line that is
// not valid JSON counts as damaged and is dropped. Only a read error is
// returned; Result.Complete judges what arrived.
func Extract(r io.Reader, echo io.Writer) (Result, error) {
	var res Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		// The mark may follow other output on the same console line.
		i := strings.Index(line, "BENCHVM-")
		if i < 0 {
			fmt.Fprintln(echo, line)
			continue
		}
		if i > 0 {
			fmt.Fprintln(echo, line[:i])
		}
		body := line[i:]
		switch {
		case strings.HasPrefix(body, MarkJSON):
			j := strings.TrimPrefix(body, MarkJSON)
			if !json.Valid([]byte(j)) {
				res.Bad++
				continue
			}
			res.JSON = append(res.JSON, j)
		case strings.HasPrefix(body, MarkText):
			res.Text = append(res.Text, strings.TrimPrefix(body, MarkText))
		case strings.HasPrefix(body, MarkEnd):
			if err := parseEnd(strings.TrimPrefix(body, MarkEnd), &res); err != nil {
				res.Bad++
				continue
			}
			res.Ended = true
		default:
			fmt.Fprintln(echo, body)
		}
	}
	return res, sc.Err()
}

// parseEnd reads "exit=N json=N text=N".
func parseEnd(s string, res *Result) error {
	fields := strings.Fields(s)
	if len(fields) != 3 {
		return fmt.Errorf("end line %q: want exit=, json= and text=", s)
	}
	dst := map[string]*int{"exit": &res.Exit, "json": &res.SentJSON, "text": &res.SentText}
	seen := map[string]bool{}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		p := dst[k]
		if !ok || p == nil || seen[k] {
			return fmt.Errorf("end line %q: bad field %q", s, f)
		}
		n, err := strconv.Atoi(v)
		if err != nil || (k != "exit" && n < 0) {
			return fmt.Errorf("end line %q: bad number in %q", s, f)
		}
		seen[k] = true
		*p = n
	}
	return nil
}

// Initramfs is the guest's root file system: init, storegate and the
// harness, the mount points init uses, and /dev/console, which the kernel
// opens for init before anything is mounted.
func Initramfs(init, storegate, bench []byte) (*initramfs.Archive, error) {
	a := initramfs.New()
	entries := []initramfs.Entry{
		{Name: "proc", Mode: fs.ModeDir | 0o755},
		{Name: "sys", Mode: fs.ModeDir | 0o755},
		{Name: "dev", Mode: fs.ModeDir | 0o755},
		{Name: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Name: "init", Mode: 0o755, Data: init},
		{Name: strings.TrimPrefix(GuestStoregate, "/"), Mode: 0o755, Data: storegate},
		{Name: strings.TrimPrefix(GuestBench, "/"), Mode: 0o755, Data: bench},
	}
	for _, e := range entries {
		if e.Mode.IsRegular() && len(e.Data) == 0 {
			return nil, fmt.Errorf("initramfs: /%s is empty", e.Name)
		}
		if err := a.Add(e); err != nil {
			return nil, err
		}
	}
	return a, nil
}
