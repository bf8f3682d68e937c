package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinaryLiveReload runs the real binary with --policy and changes the
// policy three ways while it runs: a management command, a file renamed
// over it, and a broken file. Each change is in force (or refused) on the
// next CONNECT, without a restart; an open tunnel survives all of them.
func TestBinaryLiveReload(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "storegate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	echo := echoUpstream(t)
	ports := freePorts(t, 2)
	path := filepath.Join(dir, "policy.yaml")
	doc := func(allowed string) string {
		return fmt.Sprintf("# store policy\nversion: 1\nlisten_address: 127.0.0.1\nlisten_port: %d\nadmin_address: 127.0.0.1:%d\n"+
			"allowed_hosts: [127.0.0.1]\nallowed_ports: %s\ntls: {raw_tcp_hosts: [127.0.0.1]}\nspool: {dir: %q}\n",
			ports[0], ports[1], allowed, filepath.Join(dir, "spool"))
	}
	if err := os.WriteFile(path, []byte(doc("[443]")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--policy", path)
	var stderr syncBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitEvent := func(id int, n int, contains string) map[string]any {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			k := 0
			for _, e := range eventLines(t, stderr.String()) {
				if int(e["event_id"].(float64)) == id && strings.Contains(fmt.Sprint(e), contains) {
					if k == n {
						return e
					}
					k++
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no event %d #%d with %q:\n%s", id, n+1, contains, stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitEvent(101, 0, "")
	proxy := fmt.Sprintf("127.0.0.1:%d", ports[0])
	target := fmt.Sprintf("127.0.0.1:%d", echo)
	connect := func() (net.Conn, *bufio.Reader, string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		return c, br, strings.TrimSpace(line)
	}
	if c, _, line := connect(); !strings.Contains(line, " 403 ") {
		t.Fatalf("before: %s", line)
	} else {
		c.Close()
	}

	// 1. A management command, run as its own process.
	out, err := exec.Command(bin, "config", "set", "allowed_ports", fmt.Sprintf("[443, %d]", echo), "--policy", path).CombinedOutput()
	if err != nil {
		t.Fatalf("config set: %v\n%s", err, out)
	}
	ev := waitEvent(100, 0, "allowed_ports")
	if !strings.Contains(fmt.Sprint(ev["changes"]), fmt.Sprintf("allowed_ports +%d", echo)) {
		t.Fatalf("reload event: %v", ev)
	}
	tunnel, tbr, line := connect()
	if !strings.Contains(line, " 200 ") {
		t.Fatalf("after config set: %s", line)
	}
	defer tunnel.Close()
	roundTrip := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(tunnel, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(tbr, got); err != nil || string(got) != msg {
			t.Fatalf("tunnel echo %q, %v", got, err)
		}
	}
	roundTrip("first")

	// 2. A new file renamed over the old one (what vim and atomic savers do).
	tmp := filepath.Join(dir, ".policy.yaml.swp")
	os.WriteFile(tmp, []byte(doc("[443]")), 0o644)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitEvent(100, 0, fmt.Sprintf("allowed_ports -%d", echo))
	if c, _, line := connect(); !strings.Contains(line, " 403 ") {
		t.Fatalf("after rename: %s", line)
	} else {
		c.Close()
	}
	roundTrip("kept across the reload") // reload.established: keep

	// 3. A broken file: refused, named, the last good policy stays.
	os.WriteFile(path, []byte("version: 1\nlisten_port: [8080\n"), 0o644)
	ev = waitEvent(401, 0, "")
	if ev["file"] != path || ev["line"] == nil {
		t.Fatalf("event 401 does not name file and line: %v", ev)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "policy on disk refused") {
		t.Fatalf("/readyz: %s", body)
	}
	if c, _, line := connect(); !strings.Contains(line, " 403 ") {
		t.Fatalf("under the last good policy: %s", line)
	} else {
		c.Close()
	}
	roundTrip("still here")
	tunnel.Close()

	cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}
