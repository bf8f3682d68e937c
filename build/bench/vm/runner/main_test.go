package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/storegate/storegate/build/bench/vm"
)

// fakeQemu writes a script that records its arguments and prints console as
// the guest's serial output would arrive, then exits with code.
func fakeQemu(t *testing.T, dir, console string, code int) string {
	t.Helper()
	transcript := filepath.Join(dir, "console.txt")
	if err := os.WriteFile(transcript, []byte(console), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "qemu")
	body := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$@\" >%s\ncat %s\nexit %d\n", filepath.Join(dir, "args.txt"), transcript, code)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

func TestRun(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh for the stand-in qemu")
	}
	good := "SeaBIOS\r\n" + vm.InitSays + "running\r\n" +
		vm.MarkJSON + `{"meta":{}}` + "\r\n" + vm.MarkJSON + `{"metric":"tunnel_errors_10000","value":0}` + "\r\n" +
		vm.MarkText + "  met  10,000 open tunnels held without errors" + "\r\n" +
		vm.EndLine(0, 2, 1) + "\r\n"
	tests := []struct {
		name      string
		console   string
		qemuExit  int
		wantCode  int
		wantFiles bool
	}{
		{"results written", good, 0, 0, true},
		{"harness failed: results kept, run fails", strings.Replace(good, "exit=0", "exit=1", 1), 0, 1, true},
		{"guest never reached init", "SeaBIOS\r\nBooting from ROM...\r\n", 0, 1, false},
		{"qemu failed after the results", good, 1, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			if err := os.WriteFile(bin, []byte("\x7fELF stand-in"), 0o755); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out", "bench-vm.jsonl")
			var stdout, stderr bytes.Buffer
			code := run([]string{"-qemu", fakeQemu(t, dir, tc.console, tc.qemuExit), "-accel", "tcg",
				"-kernel", bin, "-init", bin, "-storegate", bin, "-bench", bin, "-out", out,
				"--", "-only", "idle tunnels", "-tunnels", "1000,10000"}, &stdout, &stderr)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout.String(), stderr.String())
			}
			got, err := os.ReadFile(out)
			if !tc.wantFiles {
				if err == nil {
					t.Fatalf("results written from a guest that sent none: %q", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := `{"meta":{}}` + "\n" + `{"metric":"tunnel_errors_10000","value":0}` + "\n"; string(got) != want {
				t.Fatalf("JSON lines %q, want %q", got, want)
			}
			txt, err := os.ReadFile(strings.TrimSuffix(out, ".jsonl") + ".txt")
			if err != nil || !strings.Contains(string(txt), "10,000 open tunnels held") {
				t.Fatalf("table %q, %v", txt, err)
			}
			if !strings.Contains(stdout.String(), vm.InitSays+"running") || strings.Contains(stdout.String(), vm.MarkJSON) {
				t.Fatalf("stdout should echo the console without the marked lines:\n%s", stdout.String())
			}
			args, err := os.ReadFile(filepath.Join(dir, "args.txt"))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"-nic\nnone\n", "-no-reboot\n", "-accel\ntcg\n", `-- -only "idle tunnels" -tunnels 1000,10000`} {
				if !strings.Contains(string(args), want) {
					t.Errorf("qemu arguments lack %q:\n%s", want, args)
				}
			}
		})
	}
}
