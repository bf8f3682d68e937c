//go:build !linux

package queue

import "os"

func syncData(f *os.File) error { return f.Sync() }

// lockDir is a no-op where flock is not available; run one process per spool.
func lockDir(string) (func(), error) { return func() {}, nil }
