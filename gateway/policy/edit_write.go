package policy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/storegate/storegate/internal/durable"
)

// WriteFileAtomic replaces the file at path with data so that a reader (the
// running gateway's watcher) sees the old file or the new one, never a mix:
// a temporary file in the same directory is written, synced, given the old
// file's mode and owner, renamed over the old one, and the directory is
// synced so the rename survives a power cut. A symlink at path is followed
// and its target replaced, so the link stays. A new file gets mode newMode.
func WriteFileAtomic(path string, data []byte, newMode fs.FileMode) error {
	target := path
	if real, err := filepath.EvalSymlinks(path); err == nil {
		target = real
	} else if !os.IsNotExist(err) {
		return err
	}
	mode := newMode
	old, err := os.Stat(target)
	if err == nil {
		mode = old.Mode().Perm()
	}
	dir, base := filepath.Split(target)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if old != nil {
		if err := keepOwner(tmp, old); err != nil {
			return fmt.Errorf("cannot give %s the owner of %s: %v", tmp.Name(), target, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return err
	}
	done = true
	return durable.SyncDir(dir)
}
