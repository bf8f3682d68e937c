// Package durable writes files so that a crash or a power cut leaves either
// the old content or the whole new one, never a torn or empty file.
package durable

import (
	"os"
	"path/filepath"
	"runtime"
)

// WriteFile replaces dir/name with data: it writes dir/tmpName, fsyncs it,
// renames it over dir/name and fsyncs dir. On an error the temporary file is
// removed and dir/name is left as it was.
func WriteFile(dir, name, tmpName string, data []byte, perm os.FileMode) error {
	tmp := filepath.Join(dir, tmpName)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err == nil {
		err = SyncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// SyncDir makes a file's creation, rename or removal in dir durable. Windows
// has no directory fsync and makes renames durable by itself: there it does
// nothing.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
