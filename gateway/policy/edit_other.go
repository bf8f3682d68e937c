//go:build !unix

package policy

import (
	"io/fs"
	"os"
)

// keepOwner: ownership is not carried over where there are no Unix owners.
func keepOwner(*os.File, fs.FileInfo) error { return nil }

// syncDir: directories cannot be synced on this system; the rename is
// durable once the system flushes it.
func syncDir(string) error { return nil }
