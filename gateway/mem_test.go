//go:build linux

package gateway

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
)

// TestIdleTunnelFootprint guards what an idle tunnel holds: two fresh
// goroutines parked waiting for data, 2 KiB of stack each (a change that parks
// a tunnel on a deep, grown stack shows up here as 8-12 KiB), and no pipe: its
// only descriptors are its two sockets.
func TestIdleTunnelFootprint(t *testing.T) {
	if raceEnabled {
		t.Skip("stack sizes are not meaningful under the race detector; measured by the plain `make test` run")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\nlimits: {max_connections_per_client: 10000}\n", port), nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fdsBefore := openFDs(t)
	const n = 500
	for i := 0; i < n; i++ {
		openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", port))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// Per tunnel, this process holds the gateway's two sockets, the test
	// client's socket and the upstream's accepted socket: 4.
	fdsPer := float64(openFDs(t)-fdsBefore) / n
	t.Logf("descriptors per idle tunnel (both ends in this process): %.2f", fdsPer)
	if fdsPer > 4.2 {
		t.Errorf("an idle tunnel holds %.2f descriptors here, want 4 (no pipes while idle)", fdsPer)
	}
	perTunnel := float64(after.StackInuse-before.StackInuse) / n
	t.Logf("goroutine stack per idle tunnel: %.0f B", perTunnel)
	if perTunnel > 6<<10 {
		t.Errorf("an idle tunnel holds %.0f B of goroutine stack; want two minimal stacks (~4 KiB)", perTunnel)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting descriptors: %v", err)
	}
	return len(ents)
}
