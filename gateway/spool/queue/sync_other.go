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

// lockDir is a no-op where flock is not available; run one process per spool.
func lockDir(string) (func(), error) { return func() {}, nil }
