package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncData flushes a segment's data and size; fdatasync skips the timestamps.
func syncData(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

func syncDirFile(d *os.File) error { return d.Sync() }
