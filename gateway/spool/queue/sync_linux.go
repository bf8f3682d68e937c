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

// lockDir takes an exclusive advisory lock on dir/lock so two processes never
// write one spool; the kernel drops it when the process dies, even by SIGKILL.
func lockDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(dir+"/lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, ErrLocked
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}
