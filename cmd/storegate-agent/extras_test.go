package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
	"github.com/storegate/storegate/gateway/spool"
)

// loopbackResolver sends every name the gateway looks up to 127.0.0.1, so
// nothing leaves the machine.
type loopbackResolver struct{}

func (loopbackResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

// tunnels records the targets of the tunnels the gateway closed.
type tunnels struct {
	mu      sync.Mutex
	targets []string
}

func (r *tunnels) Emit(id events.ID, msg string, fields ...events.Field) {
	if id != events.ConnectReceived || msg != "tunnel closed" {
		return
	}
	for _, f := range fields {
		if f.Key == events.KeyTarget {
			r.mu.Lock()
			r.targets = append(r.targets, f.Str)
			r.mu.Unlock()
		}
	}
}

// waitFor polls until a tunnel to target has closed, up to 5 seconds.
func (r *tunnels) waitFor(t *testing.T, target string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		seen := slices.Contains(r.targets, target)
		all := fmt.Sprint(r.targets)
		r.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tunnel to %s went through the gateway; saw %s", target, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// realGateway runs the storegate proxy in-process on loopback with a spool,
// allowing example.com on port and nothing else.
func realGateway(t *testing.T, port int, ev events.Emitter) string {
	t.Helper()
	yaml := fmt.Sprintf("version: 1\nlisten_address: 127.0.0.1\nlisten_port: 1\nadmin_address: 127.0.0.1:1\n"+
		"allowed_hosts: [example.com]\nallowed_ports: [%d]\nallowed_networks: [127.0.0.0/8]\n", port)
	f, err := policy.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	f.ListenPort, f.AdminAddress = 0, "127.0.0.1:0"
	snap, err := policy.Compile(f, []byte(yaml), "test.yaml", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.New(spool.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := gateway.New(gateway.Config{Version: "test", Resolver: loopbackResolver{}, Spool: sp, Events: ev})
	if err := srv.Apply(snap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		sp.Close()
	})
	return srv.Addr("proxy").String()
}

// target is an HTTPS server on loopback whose certificate names example.com;
// caFile holds that certificate for --ca-file and curl --cacert.
func target(t *testing.T) (port int, caFile string) {
	t.Helper()
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from the store's cloud")
	}))
	t.Cleanup(ts.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ts.Listener.Addr().(*net.TCPAddr).Port, caFile
}

func TestCheckThroughRealGateway(t *testing.T) {
	port, ca := target(t)
	gw := "http://" + realGateway(t, port, nil)
	cases := []struct {
		name   string
		args   []string
		code   int
		out    []string
		stderr string
	}{
		{"allowed target", []string{"--to", fmt.Sprintf("https://example.com:%d", port), "--ca-file", ca}, 0,
			[]string{"ok    tcp", "ok    connect", "200", "ok    tls", "ok    verify"}, ""},
		{"not allowed", []string{"--to", fmt.Sprintf("https://other.example:%d", port), "--ca-file", ca}, 1,
			[]string{"FAIL  connect", "403", "skip  tls", "skip  verify"}, "failed at connect"},
		{"untrusted", []string{"--to", fmt.Sprintf("https://example.com:%d", port)}, 1,
			[]string{"ok    tls", "FAIL  verify"}, "failed at verify"},
		{"spool status", nil, 0, []string{"ok    status", "spool available, 0 waiting"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errw bytes.Buffer
			code := run(context.Background(), append([]string{"check", "--gateway", gw}, tc.args...), nil, &out, &errw)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tc.code, out.String(), errw.String())
			}
			for _, w := range tc.out {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if !strings.Contains(errw.String(), tc.stderr) {
				t.Errorf("stderr %q lacks %q", errw.String(), tc.stderr)
			}
		})
	}
	var out, errw bytes.Buffer
	if code := run(context.Background(), []string{"check"}, nil, &out, &errw); code != 2 {
		t.Errorf("check without --gateway: exit %d", code)
	}
}

