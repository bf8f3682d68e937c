package netconf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a locked thread in a network namespace of its own,
// so the test changes nothing on the machine. The thread is discarded after.
func inNewNetns(t *testing.T, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("needs root for a network namespace: %v", err)
		}
		t.Fatal(err)
	}
}

func TestConfigureInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	inNewNetns(t, func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		if lo.Flags&net.FlagUp != 0 {
			t.Error("lo is up in a fresh namespace")
		}
		if err := LinkUp(lo.Index); err != nil {
			return err
		}
		if err := AddAddr(lo.Index, netip.MustParsePrefix("127.9.0.1/16")); err != nil {
			return err
		}
		if err := AddAddr(lo.Index, netip.MustParsePrefix("127.9.0.1/16")); err != nil {
			t.Errorf("adding the same address again: %v", err)
		}
		if err := SetDefaultRoute(lo.Index, netip.MustParseAddr("127.9.0.2")); err != nil {
			return err
		}
		lo, err = net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		if lo.Flags&net.FlagUp == 0 {
			t.Error("lo is not up")
		}
		addrs, err := lo.Addrs()
		if err != nil {
			return err
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if !strings.Contains(strings.Join(got, " "), "127.9.0.1/16") {
			t.Errorf("addresses %v lack 127.9.0.1/16", got)
		}
		routes, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/net/route")
		if err != nil {
			return err
		}
		// default route: destination 00000000, gateway 127.9.0.2 little-endian
		if !strings.Contains(string(routes), "lo\t00000000\t0200097F") {
			t.Errorf("no default route via 127.9.0.2 in\n%s", routes)
		}
		if err := AddAddr(lo.Index, netip.MustParsePrefix("127.8.0.1/16")); err != nil {
			return err
		}
		if err := DelAddr(lo.Index, netip.MustParsePrefix("127.8.0.1/16")); err != nil {
			return err
		}
		if addrs, err := lo.Addrs(); err != nil || strings.Contains(fmt.Sprint(addrs), "127.8.0.1") {
			t.Errorf("127.8.0.1 still present after DelAddr: %v %v", addrs, err)
		}
		if err := AddAddr(lo.Index, netip.MustParsePrefix("::1/128")); err == nil {
			t.Error("IPv6 accepted")
		}
		if err := LinkUp(99999); err == nil {
			t.Error("no error for a missing interface")
		}
		return nil
	})
}

func TestWriteResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etc", "resolv.conf")
	if err := WriteResolvConf(p, []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("192.0.2.53")}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "nameserver 10.0.2.3\nnameserver 192.0.2.53\n") {
		t.Errorf("resolv.conf:\n%s", b)
	}
}
