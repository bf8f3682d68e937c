package vm

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestGuestArgs(t *testing.T) {
	base := []string{"-storegate", GuestStoregate, "-out", GuestOut}
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr string
	}{
		{"no flags", nil, base, ""},
		{"flags kept in order", []string{"-subjects", "storegate", "-only", "idle tunnels", "-tunnels", "1000,10000"},
			append(slices.Clone(base), "-subjects", "storegate", "-only", "idle tunnels", "-tunnels", "1000,10000"), ""},
		{"leading -- dropped", []string{"--", "-quick"}, append(slices.Clone(base), "-quick"), ""},
		{"a value that looks like an owned name", []string{"-only", "out"}, append(slices.Clone(base), "-only", "out"), ""},
		{"-storegate refused", []string{"-storegate", "/x"}, nil, "-storegate"},
		{"--out= refused", []string{"-quick", "--out=/x.jsonl"}, nil, "-out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GuestArgs(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("GuestArgs(%q) = %q, %v; want an error naming %s", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("GuestArgs(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// kernelSplit splits words the way the kernel's next_arg does for init's
// arguments: spaces separate words outside double quotes, the quotes
// themselves are dropped, there are no escapes.
func kernelSplit(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, inWord = !inQuote, true
		case r == ' ' && !inQuote:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
			}
			inWord = false
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

func TestCmdline(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    string
		wantErr bool
	}{
		{"plain words", []string{"-reps", "3", "-tunnels", "1000,5000"}, "-reps 3 -tunnels 1000,5000", false},
		{"space quoted", []string{"-only", "idle tunnels"}, `-only "idle tunnels"`, false},
		{"flag=value with a space", []string{"-only=idle tunnels"}, `"-only=idle tunnels"`, false},
		{"double quote refused", []string{`-only`, `a"b`}, "", true},
		{"newline refused", []string{"-only", "a\nb"}, "", true},
		{"empty refused", []string{"-only", ""}, "", true},
		{"too many", slices.Repeat([]string{"-quick"}, maxInitArgs+1), "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Cmdline(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Cmdline(%q) = %q; want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Cmdline(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			if back := kernelSplit(got); !slices.Equal(back, tc.in) {
				t.Fatalf("the kernel would hand init %q, not %q", back, tc.in)
			}
		})
	}
}

