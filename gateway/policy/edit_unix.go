//go:build unix

package policy

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// keepOwner gives f the owner and group of old. Only root may give a file
// away; anyone else rewriting their own file keeps it anyway.
func keepOwner(f *os.File, old fs.FileInfo) error {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Uid == uint32(os.Getuid()) && st.Gid == uint32(os.Getgid()) {
		return nil
	}
	err := f.Chown(int(st.Uid), int(st.Gid))
	if errors.Is(err, fs.ErrPermission) && st.Uid == uint32(os.Getuid()) {
		return nil // our file, another of our groups: keep ours
	}
	return err
}
