//go:build unix

package agentside

import (
	"io/fs"
	"syscall"
)

// fileOwner returns the uid and gid of a file, so a rewrite keeps them.
func fileOwner(st fs.FileInfo) (uid, gid int, ok bool) {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, -1, false
	}
	return int(s.Uid), int(s.Gid), true
}