// TestProxySetThenCurl writes the setting with the command, then has a login
// shell read it and curl reach the target through the real gateway.
func TestProxySetThenCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	port, ca := target(t)
	rec := &tunnels{}
	gw := "http://" + realGateway(t, port, rec)
	root := t.TempDir()
	unit := filepath.Join(root, "usr/lib/systemd/system/pos-agent.service")
	if err := os.MkdirAll(filepath.Dir(unit), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errw bytes.Buffer
	args := []string{"proxy", "set", "--gateway", gw, "--service", "pos-agent", "--root", root}
	if code := run(context.Background(), args, nil, &out, &errw); code != 0 {
		t.Fatalf("proxy set: %d %s", code, errw.String())
	}
	want := "created /etc/systemd/system/pos-agent.service.d/storegate-proxy.conf\n" +
		"skipped /etc/opt/microsoft/omsagent/proxy.conf (the Log Analytics agent is not installed)\n" +
		"created /etc/profile.d/storegate-proxy.sh\n" +
		"next: systemctl daemon-reload && systemctl restart pos-agent.service\n"
	if out.String() != want {
		t.Errorf("proxy set printed:\n%s\nwant\n%s", out.String(), want)
	}

	// --resolve keeps curl on loopback even if it ignored the proxy; the
	// gateway's own record of the tunnel shows that it did not.
	script := `. "$1" && exec "$2" -sS --max-time 10 --cacert "$3" --resolve "$4" "$5"`
	cmd := exec.Command("sh", "-c", script, "sh", filepath.Join(root, "etc/profile.d/storegate-proxy.sh"), curl, ca,
		fmt.Sprintf("example.com:%d:127.0.0.1", port), fmt.Sprintf("https://example.com:%d/", port))
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no proxy setting but the snippet's
	got, err := cmd.CombinedOutput()
	if err != nil || string(got) != "hello from the store's cloud" {
		t.Fatalf("curl through the gateway: %v\n%s", err, got)
	}
	rec.waitFor(t, fmt.Sprintf("example.com:%d", port))

	out.Reset()
	if code := run(context.Background(), []string{"proxy", "show", "--root", root}, nil, &out, &errw); code != 0 ||
		!strings.Contains(out.String(), "export HTTPS_PROXY='"+gw+"'") {
		t.Errorf("proxy show: %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"proxy", "clear", "--root", root}, nil, &out, &errw); code != 0 ||
		!strings.Contains(out.String(), "removed /etc/profile.d/storegate-proxy.sh") {
		t.Errorf("proxy clear: %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"proxy", "show", "--root", root}, nil, &out, &errw); code != 0 ||
		out.String() != "no proxy setting written\n" {
		t.Errorf("proxy show after clear: %d\n%s", code, out.String())
	}
}

func TestProxySetCredentialsFromFile(t *testing.T) {
	root := t.TempDir()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cr:t@x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errw bytes.Buffer
	args := []string{"proxy", "set", "--gateway", "http://gw:8080", "--username", "agent", "--password-file", pw, "--root", root, "--oms=false"}
	if code := run(context.Background(), args, nil, &out, &errw); code != 0 {
		t.Fatalf("proxy set: %d %s", code, errw.String())
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/profile.d/storegate-proxy.sh"))
	if err != nil || !strings.Contains(string(b), "export HTTPS_PROXY='http://agent:s3cr%3At%40x@gw:8080'") {
		t.Fatalf("snippet: %v\n%s", err, b)
	}
	out.Reset()
	run(context.Background(), []string{"proxy", "show", "--root", root}, nil, &out, &errw)
	if strings.Contains(out.String()+errw.String(), "s3cr") {
		t.Errorf("show printed the password:\n%s", out.String())
	}
	for _, bad := range [][]string{
		{"proxy", "set", "--gateway", "http://gw:8080", "--username", "agent"},
		{"proxy", "set", "--gateway", "http://u:p@gw:8080", "--username", "agent", "--password-file", pw},
		{"proxy", "set"},
		{"proxy", "nonsense"},
	} {
		if code := run(context.Background(), append(bad, "--root", root), nil, &out, &errw); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}
