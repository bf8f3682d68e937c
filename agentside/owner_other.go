//go:build !unix

package agentside

import "io/fs"

// fileOwner reports no owner where files have no uid and gid.
func fileOwner(fs.FileInfo) (uid, gid int, ok bool) { return -1, -1, false }

// syncDir does nothing where directories cannot be synced (Windows).
func syncDir(string) error { return nil }
