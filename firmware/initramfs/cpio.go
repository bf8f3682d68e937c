// Package initramfs writes the image's initramfs: a cpio archive in the
// kernel's "newc" format, gzip-compressed, with fixed times and owners so the
// same inputs always give the same bytes.
package initramfs

import (
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Entry is one file in the archive.
type Entry struct {
	Name  string      // path without a leading slash, e.g. "bin/storegate"
	Mode  fs.FileMode // type bits and permissions
	Data  []byte      // file contents, or the target of a symlink
	Major uint32      // for device nodes
	Minor uint32
}

// Archive collects entries; parents are added as directories automatically.
type Archive struct {
	entries map[string]Entry
}

// New returns an empty archive.
func New() *Archive { return &Archive{entries: map[string]Entry{}} }

// Add adds or replaces an entry and creates its parent directories.
func (a *Archive) Add(e Entry) error {
	name := strings.TrimPrefix(path.Clean("/"+e.Name), "/")
	if name == "" || name == "." {
		return fmt.Errorf("initramfs: empty name")
	}
	e.Name = name
	for dir := path.Dir(name); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if old, ok := a.entries[dir]; ok {
			if !old.Mode.IsDir() {
				return fmt.Errorf("initramfs: %s is a file and the parent of %s", dir, name)
			}
			continue
		}
		a.entries[dir] = Entry{Name: dir, Mode: fs.ModeDir | 0o755}
	}
	a.entries[name] = e
	return nil
}

// Names lists the entries in archive order.
func (a *Archive) Names() []string {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	// Sorting by name puts each directory before its contents.
	sort.Strings(names)
	return names
}

// WriteGzip writes the archive as gzip-compressed newc cpio.
func (a *Archive) WriteGzip(w io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if err := a.WriteCpio(zw); err != nil {
		return err
	}
	return zw.Close()
}

// WriteCpio writes the uncompressed newc archive. Times are 0, owners root.
func (a *Archive) WriteCpio(w io.Writer) error {
	ino := uint32(1)
	for _, n := range a.Names() {
		e := a.entries[n]
		if err := writeEntry(w, ino, e); err != nil {
			return err
		}
		ino++
	}
	return writeEntry(w, 0, Entry{Name: "TRAILER!!!"})
}

func modeBits(m fs.FileMode) uint32 {
	perm := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if m&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	switch {
	case m.IsDir():
		return 0o040000 | perm
	case m&fs.ModeSymlink != 0:
		return 0o120000 | perm
	case m&fs.ModeCharDevice != 0:
		return 0o020000 | perm
	case m&fs.ModeDevice != 0:
		return 0o060000 | perm
	case m.IsRegular():
		return 0o100000 | perm
	}
	return perm
}

func writeEntry(w io.Writer, ino uint32, e Entry) error {
	mode := modeBits(e.Mode)
	if e.Name == "TRAILER!!!" {
		mode = 0
	}
	nlink := uint32(1)
	if e.Mode.IsDir() {
		nlink = 2
	}
	data := e.Data
	if e.Mode.IsDir() || e.Mode&fs.ModeDevice != 0 {
		data = nil
	}
	name := e.Name + "\x00"
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, e.Major, e.Minor, len(name), 0)
	buf := make([]byte, 0, len(hdr)+len(name)+3)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = pad4(buf)
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if p := (4 - len(data)%4) % 4; p > 0 {
		_, err := w.Write(make([]byte, p))
		return err
	}
	return nil
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
