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
