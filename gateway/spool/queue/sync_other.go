//go:build !linux

package queue

import (
	"os"
	"runtime"
)

func syncData(f *os.File) error { return f.Sync() }

// syncDirFile fsyncs a directory where the platform allows it; Windows has no
// directory fsync and makes renames durable by itself.
func syncDirFile(d *os.File) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	return d.Sync()
}
