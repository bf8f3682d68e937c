package initd

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeUevent(t *testing.T, root, dev, body string) {
	t.Helper()
	dir := filepath.Join(root, dev)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "uevent"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindPartition(t *testing.T) {
	root := t.TempDir()
	writeUevent(t, root, "vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n")
	writeUevent(t, root, "vda1", "DEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=EFI system\n")
	writeUevent(t, root, "vda2", "DEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=STOREGATE\n")
	writeUevent(t, root, "sdb2", "DEVNAME=sdb2\nDEVTYPE=partition\nPARTNAME=STOREGATE\n")
	writeUevent(t, root, "vda3", "DEVNAME=vda3\nDEVTYPE=partition\nPARTNAME=storegate-data\n")
	writeUevent(t, root, "loop0", "DEVNAME=loop0\nDEVTYPE=disk\nPARTNAME=STOREGATE\n")
	if got, err := FindPartition(root, "STOREGATE"); err != nil || got != "/dev/sdb2" {
		t.Errorf("STOREGATE = %q, %v; want /dev/sdb2 (first by name)", got, err)
	}
	if got, err := FindPartition(root, "storegate-data"); err != nil || got != "/dev/vda3" {
		t.Errorf("data = %q, %v", got, err)
	}
	if _, err := FindPartition(root, "nope"); err == nil {
		t.Error("no error for a missing partition")
	}
	if _, err := FindPartition(filepath.Join(root, "missing"), "STOREGATE"); err == nil {
		t.Error("no error for a missing sysfs")
	}
}

func TestHasExt4(t *testing.T) {
	img := make([]byte, 4096)
	f := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(f, img, 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(want bool) {
		t.Helper()
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if got, err := HasExt4(fh); err != nil || got != want {
			t.Errorf("HasExt4 = %v, %v; want %v", got, err, want)
		}
	}
	check(false)
	img[ext4MagicOff], img[ext4MagicOff+1] = 0x53, 0xef
	if err := os.WriteFile(f, img, 0o644); err != nil {
		t.Fatal(err)
	}
	check(true)
	if err := os.WriteFile(f, img[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	check(false)
}

func TestHasExt4OnRealFileSystem(t *testing.T) {
	mkfs, err := lookPath("mkfs.ext4", "/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4")
	if err != nil {
		t.Skip("e2fsprogs not installed")
	}
	f := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(f, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(mkfs, "-q", "-F", f); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	fh, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if ok, err := HasExt4(fh); !ok || err != nil {
		t.Fatalf("mkfs.ext4 output not recognised: %v %v", ok, err)
	}
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestSupervisorRestartsWithBackoffAndStopsOnCrashLoop(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	var delays []time.Duration
	runs := 0
	s := &Supervisor{
		Run: func(context.Context) error {
			runs++
			clk.t = clk.t.Add(time.Second)
			return errors.New("exit status 1")
		},
		Sleep:      func(_ context.Context, d time.Duration) { delays = append(delays, d); clk.t = clk.t.Add(d) },
		Now:        clk.now,
		MaxCrashes: 4,
		Window:     time.Minute,
	}
	err := s.Supervise(context.Background())
	if !errors.Is(err, ErrCrashLoop) || runs != 4 {
		t.Fatalf("err %v after %d runs; want ErrCrashLoop after 4", err, runs)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}; !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}
}

func TestSupervisorHealthyRunsResetAndStopOnCancel(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	s := &Supervisor{
		Run: func(context.Context) error {
			runs++
			clk.t = clk.t.Add(10 * time.Minute) // each run lives long: never a loop
			if runs == 20 {
				cancel()
			}
			return errors.New("crashed")
		},
		Sleep: func(_ context.Context, d time.Duration) {
			if d != time.Second {
				t.Errorf("delay %s after a healthy run, want 1s", d)
			}
		},
		Now: clk.now,
	}
	if err := s.Supervise(ctx); err != nil || runs != 20 {
		t.Fatalf("err %v runs %d", err, runs)
	}
}

func TestParseNetwork(t *testing.T) {
	tests := []struct {
		name    string
		policy  string
		dhcp    bool
		static  Static
		wantErr string
	}{
		{"absent", "version: 1\nlisten_port: 8080\n", true, Static{}, "network.address"},
		{"static", "version: 1\nnetwork:\n  dhcp: false\n  interface: eth0\n  address: 192.168.10.5/24\n  gateway: 192.168.10.1\n  dns: [192.168.10.1, 9.9.9.9]\n", false,
			Static{Addr: netip.MustParsePrefix("192.168.10.5/24"), Gateway: netip.MustParseAddr("192.168.10.1"),
				DNS: []netip.Addr{netip.MustParseAddr("192.168.10.1"), netip.MustParseAddr("9.9.9.9")}}, ""},
		{"gateway outside", "network: {dhcp: false, address: 10.1.0.5/24, gateway: 10.2.0.1}\n", false, Static{}, "network.gateway"},
		{"no prefix", "network: {dhcp: false, address: 10.1.0.5}\n", false, Static{}, "network.address"},
		{"bad dns", "network: {dhcp: false, address: 10.1.0.5/24, dns: [resolver]}\n", false, Static{}, "network.dns[0]"},
		{"unknown keys are ignored here", "network: {dhcp: true, future: 1}\nsomething_else: 2\n", true, Static{}, "network.address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseNetwork([]byte(tc.policy))
			if err != nil {
				t.Fatal(err)
			}
			if n.UseDHCP() != tc.dhcp {
				t.Errorf("UseDHCP = %v", n.UseDHCP())
			}
			s, err := n.Static()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Static err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || s.Addr != tc.static.Addr || s.Gateway != tc.static.Gateway || !slices.Equal(s.DNS, tc.static.DNS) {
				t.Errorf("Static = %+v, %v; want %+v", s, err, tc.static)
			}
		})
	}
	if _, err := ParseNetwork([]byte("network: [unclosed\n")); err == nil {
		t.Error("no error for broken YAML")
	}
}

func FuzzParseNetwork(f *testing.F) {
	f.Add("network: {dhcp: false, address: 192.168.10.5/24, gateway: 192.168.10.1, dns: [1.1.1.1]}\n")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNetwork([]byte(s))
		if err != nil {
			return
		}
		st, err := n.Static()
		if err == nil && (!st.Addr.Addr().Is4() || (st.Gateway.IsValid() && !st.Addr.Masked().Contains(st.Gateway))) {
			t.Fatalf("Static accepted %+v", st)
		}
	})
}

func TestApplyCmdline(t *testing.T) {
	c := Defaults("6.1.0", nil)
	c.ApplyCmdline("BOOT_IMAGE=x console=ttyS0,115200 storegate.console=ttyUSB0 storegate.debug=1 quiet")
	if c.Console != "/dev/ttyUSB0" || !c.Debug {
		t.Errorf("console %q debug %v", c.Console, c.Debug)
	}
	c.ApplyCmdline("storegate.console=none")
	if c.Console != "" {
		t.Errorf("console %q, want none", c.Console)
	}
	if c.ModulesDir != "/lib/modules/6.1.0" || len(c.Modules) == 0 {
		t.Errorf("defaults: %+v", c)
	}
}

func TestMeminfo(t *testing.T) {
	total, avail, err := Meminfo(strings.NewReader("MemTotal:         223456 kB\nMemFree:          100000 kB\nMemAvailable:     180000 kB\n"))
	if err != nil || total != 223456 || avail != 180000 {
		t.Errorf("Meminfo = %d %d %v", total, avail, err)
	}
	if _, _, err := Meminfo(strings.NewReader("garbage\n")); err == nil {
		t.Error("no error without MemTotal")
	}
}

func TestPowerKeyPressed(t *testing.T) {
	ev := make([]byte, inputEventSize)
	off := inputEventSize - 8
	binary.NativeEndian.PutUint16(ev[off:], evKey)
	binary.NativeEndian.PutUint16(ev[off+2:], keyPower)
	binary.NativeEndian.PutUint32(ev[off+4:], 1)
	if !PowerKeyPressed(ev) {
		t.Error("KEY_POWER down not recognised")
	}
	binary.NativeEndian.PutUint32(ev[off+4:], 0)
	if PowerKeyPressed(ev) {
		t.Error("key release taken as a press")
	}
	if PowerKeyPressed(ev[:4]) {
		t.Error("short record accepted")
	}
}

func TestRotatingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	w := &RotatingFile{Path: p, Max: 100}
	line := []byte(strings.Repeat("x", 39) + "\n")
	for range 5 {
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	cur, _ := os.ReadFile(p)
	old, _ := os.ReadFile(p + ".1")
	if len(cur) != 40 || len(old) != 80 {
		t.Errorf("current %d bytes, rotated %d; want 40 and 80", len(cur), len(old))
	}
}

func TestConsoleDevice(t *testing.T) {
	for in, want := range map[string]string{
		"console: {device: /dev/ttyUSB0, baud: 115200}\n": "/dev/ttyUSB0",
		"console:\n  device: \"\"\n":                      "",
		"version: 1\n":                                    "",
		"console: [broken\n":                              "",
	} {
		if got := ConsoleDevice([]byte(in)); got != want {
			t.Errorf("ConsoleDevice(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStopWait(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"limits: {shutdown_grace: 45s}\n":  50 * time.Second,
		"limits:\n  shutdown_grace: 2m\n":  125 * time.Second,
		"version: 1\n":                     15 * time.Second,
		"limits: {shutdown_grace: soon}\n": 15 * time.Second,
		"limits: [broken\n":                15 * time.Second,
	} {
		if got := StopWait([]byte(in)); got != want {
			t.Errorf("StopWait(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCopyFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "default.yaml"), filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(src, []byte("version: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(src, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "version: 1\n" {
		t.Fatalf("dst = %q, %v", b, err)
	}
	if _, err := os.Stat(dst + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	if err := copyFile(filepath.Join(dir, "missing"), dst); err == nil {
		t.Fatal("copying a missing file succeeded")
	}
}
