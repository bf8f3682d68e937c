//go:build linux

package spool

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"golang.org/x/sys/unix"
)

// TestDiskFull runs the spool on a 2 MiB tmpfs: when it fills, submissions
// get 503 with Retry-After; once delivery frees segments, they succeed
// again without a restart, and every acknowledged message is delivered.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mnt := filepath.Join(t.TempDir(), "tmpfs")
	os.Mkdir(mnt, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	f := newFixture(t, false, func(o *Options) {
		o.Dir = filepath.Join(mnt, "spool")
		o.SegmentBytes = 64 << 10
		o.Limits = Limits{MaxBytes: 64 << 20, MaxMessageBytes: 64 << 10} // the disk fills before the bound
	})
	body := []byte(strings.Repeat("d", 16<<10))
	var acked []string
	var lastCode int
	var hdr http.Header
	for i := 0; i < 1000; i++ {
		code, id, h := f.submit(f.dest("/full"), body, nil)
		if code != http.StatusAccepted {
			lastCode, hdr = code, h
			break
		}
		acked = append(acked, id)
	}
	if lastCode != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("disk full: status %d, Retry-After %q after %d messages", lastCode, hdr.Get("Retry-After"), len(acked))
	}
	if len(acked) < 50 {
		t.Fatalf("only %d messages fit in 2 MiB", len(acked))
	}
	// Still full: still 503, and nothing breaks.
	if code, _, _ := f.submit(f.dest("/full"), body, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("second submission on a full disk: %d", code)
	}
	f.startRun()
	waitFor(t, "submissions to succeed again", 30*time.Second, func() bool {
		code, id, _ := f.submit(f.dest("/full"), body, nil)
		if code == http.StatusAccepted {
			acked = append(acked, id)
			return true
		}
		return false
	})
	waitFor(t, "all acknowledged delivered", 30*time.Second, func() bool { return len(f.rcv.receipts()) >= len(acked) })
	got := map[string]bool{}
	for _, r := range f.rcv.receipts() {
		got[r.Key] = true
	}
	for _, id := range acked {
		if !got[id] {
			t.Fatalf("acknowledged %s not delivered", id)
		}
	}
	if f.sp.Status().Storage.WriteErrors == 0 {
		t.Fatal("write errors not counted")
	}
	t.Logf("%d messages acknowledged around a full disk, all delivered", len(acked))
}

// setImmutable sets or clears a file's immutable flag (chattr +i), which
// makes unlinking it fail even for root.
func setImmutable(path string, on bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	const immutable = 0x10 // FS_IMMUTABLE_FL
	if on {
		flags |= immutable
	} else {
		flags &^= immutable
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags)
}

// TestDeadLetterTrimDiskError: the oldest dead letter's listing entry cannot
// be deleted (a disk error). The trim keeps that letter whole (listing and
// payload), deletes the newer ones instead, counts each deletion once, reports
// the error once however often it retries, and its figures match the disk.
func TestDeadLetterTrimDiskError(t *testing.T) {
	f := newFixture(t, false, func(o *Options) { o.Limits.DeadLetterBytes = 1 << 20 })
	f.rcv.setRespond(func(*http.Request, int) (int, http.Header) { return 400, nil })
	const n = 10
	ids := f.deadLetters(n)
	f.stopRun()

	dead := filepath.Join(f.sp.opts.Dir, "dead")
	stuck := filepath.Join(dead, ids[0]+".json")
	if err := setImmutable(stuck, true); err != nil {
		t.Skipf("cannot make a file undeletable here: %v", err)
	}
	t.Cleanup(func() { setImmutable(stuck, false) })
	onDisk := func() (listed int, total int64) {
		es, err := os.ReadDir(dead)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			fi, _ := e.Info()
			total += fi.Size()
			if strings.HasSuffix(e.Name(), ".json") {
				listed++
			}
		}
		return listed, total
	}
	l := *f.sp.limits.Load()
	l.DeadLetterBytes = 1 // only the undeletable letter can stay, and it is over the bound
	if err := f.sp.SetLimits(l); err != nil {
		t.Fatal(err)
	}
	for range 3 { // again and again, as Run's tick does while the disk fails
		f.sp.trimDead()
	}

	for _, ext := range []string{".json", ".msg"} {
		if _, err := os.Stat(filepath.Join(dead, ids[0]+ext)); err != nil {
			t.Fatalf("the undeletable letter lost its %s: %v", ext, err)
		}
	}
	listed, total := onDisk()
	st := f.sp.Status()
	if st.DeadLetters != listed || st.DeadLetterBytes != total {
		t.Fatalf("status says %d letters, %d bytes; dead/ has %d, %d", st.DeadLetters, st.DeadLetterBytes, listed, total)
	}
	if listed != 1 || st.DeadDeleted != n-1 {
		t.Fatalf("deleted %d, kept %d; want %d and the undeletable one", st.DeadDeleted, listed, n-1)
	}
	if c := f.ev.countSaid(events.OtherError, "cannot delete old dead letters"); c != 1 {
		t.Fatalf("%d events for the failing deletion, want 1", c)
	}
}