// console is what a guest writes: boot noise, harness output, the marked
// results (with the tty's \r\n) and init's end line.
func console(t *testing.T, jsonLines, textLines []string, exit int) string {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("SeaBIOS\r\nBooting from ROM...\r\n" + InitSays + "running\r\nrep 1/1 idle tunnels\r\n")
	nj, err := WriteMarked(&b, MarkJSON, strings.NewReader(strings.Join(jsonLines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	nt, err := WriteMarked(&b, MarkText, strings.NewReader(strings.Join(textLines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(EndLine(exit, nj, nt) + "\n[   92.9] reboot: Power down\n")
	return strings.ReplaceAll(b.String(), "\n", "\r\n")
}

func TestExtract(t *testing.T) {
	js := []string{`{"meta":{"machine":"2 CPUs"}}`, `{"metric":"tunnel_errors_10000","value":0}`}
	txt := []string{"metric   storegate", "", "  met     10,000 open tunnels held without errors  0 errors"}
	var echo bytes.Buffer
	res, err := Extract(strings.NewReader(console(t, js, txt, 0)), &echo)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Complete(); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if !slices.Equal(res.JSON, js) || !slices.Equal(res.Text, txt) {
		t.Fatalf("got JSON %q, text %q", res.JSON, res.Text)
	}
	e := echo.String()
	if !strings.Contains(e, "rep 1/1 idle tunnels\n") || !strings.Contains(e, "Power down") || strings.Contains(e, "BENCHVM-") || strings.Contains(e, "\r") {
		t.Fatalf("echo should carry the unmarked lines without \\r, and no marked ones:\n%s", e)
	}
}

func TestExtractDamage(t *testing.T) {
	js := []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}
	good := console(t, js, []string{"table"}, 0)
	tests := []struct {
		name    string
		console string
		want    string // in Complete's error
		json    int
	}{
		{"kernel text before a mark is split off", strings.Replace(good, MarkJSON+`{"b"`, "[ 3.1] oops "+MarkJSON+`{"b"`, 1), "", 3},
		{"kernel text inside a JSON line", strings.Replace(good, `{"b":2}`, `{"b"[ 3.1] oops:2}`, 1), "damaged", 2},
		{"line lost", strings.Replace(good, MarkJSON+`{"c":3}`+"\r\n", "", 1), "got 2 of 3 JSON", 2},
		{"no end line", good[:strings.Index(good, MarkEnd)], "without the end line", 3},
		{"harness failed", console(t, js, nil, 1), "exited with 1", 3},
		{"bad end line", strings.Replace(good, "exit=0", "exit=zero", 1), "without the end line", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Extract(strings.NewReader(tc.console), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			cerr := res.Complete()
			if tc.want == "" && cerr != nil || tc.want != "" && (cerr == nil || !strings.Contains(cerr.Error(), tc.want)) {
				t.Fatalf("Complete() = %v; want %q", cerr, tc.want)
			}
			if len(res.JSON) != tc.json {
				t.Fatalf("%d JSON lines, want %d: %q", len(res.JSON), tc.json, res.JSON)
			}
		})
	}
}

func TestInitramfs(t *testing.T) {
	a, err := Initramfs([]byte("INIT"), []byte("SG"), []byte("BENCH"))
	if err != nil {
		t.Fatal(err)
	}
	names := a.Names()
	for _, want := range []string{"init", "storegate", "storegate-bench", "dev/console", "proc", "sys", "tmp"} {
		if !slices.Contains(names, want) {
			t.Errorf("initramfs lacks %s: %q", want, names)
		}
	}
	var buf bytes.Buffer
	if err := a.WriteGzip(&buf); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// newc: each entry's header starts with 070701; the contents follow.
	if !bytes.HasPrefix(raw, []byte("070701")) || !bytes.Contains(raw, []byte("init\x00")) || !bytes.Contains(raw, []byte("BENCH")) {
		t.Fatalf("not a newc archive holding the binaries: %q", raw[:min(len(raw), 200)])
	}
	if _, err := Initramfs([]byte("INIT"), nil, []byte("BENCH")); err == nil {
		t.Fatal("an empty storegate binary was accepted")
	}
}

func FuzzExtract(f *testing.F) {
	f.Add([]byte(MarkJSON + "{}\r\n" + MarkText + "x\n" + MarkEnd + "exit=0 json=1 text=1\n"))
	f.Add([]byte("noise " + MarkJSON + "[1,2\n" + MarkEnd + "exit=-1 json=0 text=0 x=1\n"))
	f.Add([]byte("BENCHVM-\nBENCHVM-END \n\r\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		res, err := Extract(bytes.NewReader(in), io.Discard)
		if err != nil {
			return // a line longer than the scanner's buffer
		}
		for _, j := range res.JSON {
			if !json.Valid([]byte(j)) {
				t.Fatalf("invalid JSON passed: %q", j)
			}
		}
		if res.Ended && (res.SentJSON < 0 || res.SentText < 0) {
			t.Fatalf("negative counts accepted: %+v", res)
		}
		// What was extracted survives another trip through the console.
		var b bytes.Buffer
		nj, err := WriteMarked(&b, MarkJSON, strings.NewReader(strings.Join(res.JSON, "\n")))
		if err != nil || nj != len(res.JSON) {
			t.Fatalf("wrote %d of %d lines", nj, len(res.JSON))
		}
		again, err := Extract(&b, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(again.JSON, res.JSON) {
			t.Fatalf("round trip changed the JSON lines: %q then %q", res.JSON, again.JSON)
		}
	})
}
