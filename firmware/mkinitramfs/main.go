// Command mkinitramfs builds the firmware image's initramfs: our init, the
// gateway, the kernel modules the box needs with their dependencies, and the
// e2fsprogs tools with the shared libraries they load, from a sysroot of
// unpacked Debian packages. The output is the same for the same inputs.
package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/storegate/storegate/firmware/initd"
	"github.com/storegate/storegate/firmware/initramfs"
	"github.com/storegate/storegate/firmware/kmod"
)

type pairs []string

func (p *pairs) String() string     { return strings.Join(*p, ",") }
func (p *pairs) Set(s string) error { *p = append(*p, s); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("mkinitramfs", flag.ContinueOnError)
	out := fl.String("o", "", "output file (gzip-compressed newc cpio)")
	sysroot := fl.String("sysroot", "", "unpacked Debian packages: kernel modules, e2fsprogs, libraries")
	release := fl.String("release", "", "kernel release (directory under lib/modules)")
	initBin := fl.String("init", "", "the init binary")
	gateway := fl.String("storegate", "", "the storegate binary")
	shell := fl.String("shell", "", "a static shell for debug builds (busybox); empty: none")
	var elfs, files pairs
	fl.Var(&elfs, "elf", "DEST=SYSROOT-PATH: an ELF program from the sysroot, with its libraries (repeatable)")
	fl.Var(&files, "file", "DEST=PATH: a file from the build machine (repeatable)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" || *sysroot == "" || *release == "" || *initBin == "" || *gateway == "" {
		return errors.New("-o, -sysroot, -release, -init and -storegate are required")
	}
	a := initramfs.New()
	add := func(dest, src string, mode fs.FileMode) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return a.Add(initramfs.Entry{Name: dest, Mode: mode, Data: b})
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "storegate", "var/lib/storegate", "etc/storegate"} {
		if err := a.Add(initramfs.Entry{Name: d, Mode: fs.ModeDir | 0o755}); err != nil {
			return err
		}
	}
	if err := a.Add(initramfs.Entry{Name: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777}); err != nil {
		return err
	}
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	if err := a.Add(initramfs.Entry{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1}); err != nil {
		return err
	}
	if err := add("init", *initBin, 0o755); err != nil {
		return err
	}
	if err := add("bin/storegate", *gateway, 0o755); err != nil {
		return err
	}
	if *shell != "" {
		if err := add("bin/busybox", *shell, 0o755); err != nil {
			return err
		}
		if err := a.Add(initramfs.Entry{Name: "bin/sh", Mode: fs.ModeSymlink | 0o777, Data: []byte("busybox")}); err != nil {
			return err
		}
	}
	for _, f := range files {
		dest, src, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("-file %q: want DEST=PATH", f)
		}
		if err := add(dest, src, 0o644); err != nil {
			return err
		}
	}
	r := &resolver{root: *sysroot, a: a, done: map[string]bool{}}
	for _, e := range elfs {
		dest, src, ok := strings.Cut(e, "=")
		if !ok {
			return fmt.Errorf("-elf %q: want DEST=SYSROOT-PATH", e)
		}
		if err := r.program(dest, src); err != nil {
			return err
		}
	}
	n, err := addModules(a, *sysroot, *release, initd.DefaultModules())
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := a.WriteGzip(&buf); err != nil {
		return err
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Printf("mkinitramfs: %s: %d entries, %d modules, %d bytes\n", *out, len(a.Names()), n, buf.Len())
	return nil
}

