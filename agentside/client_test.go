package agentside

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/spool"
)

// gateway is a real spool behind an HTTP server, recording the
// Idempotency-Keys of the submissions it accepted, in order.
type gateway struct {
	sp   *spool.Spool
	srv  *httptest.Server
	mu   sync.Mutex
	keys []string
	// refuse, if set, answers instead of the spool.
	refuse func(r *http.Request) int
}

func newGateway(t *testing.T, addr string) *gateway {
	t.Helper()
	sp, err := spool.New(spool.Options{Dir: t.TempDir(), Allow: func(host string, port int) error {
		if host == "blocked.example" {
			return errors.New("not allowed")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{sp: sp}
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.refuse != nil {
			if code := g.refuse(r); code != 0 {
				w.WriteHeader(code)
				return
			}
		}
		rec := httptest.NewRecorder()
		sp.ServeHTTP(rec, r)
		if rec.Code == http.StatusAccepted {
			g.mu.Lock()
			g.keys = append(g.keys, r.Header.Get("Idempotency-Key"))
			g.mu.Unlock()
		}
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		g.srv.Listener = ln
	}
	g.srv.Start()
	t.Cleanup(func() { g.srv.Close(); sp.Close() })
	return g
}

func (g *gateway) accepted() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.keys...)
}

func key(k string) http.Header { return http.Header{"Idempotency-Key": {k}} }

func TestSendDirect(t *testing.T) {
	g := newGateway(t, "")
	c, err := New(Options{Gateway: g.srv.URL, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := c.Send(context.Background(), "https://127.0.0.1:9/x", http.Header{"Content-Type": {"text/plain"}}, []byte("hello"))
	if err != nil || strings.HasPrefix(id, LocalIDPrefix) {
		t.Fatalf("Send = %q, %v", id, err)
	}
	if st, ok := g.sp.MessageState(id); !ok || st.State != "queued" {
		t.Fatalf("gateway state %+v", st)
	}
	if k := g.accepted(); len(k) != 1 || k[0] == "" {
		t.Fatalf("no Idempotency-Key made: %v", k)
	}
	// A permanent refusal is returned, not kept.
	_, err = c.Send(context.Background(), "https://blocked.example/x", nil, []byte("x"))
	var ge *GatewayError
	if !errors.As(err, &ge) || ge.Status != http.StatusForbidden || c.Pending() != 0 {
		t.Fatalf("blocked destination: %v, pending %d", err, c.Pending())
	}
}

func TestLocalSpoolWhileGatewayDown(t *testing.T) {
	// Reserve a port, then leave it closed: the gateway is down.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	c, err := New(Options{Gateway: "http://" + addr, SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k1", "k2", "k3"} {
		id, err := c.Send(context.Background(), "https://127.0.0.1:9/x", key(k), []byte(k))
		if err != nil || id != LocalIDPrefix+k {
			t.Fatalf("Send while down = %q, %v", id, err)
		}
	}
	if c.Pending() != 3 {
		t.Fatalf("pending %d", c.Pending())
	}
	// The terminal restarts: the local spool survives.
	c.Close()
	c, err = New(Options{Gateway: "http://" + addr, SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Pending() != 3 {
		t.Fatalf("pending after restart %d", c.Pending())
	}
	g := newGateway(t, addr)
	// A new message goes out after the kept ones: order is preserved.
	id, err := c.Send(context.Background(), "https://127.0.0.1:9/x", key("k4"), []byte("k4"))
	if err != nil || strings.HasPrefix(id, LocalIDPrefix) {
		t.Fatalf("Send after recovery = %q, %v", id, err)
	}
	if got := strings.Join(g.accepted(), ","); got != "k1,k2,k3,k4" {
		t.Fatalf("gateway got %s", got)
	}
	if c.Pending() != 0 {
		t.Fatalf("pending %d", c.Pending())
	}
}

func TestFlushStopsOnBusyAndRejectsForGood(t *testing.T) {
	g := newGateway(t, "")
	busy := true
	var mu sync.Mutex
	g.refuse = func(r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		if busy {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	dir := t.TempDir()
	c, _ := New(Options{Gateway: g.srv.URL, SpoolDir: dir})
	defer c.Close()
	c.Send(context.Background(), "https://127.0.0.1:9/a", key("a"), []byte("a"))
	c.Send(context.Background(), "https://blocked.example/b", key("b"), []byte("b"))
	c.Send(context.Background(), "https://127.0.0.1:9/c", key("c"), []byte("c"))
	if c.Pending() != 3 {
		t.Fatalf("503 must keep messages locally: pending %d", c.Pending())
	}
	if h, _, err := c.Flush(context.Background()); h != 0 || err == nil {
		t.Fatalf("flush while busy: %d %v", h, err)
	}
	mu.Lock()
	busy = false
	mu.Unlock()
	h, rej, err := c.Flush(context.Background())
	if h != 2 || rej != 1 || err != nil || c.Pending() != 0 {
		t.Fatalf("flush: handed %d rejected %d err %v pending %d", h, rej, err, c.Pending())
	}
	var info map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "rejected", "b.json"))
	if err != nil || json.Unmarshal(b, &info) != nil || info["status"].(float64) != 403 {
		t.Fatalf("rejected record: %s %v", b, err)
	}
	if got := strings.Join(g.accepted(), ","); got != "a,c" {
		t.Fatalf("gateway got %s", got)
	}
}

func TestNoLocalSpool(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c, _ := New(Options{Gateway: "http://" + addr})
	defer c.Close()
	if _, err := c.Send(context.Background(), "https://127.0.0.1:9/x", nil, []byte("x")); !errors.Is(err, ErrNoLocalSpool) {
		t.Fatalf("err = %v", err)
	}
}

// TestNoServerDependency keeps the proxy server out of the terminal binary:
// agentside and storegate-agent may use only the spool's queue package and
// the standard-library-only internal/durable.
func TestNoServerDependency(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".", "../cmd/storegate-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/storegate/storegate/agentside":           true,
		"github.com/storegate/storegate/gateway/spool/queue": true,
		"github.com/storegate/storegate/internal/durable":    true,
		"github.com/storegate/storegate/cmd/storegate-agent": true,
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/storegate/storegate") && !allowed[p] {
			t.Errorf("terminal-side code depends on %s", p)
		}
		if strings.HasPrefix(p, "gopkg.in/yaml") || strings.HasPrefix(p, "github.com/fsnotify") {
			t.Errorf("terminal-side code depends on %s", p)
		}
	}
}

func TestLocalSpoolLockedByAnotherClient(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the spool lock uses flock (linux)")
	}
	dir := t.TempDir()
	a, err := New(Options{Gateway: "http://127.0.0.1:9", SpoolDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Gateway: "http://127.0.0.1:9", SpoolDir: dir, LockWait: 100 * time.Millisecond}); err == nil {
		t.Fatal("two clients opened one local spool")
	}
	a.Close()
	b, err := New(Options{Gateway: "http://127.0.0.1:9", SpoolDir: dir, LockWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	b.Close()
}
