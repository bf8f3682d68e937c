package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// These tests run a real gateway whose policy comes from a file watched by
// policy.Watcher and applied by policy.Reloader, wired the way
// cmd/storegate's startWatcher wires them.

type reloadGW struct {
	first *policy.Snapshot
	t     *testing.T
	path  string // the policy file as the gateway names it
	srv   *Server
	rec   *recorder
	poll  chan time.Time
	port  int // listen_port written into every version
	admin string
	echo  int // an echo server's port on 127.0.0.1
	echo2 int
}

// doc renders a policy version: the fixed listeners plus body, and the first
// echo port as the allowed port unless body says otherwise.
func (g *reloadGW) doc(body string) []byte {
	if !strings.Contains(body, "allowed_ports") {
		body += fmt.Sprintf("allowed_ports: [%d]\n", g.echo)
	}
	return fmt.Appendf(nil, "version: 1\nlisten_address: 127.0.0.1\nlisten_port: %d\nadmin_address: %s\n"+
		"allowed_networks: [127.0.0.0/8]\nlimits: {max_connections_per_client: 2000, max_connections: 4000}\n"+
		"tls: {raw_tcp_hosts: [a.test, b.test, c.test]} # the echo protocol is not TLS\n%s",
		g.port, g.admin, body)
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// newReloadGW writes the first version to path (created by setup, which
// may lay out symlinks first) and starts a gateway and a watcher on it.
func newReloadGW(t *testing.T, body string, setup func(g *reloadGW, first []byte), tune func(w *policy.Watcher)) *reloadGW {
	t.Helper()
	g := &reloadGW{t: t, rec: &recorder{}, poll: make(chan time.Time), echo: echoServer(t), echo2: echoServer(t)}
	// The ports are picked free and then bound by the gateway; another test
	// running in parallel can take one in between, so try a few times.
	for attempt := 0; ; attempt++ {
		g.port = freePort(t)
		g.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		g.path = filepath.Join(t.TempDir(), "policy.yaml")
		first := g.doc(body)
		if setup != nil {
			setup(g, first)
		} else if err := os.WriteFile(g.path, first, 0o644); err != nil {
			t.Fatal(err)
		}
		snap, err := policy.Load(g.path, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		g.srv = New(Config{Version: "test", Events: g.rec, Resolver: mapResolver{
			"a.test": {"127.0.0.1"}, "b.test": {"127.0.0.1"}, "c.test": {"127.0.0.1"},
		}})
		err = g.srv.Apply(snap)
		if err == nil {
			g.first = snap
			break
		}
		if !strings.Contains(err.Error(), "address already in use") || attempt == 4 {
			t.Fatal(err)
		}
	}
	snap := g.first
	ctx, cancel := context.WithCancel(context.Background())
	r := &policy.Reloader{Path: g.path, Apply: g.srv.Apply, Current: g.srv.Policy,
		Failed: g.srv.ReloadFailed, Succeeded: g.srv.ReloadSucceeded, Emit: g.rec}
	w := &policy.Watcher{Path: g.path, Initial: snap.Hash, Poll: g.poll, Debounce: 300 * time.Millisecond, MaxDelay: 3 * time.Second,
		OnChange: func(data []byte, sum string) { _ = r.Reload(data, sum) },
		OnError:  r.ReadFailed, Related: r.Related}
	if tune != nil {
		tune(w)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-w.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		g.srv.Shutdown(sctx)
	})
	return g
}

func (g *reloadGW) count(id events.ID) int {
	g.rec.mu.Lock()
	defer g.rec.mu.Unlock()
	n := 0
	for _, e := range g.rec.evs {
		if e.id == id {
			n++
		}
	}
	return n
}

// barrier returns once the watcher has handled a re-read tick sent after
// barrier was called: two values on the unbuffered Poll channel, the second
// accepted only after the first was handled. A re-read that finds a change
// waits for the debounce, so no reload can be in progress unseen.
func (g *reloadGW) barrier() {
	for range 2 {
		select {
		case g.poll <- time.Now():
		case <-time.After(10 * time.Second):
			g.t.Fatal("watcher loop does not take re-read ticks")
		}
	}
}

// status sends CONNECT target and returns the response's status line.
func (g *reloadGW) status(target string) string {
	g.t.Helper()
	c, _, line := rawConnect(g.t, g.srv.Addr("proxy").String(), "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	c.Close()
	return line
}

// expectOneReload waits for the reload to the version with hash want and
// checks it was the only reload and nothing was refused on the way.
func (g *reloadGW) expectOneReload(want string) {
	g.t.Helper()
	g.rec.waitFor(g.t, events.Info, map[string]string{events.KeyHash: want})
	if n := g.count(events.BadConfig); n != 0 {
		g.t.Fatalf("%d refusals (event 401) during the replacement: %v", n, g.rec.evs)
	}
	g.barrier()
	if n := g.count(events.Info); n != 1 {
		g.t.Fatalf("%d reloads, want exactly 1: %v", n, g.rec.evs)
	}
	if got := g.srv.Policy().Hash; got != want {
		g.t.Fatalf("policy in force %s, want %s", got, want)
	}
}

func writeAll(t *testing.T, path string, flag int, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// k8sLayout lays out path the way a Kubernetes ConfigMap volume does:
// policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>.
func k8sLayout(t *testing.T, dir, stamp string, content []byte) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, stamp), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stamp, "policy.yaml"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(stamp, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// TestReloadReplacementStyles: every way a file gets replaced is seen, is
// one reload, and the next CONNECT is decided by the new policy.
func TestReloadReplacementStyles(t *testing.T) {
	const v1 = "allowed_hosts: [a.test]\n"
	const v2 = "# version two, a longer comment so an in-place write covers all of version one\nallowed_hosts: [a.test, b.test]\n"
	styles := []struct {
		name    string
		setup   func(g *reloadGW, first []byte)
		replace func(t *testing.T, g *reloadGW, next []byte)
	}{
		{name: "write in place", replace: func(t *testing.T, g *reloadGW, next []byte) {
			writeAll(t, g.path, os.O_WRONLY, next)
		}},
		{name: "truncate then write", replace: func(t *testing.T, g *reloadGW, next []byte) {
			if err := os.Truncate(g.path, 0); err != nil {
				t.Fatal(err)
			}
			writeAll(t, g.path, os.O_WRONLY, next)
		}},
		{name: "temp file renamed over", replace: func(t *testing.T, g *reloadGW, next []byte) {
			tmp := filepath.Join(filepath.Dir(g.path), ".policy.yaml.tmp123")
			writeAll(t, tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, next)
			if err := os.Rename(tmp, g.path); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "vim with backup", replace: func(t *testing.T, g *reloadGW, next []byte) {
			// vim's backupcopy=no: rename to a backup, write anew, drop the backup.
			bak := g.path + "~"
			if err := os.Rename(g.path, bak); err != nil {
				t.Fatal(err)
			}
			writeAll(t, g.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, next)
			if err := os.Remove(bak); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "delete then recreate", replace: func(t *testing.T, g *reloadGW, next []byte) {
			if err := os.Remove(g.path); err != nil {
				t.Fatal(err)
			}
			writeAll(t, g.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, next)
		}},
		{name: "symlink swap (..data)",
			setup: func(g *reloadGW, first []byte) {
				dir := filepath.Dir(g.path)
				k8sLayout(g.t, dir, "..2026_01_01_00_00_00.1", first)
				if err := os.Symlink(filepath.Join("..data", "policy.yaml"), g.path); err != nil {
					g.t.Fatal(err)
				}
			},
			replace: func(t *testing.T, g *reloadGW, next []byte) {
				dir := filepath.Dir(g.path)
				k8sLayout(t, dir, "..2026_01_01_00_00_00.2", next)
				if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "burst of partial writes", replace: func(t *testing.T, g *reloadGW, next []byte) {
			// An editor saving in chunks: every intermediate state is a
			// truncated, invalid policy, which must never be read.
			f, err := os.OpenFile(g.path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			for rest := next; len(rest) > 0; {
				n := min(16, len(rest))
				if _, err := f.Write(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			f.Close()
		}},
	}
	for _, st := range styles {
		t.Run(st.name, func(t *testing.T) {
			g := newReloadGW(t, v1, st.setup, nil)
			if got := g.status(fmt.Sprintf("b.test:%d", g.echo)); !strings.Contains(got, " 403 ") {
				t.Fatalf("before: CONNECT b.test: %q, want 403", got)
			}
			next := g.doc(v2)
			st.replace(t, g, next)
			g.expectOneReload(sum(next))
			if got := g.status(fmt.Sprintf("b.test:%d", g.echo)); !strings.Contains(got, " 200 ") {
				t.Fatalf("after: CONNECT b.test: %q, want 200", got)
			}
			e := g.rec.waitFor(t, events.Info, map[string]string{events.KeyHash: sum(next)})
			if !strings.Contains(e.fields[events.KeyChanges], "allowed_hosts +b.test") {
				t.Fatalf("reload summary %q does not name the added host", e.fields[events.KeyChanges])
			}
		})
	}
}

// TestReloadChmodOnly: permissions and timestamps changing is no reload.
func TestReloadChmodOnly(t *testing.T) {
	g := newReloadGW(t, "allowed_hosts: [a.test]\n", nil, nil)
	if err := os.Chmod(g.path, 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(time.Minute)
	if err := os.Chtimes(g.path, now, now); err != nil {
		t.Fatal(err)
	}
	g.barrier()
	// A rewrite with identical bytes is no reload either.
	data, _ := os.ReadFile(g.path)
	writeAll(t, g.path, os.O_WRONLY|os.O_TRUNC, data)
	// Then a real change: the only reload must be this one.
	next := g.doc("allowed_hosts: [a.test, c.test]\n")
	writeAll(t, g.path, os.O_WRONLY|os.O_TRUNC, next)
	g.expectOneReload(sum(next))
}

// TestReloadPollOnly: with no notifications (a FAT or network filesystem),
// the periodic re-read finds the change by its hash.
func TestReloadPollOnly(t *testing.T) {
	g := newReloadGW(t, "allowed_hosts: [a.test]\n", nil, func(w *policy.Watcher) { w.PollOnly = true })
	next := g.doc("allowed_hosts: [a.test, b.test]\n")
	writeAll(t, g.path, os.O_WRONLY|os.O_TRUNC, next)
	g.barrier() // the re-read finds it; it is read once it has settled
	g.expectOneReload(sum(next))
	if got := g.status(fmt.Sprintf("b.test:%d", g.echo)); !strings.Contains(got, " 200 ") {
		t.Fatalf("CONNECT b.test: %q, want 200", got)
	}
}

// TestReloadMovesListener: a changed listen_port (and admin_address) opens
// the new listener before the old one closes; an open tunnel accepted on the
// old one keeps running.
func TestReloadMovesListener(t *testing.T) {
	g := newReloadGW(t, "allowed_hosts: [a.test]\n", nil, nil)
	oldAddr := g.srv.Addr("proxy").String()
	c, br, line := rawConnect(t, oldAddr, fmt.Sprintf("CONNECT a.test:%d HTTP/1.1\r\n\r\n", g.echo))
	if !strings.Contains(line, " 200 ") {
		t.Fatalf("CONNECT: %q", line)
	}
	readHeadEnd(t, br)
	oldAdmin := g.srv.Addr("admin").String()
	g.port = freePort(t)
	g.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	next := g.doc("allowed_hosts: [a.test]\n")
	writeAll(t, g.path, os.O_WRONLY|os.O_TRUNC, next)
	e := g.rec.waitFor(t, events.Info, map[string]string{events.KeyHash: sum(next)})
	if !strings.Contains(e.fields[events.KeyChanges], "listen_port") {
		t.Fatalf("summary %q does not name listen_port", e.fields[events.KeyChanges])
	}
	if got := g.srv.Addr("proxy").String(); got != fmt.Sprintf("127.0.0.1:%d", g.port) {
		t.Fatalf("proxy listens on %s, want port %d", got, g.port)
	}
	echoRoundTrip(t, c, br, []byte("still here"))
	if got := g.status(fmt.Sprintf("a.test:%d", g.echo)); !strings.Contains(got, " 200 ") {
		t.Fatalf("CONNECT on the new port: %q", got)
	}
	if _, err := net.DialTimeout("tcp", oldAddr, time.Second); err == nil {
		t.Fatalf("old listener %s still accepts", oldAddr)
	}
	if code, _ := httpGet(t, "http://"+g.admin+"/healthz"); code != 200 {
		t.Fatalf("admin endpoint on the new address: %d", code)
	}
	if _, err := net.DialTimeout("tcp", oldAdmin, time.Second); err == nil {
		t.Fatalf("old admin listener %s still accepts", oldAdmin)
	}
}

func readHeadEnd(t *testing.T, br *bufio.Reader) {
	t.Helper()
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			return
		}
	}
}

func echoRoundTrip(t *testing.T, c net.Conn, br *bufio.Reader, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write to tunnel: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("read from tunnel: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// TestReloadEstablished: a tunnel whose target the new policy refuses keeps
// running under reload.established: keep (the default) and is closed under
// close; a tunnel the new policy still allows is never touched.
func TestReloadEstablished(t *testing.T) {
	for _, mode := range []string{"keep", "close"} {
		t.Run(mode, func(t *testing.T) {
			g := newReloadGW(t, "reload: {established: "+mode+"}\nallowed_hosts: [a.test, b.test]\n", nil, nil)
			proxy := g.srv.Addr("proxy").String()
			ca, bra, _ := rawConnect(t, proxy, fmt.Sprintf("CONNECT a.test:%d HTTP/1.1\r\n\r\n", g.echo))
			cb, brb, line := rawConnect(t, proxy, fmt.Sprintf("CONNECT b.test:%d HTTP/1.1\r\n\r\n", g.echo))
			if !strings.Contains(line, " 200 ") {
				t.Fatalf("CONNECT b.test: %q", line)
			}
			readHeadEnd(t, bra)
			readHeadEnd(t, brb)
			next := g.doc("reload: {established: " + mode + "}\nallowed_hosts: [a.test]\n")
			writeAll(t, g.path, os.O_WRONLY|os.O_TRUNC, next)
			g.expectOneReload(sum(next))
			echoRoundTrip(t, ca, bra, []byte("a stays"))
			if mode == "keep" {
				echoRoundTrip(t, cb, brb, []byte("b stays too"))
				return
			}
			g.rec.waitFor(t, events.NotAllowed, map[string]string{events.KeyTarget: fmt.Sprintf("b.test:%d", g.echo)})
			cb.Write([]byte("x"))
			if _, err := brb.ReadByte(); err == nil {
				t.Fatal("tunnel to b.test still open under reload.established: close")
			}
		})
	}
}

// TestReloadBadPolicies: whatever lands on disk, the last good policy stays
// in force, event 401 names file, line and key, and /readyz and /metrics say
// the file on disk is not the one in force; a good file clears it.
func TestReloadBadPolicies(t *testing.T) {
	bomb := "version: 1\na: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" +
		"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n" +
		"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
	g := newReloadGW(t, "allowed_hosts: [a.test]\n", nil, nil)
	good := g.srv.Policy().Hash
	cases := []struct {
		name    string
		content []byte
		line    int    // 0: not checked
		key     string // "": not checked
	}{
		{"invalid YAML", []byte("version: 1\nallowed_hosts: [a.test\nlisten_port: 1\n"), 0, ""},
		{"empty", nil, 0, ""},
		{"truncated", g.doc("allowed_hosts: [a.test, b.test]\n")[:40], 0, ""},
		{"bad value", fmt.Appendf(nil, "version: 1\nlisten_address: 127.0.0.1\nlisten_port: %d\nlimits:\n  dial_timeout: soon\n", g.port), 5, "limits.dial_timeout"},
		{"unknown key", append(g.doc("allowed_hosts: [a.test]\n"), "allowed_hostz: [b.test]\n"...), 10, "allowed_hostz"},
		{"port out of range", []byte("version: 1\nlisten_port: 70000\n"), 2, "listen_port"},
		{"10 MB", append(g.doc("allowed_hosts: [a.test, b.test]\n"), bytes.Repeat([]byte("# padding padding padding\n"), 10<<20/26)...), 0, ""},
		{"alias bomb", []byte(bomb), 0, ""},
	}
	admin := "http://" + g.srv.Addr("admin").String()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := g.count(events.BadConfig)
			replaceFile(t, g.path, c.content)
			// The first refusal of this content (a slow machine may still
			// be reporting the case before).
			first := g.waitEvent(events.BadConfig, before)
			for n := before + 1; first.fields[events.KeyHash] != sum(c.content); n++ {
				first = g.waitEvent(events.BadConfig, n)
			}
			if first.fields[events.KeyFile] != g.path {
				t.Errorf("event 401 names file %q, want %q", first.fields[events.KeyFile], g.path)
			}
			if c.line != 0 && first.fields[events.KeyLine] != fmt.Sprint(c.line) {
				t.Errorf("event 401 line %q, want %d: %s", first.fields[events.KeyLine], c.line, first.msg)
			}
			if c.key != "" && first.fields[events.KeyKey] != c.key {
				t.Errorf("event 401 key %q, want %q: %s", first.fields[events.KeyKey], c.key, first.msg)
			}
			if got := g.srv.Policy().Hash; got != good {
				t.Fatalf("policy in force changed to %s", got)
			}
			if got := g.status(fmt.Sprintf("b.test:%d", g.echo)); !strings.Contains(got, " 403 ") {
				t.Fatalf("CONNECT b.test under the last good policy: %q", got)
			}
			code, body := httpGet(t, admin+"/readyz")
			if code != 200 || !strings.Contains(body, "policy on disk refused (sha256:"+sum(c.content)+")") {
				t.Fatalf("/readyz %d:\n%s", code, body)
			}
			_, metrics := httpGet(t, admin+"/metrics")
			if !strings.Contains(metrics, fmt.Sprintf("storegate_policy_reload_errors_total %d", i+1)) ||
				!strings.Contains(metrics, `sha256="`+good+`",disk_matches="0"`) {
				t.Fatalf("/metrics does not show the refusal:\n%s", grepLines(metrics, "policy"))
			}
		})
	}
	// A good file clears it all.
	next := g.doc("allowed_hosts: [a.test, b.test]\n")
	writeAll(t, g.path, os.O_WRONLY|os.O_TRUNC, next)
	g.rec.waitFor(t, events.Info, map[string]string{events.KeyHash: sum(next)})
	_, body := httpGet(t, admin+"/readyz")
	if strings.Contains(body, "refused") {
		t.Fatalf("/readyz still shows a refusal:\n%s", body)
	}
	_, metrics := httpGet(t, admin+"/metrics")
	if !strings.Contains(metrics, `disk_matches="1"`) || !strings.Contains(metrics, "storegate_policy_last_reload_success_timestamp_seconds") {
		t.Fatalf("/metrics after recovery:\n%s", grepLines(metrics, "policy"))
	}
}

// waitEvent waits for the event with id that follows the first n of them.
func (g *reloadGW) waitEvent(id events.ID, n int) recorded {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.rec.mu.Lock()
		k := 0
		for _, e := range g.rec.evs {
			if e.id == id {
				if k == n {
					g.rec.mu.Unlock()
					return e
				}
				k++
			}
		}
		g.rec.mu.Unlock()
		if time.Now().After(deadline) {
			g.t.Fatalf("no event %d after the first %d; events %v", id, n, g.rec.evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replaceFile replaces path atomically (temp file and rename), so the
// watcher never sees a half-written state.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// pattern is byte j of chunk k of tunnel i. Each stream starts with plain
// text, so the handshake check sees raw TCP and not a malformed TLS record.
func pattern(i, k, j int) byte {
	const head = "payload:"
	if k == 0 && j < len(head) {
		return head[j]
	}
	return byte(i*7 + k*13 + j)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReloadUnderLoad: hundreds of tunnels move data while the policy is
// rewritten dozens of times. Every byte arrives intact, no tunnel is reset
// (every version allows their target, so neither keep nor close may touch
// them), and no CONNECT is ever decided by a mix of two versions: b.test on
// the second echo port is allowed by neither.
func TestReloadUnderLoad(t *testing.T) {
	for _, mode := range []string{"keep", "close"} {
		t.Run(mode, func(t *testing.T) { reloadUnderLoad(t, mode) })
	}
}

func reloadUnderLoad(t *testing.T, mode string) {
	const (
		tunnels  = 200
		rewrites = 40
		chunk    = 4 << 10
		chunks   = 16
	)
	// Even versions allow b.test on the first echo port only; odd versions
	// allow c.test and the second port. Hosts of one with ports of the
	// other would allow b.test on the second port.
	g := newReloadGW(t, "allowed_hosts: [a.test]\n", nil, func(w *policy.Watcher) { w.Debounce = 20 * time.Millisecond })
	version := func(i int) []byte {
		if i%2 == 0 {
			return g.doc(fmt.Sprintf("# rewrite %d\nreload: {established: %s}\nallowed_hosts: [a.test, b.test]\nallowed_ports: [%d]\n", i, mode, g.echo))
		}
		return g.doc(fmt.Sprintf("# rewrite %d\nreload: {established: %s}\nallowed_hosts: [a.test, c.test]\nallowed_ports: [%d, %d]\n", i, mode, g.echo, g.echo2))
	}
	replaceFile(t, g.path, version(0))
	g.rec.waitFor(t, events.Info, map[string]string{events.KeyHash: sum(version(0))})
	proxy := g.srv.Addr("proxy").String()

	type tun struct {
		c  net.Conn
		br *bufio.Reader
	}
	ts := make([]tun, tunnels)
	for i := range ts {
		c, br, line := rawConnect(t, proxy, fmt.Sprintf("CONNECT a.test:%d HTTP/1.1\r\n\r\n", g.echo))
		if !strings.Contains(line, " 200 ") {
			t.Fatalf("tunnel %d: %q", i, line)
		}
		readHeadEnd(t, br)
		c.SetDeadline(time.Now().Add(60 * time.Second))
		ts[i] = tun{c, br}
	}

	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr sync.Once
	fail := func(format string, args ...any) {
		failures.Add(1)
		firstErr.Do(func() { t.Errorf(format, args...) })
	}
	for i, tn := range ts {
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			buf := make([]byte, chunk)
			for k := range chunks {
				for j := range buf {
					buf[j] = pattern(i, k, j)
				}
				if _, err := tn.c.Write(buf); err != nil {
					fail("tunnel %d write %d: %v", i, k, err)
					return
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			buf := make([]byte, chunk)
			for k := range chunks {
				if _, err := io.ReadFull(tn.br, buf); err != nil {
					fail("tunnel %d read %d: %v", i, k, err)
					return
				}
				for j := range buf {
					if buf[j] != pattern(i, k, j) {
						fail("tunnel %d: byte %d of chunk %d corrupted", i, j, k)
						return
					}
				}
			}
		}()
	}

	stop := make(chan struct{})
	var probes, mixed atomic.Int64
	var pwg sync.WaitGroup
	for range 4 {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for n := 0; n < 5000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
				if err != nil {
					fail("probe dial: %v", err)
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "CONNECT b.test:%d HTTP/1.1\r\n\r\n", g.echo2)
				line, err := bufio.NewReader(c).ReadString('\n')
				c.Close()
				if err != nil {
					fail("probe read: %v", err)
					return
				}
				probes.Add(1)
				if !strings.Contains(line, " 403 ") {
					mixed.Add(1)
				}
			}
		}()
	}

	for i := 1; i <= rewrites; i++ {
		v := version(i)
		replaceFile(t, g.path, v)
		g.rec.waitFor(t, events.Info, map[string]string{events.KeyHash: sum(v)})
	}
	close(stop)
	pwg.Wait()
	wg.Wait()
	if m := mixed.Load(); m != 0 {
		t.Fatalf("%d of %d CONNECTs were allowed by a mix of two policy versions", m, probes.Load())
	}
	if failures.Load() != 0 {
		for _, e := range g.rec.evs {
			if e.id != events.ConnectReceived {
				t.Log(e)
			}
		}
		t.Fatalf("%d tunnel failures", failures.Load())
	}
	for i, tn := range ts {
		echoRoundTrip(t, tn.c, tn.br, []byte(fmt.Sprintf("tunnel %d after %d rewrites", i, rewrites)))
	}
	if n := g.count(events.BadConfig); n != 0 {
		t.Fatalf("%d refusals during rewrites", n)
	}
	t.Logf("%d tunnels x %d KiB intact across %d rewrites; %d probes all refused", tunnels, chunk*chunks>>10, rewrites, probes.Load())
}