// addModules copies the modules and their dependencies and writes a
// modules.dep that lists just those.
func addModules(a *initramfs.Archive, sysroot, release string, names []string) (int, error) {
	dir := filepath.Join(sysroot, "lib/modules", release)
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return 0, fmt.Errorf("%w (run depmod -b SYSROOT %s first)", err, release)
	}
	ix, err := kmod.ParseDep(bytes.NewReader(dep))
	if err != nil {
		return 0, err
	}
	files, missing := ix.Order(names...)
	if len(missing) > 0 {
		fmt.Printf("mkinitramfs: built in or not in this kernel: %s\n", strings.Join(missing, " "))
	}
	keep := map[string]bool{}
	for _, f := range files {
		keep[f] = true
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return 0, err
		}
		if err := a.Add(initramfs.Entry{Name: path.Join("lib/modules", release, f), Mode: 0o644, Data: b}); err != nil {
			return 0, err
		}
	}
	var sub bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(dep))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		mod, _, _ := strings.Cut(sc.Text(), ":")
		if keep[strings.TrimSpace(mod)] {
			sub.WriteString(sc.Text() + "\n")
		}
	}
	if err := a.Add(initramfs.Entry{Name: path.Join("lib/modules", release, "modules.dep"), Mode: 0o644, Data: sub.Bytes()}); err != nil {
		return 0, err
	}
	return len(files), nil
}

// resolver copies ELF programs from the sysroot with their interpreter and
// the shared libraries they need, found in the sysroot's library directories.
type resolver struct {
	root string
	a    *initramfs.Archive
	done map[string]bool
	dirs []string
}

// program copies an executable with its interpreter and libraries.
func (r *resolver) program(dest, src string) error { return r.copyELF(dest, src, 0o755) }

func (r *resolver) copyELF(dest, src string, mode fs.FileMode) error {
	if r.done[dest] {
		return nil
	}
	r.done[dest] = true
	real, err := r.resolve(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(real)
	if err != nil {
		return err
	}
	if err := r.a.Add(initramfs.Entry{Name: dest, Mode: mode, Data: b}); err != nil {
		return err
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			ib := make([]byte, p.Filesz)
			if _, err := p.ReadAt(ib, 0); err != nil {
				return err
			}
			interp := strings.TrimRight(string(ib), "\x00")
			if err := r.copyELF(strings.TrimPrefix(interp, "/"), interp, 0o755); err != nil {
				return fmt.Errorf("interpreter of %s: %w", src, err)
			}
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return err
	}
	for _, l := range libs {
		p, err := r.findLib(l)
		if err != nil {
			return fmt.Errorf("%s needs %s: %w", src, l, err)
		}
		if err := r.copyELF(strings.TrimPrefix(p, "/"), p, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// findLib returns the sysroot-relative path of a library.
func (r *resolver) findLib(name string) (string, error) {
	if r.dirs == nil {
		for _, pat := range []string{"lib/*-linux-gnu*", "usr/lib/*-linux-gnu*", "lib", "usr/lib", "lib64"} {
			m, _ := filepath.Glob(filepath.Join(r.root, pat))
			sort.Strings(m)
			for _, d := range m {
				if st, err := os.Stat(d); err == nil && st.IsDir() {
					rel, _ := filepath.Rel(r.root, d)
					r.dirs = append(r.dirs, "/"+filepath.ToSlash(rel))
				}
			}
		}
	}
	for _, d := range r.dirs {
		p := path.Join(d, name)
		if _, err := r.resolve(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %v", r.dirs)
}

// resolve follows symbolic links inside the sysroot (absolute links are
// taken relative to it) and returns the real file's path on the build host.
func (r *resolver) resolve(p string) (string, error) {
	p = path.Clean("/" + p)
	for range 32 {
		host := filepath.Join(r.root, filepath.FromSlash(p))
		st, err := os.Lstat(host)
		if err != nil {
			// A parent may be the link (merged /lib -> usr/lib).
			dir, base := path.Split(p)
			if dir != "/" {
				if rd, derr := r.resolve(path.Clean(dir)); derr == nil && rd != filepath.Join(r.root, filepath.FromSlash(path.Clean(dir))) {
					rel, _ := filepath.Rel(r.root, rd)
					p = path.Join("/"+filepath.ToSlash(rel), base)
					continue
				}
			}
			return "", err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			return host, nil
		}
		t, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if !path.IsAbs(t) {
			t = path.Join(path.Dir(p), t)
		}
		p = path.Clean(t)
	}
	return "", fmt.Errorf("%s: too many symbolic links", p)
}
