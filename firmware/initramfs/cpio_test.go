package initramfs

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func sample(t *testing.T) *Archive {
	t.Helper()
	a := New()
	for _, e := range []Entry{
		{Name: "/init", Mode: 0o755, Data: []byte("#!init\n")},
		{Name: "lib/modules/6.1/kernel/fs/ext4/ext4.ko", Mode: 0o644, Data: []byte("elf")},
		{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Name: "lib64/ld.so", Mode: fs.ModeSymlink | 0o777, Data: []byte("/lib/ld.so")},
		{Name: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	} {
		if err := a.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// readNewc parses a newc archive: name -> (mode, data, rdev).
func readNewc(t *testing.T, b []byte) map[string][3]string {
	t.Helper()
	out := map[string][3]string{}
	for off := 0; ; {
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		f := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, rmaj, rmin, nsize := f(1), f(6), f(9), f(10), f(11)
		name := string(b[off+110 : off+110+nsize-1])
		off = (off + 110 + nsize + 3) &^ 3
		data := string(b[off : off+size])
		off = (off + size + 3) &^ 3
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = [3]string{strconv.FormatInt(int64(mode), 8), data, strconv.Itoa(rmaj) + ":" + strconv.Itoa(rmin)}
	}
}

func TestArchive(t *testing.T) {
	var buf bytes.Buffer
	if err := sample(t).WriteCpio(&buf); err != nil {
		t.Fatal(err)
	}
	got := readNewc(t, buf.Bytes())
	want := map[string][3]string{
		"init":                                   {"100755", "#!init\n", "0:0"},
		"dev":                                    {"40755", "", "0:0"},
		"dev/console":                            {"20600", "", "5:1"},
		"lib64/ld.so":                            {"120777", "/lib/ld.so", "0:0"},
		"tmp":                                    {"41777", "", "0:0"},
		"lib/modules/6.1/kernel/fs/ext4/ext4.ko": {"100644", "elf", "0:0"},
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != 13 {
		t.Errorf("%d entries: %v", len(got), got)
	}
}

func TestReproducibleAndGzip(t *testing.T) {
	var a, b bytes.Buffer
	if err := sample(t).WriteGzip(&a); err != nil {
		t.Fatal(err)
	}
	if err := sample(t).WriteGzip(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same archive differ")
	}
	zr, err := gzip.NewReader(&a)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	readNewc(t, raw)
}

// TestCpioToolReadsIt extracts the archive with GNU cpio, as the kernel's
// format is defined by it, when cpio is installed.
func TestCpioToolReadsIt(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed")
	}
	var buf bytes.Buffer
	if err := sample(t).WriteCpio(&buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-i", "-d", "--no-absolute-filenames", "--quiet", "--nonmatching", "dev/console")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v %s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "init")); err != nil || string(b) != "#!init\n" {
		t.Errorf("init: %q %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "lib64/ld.so")); err != nil || l != "/lib/ld.so" {
		t.Errorf("symlink: %q %v", l, err)
	}
}

func TestAddRejects(t *testing.T) {
	a := New()
	if err := a.Add(Entry{Name: "/", Mode: fs.ModeDir}); err == nil {
		t.Error("root accepted")
	}
	if err := a.Add(Entry{Name: "bin", Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := a.Add(Entry{Name: "bin/x", Mode: 0o755}); err == nil {
		t.Error("file under a file accepted")
	}
}
