package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/storegate/storegate/firmware/initramfs"
)

// names lists the entries of a gzip-compressed newc archive with their data.
func names(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for off := 0; off+110 <= len(b); {
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("bad header at %d: %v", off, err)
			}
			return int(v)
		}
		size, nsize := field(6), field(11)
		name := string(b[off+110 : off+110+nsize-1])
		off = (off + 110 + nsize + 3) &^ 3
		out[name] = string(b[off : off+size])
		off = (off + size + 3) &^ 3
		if name == "TRAILER!!!" {
			break
		}
	}
	return out
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBuildsFromSysroot(t *testing.T) {
	root := t.TempDir()
	rel := "6.1.0-test"
	mods := filepath.Join(root, "lib/modules", rel)
	write(t, filepath.Join(mods, "modules.dep"), "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n"+
		"kernel/fs/jbd2/jbd2.ko:\nkernel/drivers/block/virtio_blk.ko:\nkernel/sound/snd.ko:\n")
	for _, m := range []string{"kernel/fs/ext4/ext4.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/drivers/block/virtio_blk.ko", "kernel/sound/snd.ko"} {
		write(t, filepath.Join(mods, m), "module "+m)
	}
	// The ELF part below uses this machine's own root as the sysroot: real
	// ELF files, real links (merged /usr, absolute interpreter links).
	if _, err := os.Stat("/sbin/mke2fs"); err != nil {
		t.Skip("e2fsprogs not installed")
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "init"), "init binary")
	write(t, filepath.Join(dir, "storegate"), "storegate binary")
	write(t, filepath.Join(dir, "policy.yaml"), "version: 1\n")
	out := filepath.Join(dir, "initrd.gz")

	// Modules from the fake tree; the program from the machine's root.
	err := run([]string{"-o", out, "-sysroot", root, "-release", rel,
		"-init", filepath.Join(dir, "init"), "-storegate", filepath.Join(dir, "storegate"),
		"-file", "etc/storegate/policy.yaml=" + filepath.Join(dir, "policy.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	got := names(t, out)
	for name, want := range map[string]string{
		"init":                      "init binary",
		"bin/storegate":             "storegate binary",
		"etc/storegate/policy.yaml": "version: 1\n",
		"lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko": "module kernel/fs/ext4/ext4.ko",
		"lib/modules/6.1.0-test/kernel/fs/jbd2/jbd2.ko": "module kernel/fs/jbd2/jbd2.ko",
		"lib/modules/6.1.0-test/modules.dep":            "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\nkernel/drivers/block/virtio_blk.ko:\n",
	} {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
	if _, ok := got["lib/modules/6.1.0-test/kernel/sound/snd.ko"]; ok {
		t.Error("a module nobody asked for was copied")
	}
	if _, ok := got["dev/console"]; !ok {
		t.Error("no /dev/console")
	}

	// The ELF resolver against the machine's root: mke2fs with its
	// interpreter and libraries, links followed.
	out2 := filepath.Join(dir, "initrd2.gz")
	err = run([]string{"-o", out2, "-sysroot", "/", "-release", "none",
		"-init", filepath.Join(dir, "init"), "-storegate", filepath.Join(dir, "storegate"),
		"-elf", "sbin/mke2fs=/sbin/mke2fs"})
	if err == nil || !strings.Contains(err.Error(), "depmod") {
		t.Fatalf("want the missing modules.dep named, got %v", err)
	}
	a := initramfs.New()
	r := &resolver{root: "/", a: a, done: map[string]bool{}}
	if err := r.program("sbin/mke2fs", "/sbin/mke2fs"); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(a.Names(), "\n")
	for _, want := range []string{"sbin/mke2fs", "libext2fs.so.2", "libc.so.6", "ld-linux"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no %s among:\n%s", want, joined)
		}
	}
	var buf bytes.Buffer
	if err := a.WriteCpio(&buf); err != nil || buf.Len() < 100_000 {
		t.Errorf("archive of %d bytes, %v: the libraries' contents are missing", buf.Len(), err)
	}
}
