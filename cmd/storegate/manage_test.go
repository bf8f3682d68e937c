package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// mgmtEvents records events for assertions.
type mgmtEvents struct {
	mu  sync.Mutex
	evs []mgmtEvent
}

type mgmtEvent struct {
	id     events.ID
	msg    string
	fields map[string]string
}

func (r *mgmtEvents) Emit(id events.ID, msg string, fields ...events.Field) {
	m := map[string]string{}
	for _, f := range fields {
		if f.Str != "" {
			m[f.Key] = f.Str
		} else {
			m[f.Key] = fmt.Sprint(f.Int)
		}
	}
	r.mu.Lock()
	r.evs = append(r.evs, mgmtEvent{id, msg, m})
	r.mu.Unlock()
}

func (r *mgmtEvents) count(id events.ID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.evs {
		if e.id == id {
			n++
		}
	}
	return n
}

// waitNth waits for the n-th (0-based) event with id.
func (r *mgmtEvents) waitNth(t *testing.T, id events.ID, n int) mgmtEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		k := 0
		for _, e := range r.evs {
			if e.id == id {
				if k == n {
					r.mu.Unlock()
					return e
				}
				k++
			}
		}
		all := fmt.Sprint(r.evs)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no event %d number %d; have %s", id, n+1, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *mgmtEvents) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, _ := json.Marshal(fmt.Sprint(r.evs))
	return string(b)
}

// mgmtPolicy is a store's policy as an integrator writes it: comments, blank
// lines, a block list, a flow mapping.
const mgmtPolicy = `# Store 0042, Contoso. Managed by the store team.
version: 1

# Terminals use http://THIS-BOX:PORT.
listen_address: 127.0.0.1
listen_port: %d   # changed by config set in the test
admin_address: 127.0.0.1:%d

# Hosts besides the presets.
allowed_hosts:
  - a.test   # the vendor

allowed_ports: [%d]
allowed_networks: [127.0.0.0/8]   # the test's upstream is on loopback
presets: [log-analytics]

tls: {raw_tcp_hosts: [a.test, b.test]}   # the echo upstream is not TLS

# Relay: none yet.
relay_proxy:
  address: ""
  username: ""

limits:
  dial_timeout: 10s   # WAN is slow
`

type mgmtEnv struct {
	t      *testing.T
	path   string
	srv    *gateway.Server
	rec    *mgmtEvents
	echo   int
	reload int // reload events seen so far
}

func echoUpstream(t *testing.T) int {
	t.Helper()
	return serve(t, loopback(t), func(c net.Conn) { _, _ = io.Copy(c, c) })
}

type mapResolver map[string]string

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := m[host]; ok {
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// startManaged runs a gateway on the policy file with the watcher that run
// starts, as `storegate run --policy` does.
func startManaged(t *testing.T) *mgmtEnv {
	t.Helper()
	ports := freePorts(t, 2)
	e := &mgmtEnv{t: t, path: filepath.Join(t.TempDir(), "policy.yaml"), rec: &mgmtEvents{}, echo: echoUpstream(t)}
	if err := os.WriteFile(e.path, fmt.Appendf(nil, mgmtPolicy, ports[0], ports[1], e.echo), 0o640); err != nil {
		t.Fatal(err)
	}
	snap, err := policy.Load(e.path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.srv = gateway.New(gateway.Config{Version: "test", Events: e.rec, Resolver: mapResolver{"a.test": "127.0.0.1", "b.test": "127.0.0.1"}})
	if err := e.srv.Apply(snap); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := watchPolicy(ctx, e.path, e.srv, e.rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-w.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		e.srv.Shutdown(sctx)
	})
	return e
}

// run runs a storegate command in-process.
func (e *mgmtEnv) run(stdin string, args ...string) (code int, out, errs string) {
	var o, er bytes.Buffer
	code = dispatch(context.Background(), append(args, "--policy", e.path), stdio{In: strings.NewReader(stdin), Out: &o, Err: &er})
	return code, o.String(), er.String()
}

// mustRun runs a command that must succeed and change the policy, and waits
// for the gateway to reload it; it returns the reload's change summary.
func (e *mgmtEnv) mustRun(stdin string, args ...string) (out, summary string) {
	e.t.Helper()
	code, out, errs := e.run(stdin, args...)
	if code != 0 {
		e.t.Fatalf("storegate %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	ev := e.rec.waitNth(e.t, events.Info, e.reload)
	e.reload++
	return out, ev.fields[events.KeyChanges]
}

func (e *mgmtEnv) connect(host string) string {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.srv.Addr("proxy").String(), 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", host, e.echo, host, e.echo)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		e.t.Fatalf("CONNECT %s: %v", host, err)
	}
	return strings.TrimSpace(line)
}

// TestManagementEndToEnd drives the management commands against a running
// gateway: each change is picked up without a restart, bad values change
// nothing, the password is never shown, and the file keeps its comments,
// blank lines and permissions.
func TestManagementEndToEnd(t *testing.T) {
	e := startManaged(t)
	original, _ := os.ReadFile(e.path)

	if got := e.connect("b.test"); !strings.Contains(got, " 403 ") {
		t.Fatalf("before: CONNECT b.test: %s", got)
	}
	out, summary := e.mustRun("", "allowed-host", "add", "B.Test")
	if !strings.Contains(out, "allowed host added: b.test") || !strings.Contains(summary, "allowed_hosts +b.test") {
		t.Fatalf("allowed-host add: %q, reload summary %q", out, summary)
	}
	if got := e.connect("b.test"); !strings.Contains(got, " 200 ") {
		t.Fatalf("after add: CONNECT b.test: %s", got)
	}

	// allowed-host list shows the origin of each host.
	code, out, _ := e.run("", "allowed-host", "list")
	if code != 0 || !regexpLine(out, `^b\.test\s+policy file$`) || !regexpLine(out, `^\*\.ods\.opinsights\.azure\.com\s+preset:log-analytics$`) {
		t.Fatalf("allowed-host list:\n%s", out)
	}
	// A preset's host cannot be removed as if it were local.
	before, _ := os.ReadFile(e.path)
	code, _, errs := e.run("", "allowed-host", "remove", "*.ods.opinsights.azure.com")
	if code == 0 || !strings.Contains(errs, "preset:log-analytics") {
		t.Fatalf("removing a preset host: exit %d, %q", code, errs)
	}
	assertUnchanged(t, e.path, before)

	// Invalid values: refused with the reason, the file untouched, no reload.
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "set", "limits.dial_timeout", "soon"}, `limits.dial_timeout: "soon" is not a duration`},
		{[]string{"config", "set", "listen_port", "70000"}, "listen_port: 70000 is out of range"},
		{[]string{"config", "set", "limits.dial_timout", "5s"}, `unknown key "dial_timout"`},
		{[]string{"relay", "set", "--address", "ftp://proxy:21"}, "relay_proxy.address: want http://host:port"},
		{[]string{"allowed-host", "add", "http://x.example/"}, "not a host name"},
		{[]string{"allowed-client-cert", "add", "CN=a,,="}, "is not a subject"}, // a bare CN such as pos-0001 is valid, as in the policy
	} {
		code, _, errs := e.run("", bad.args...)
		if code == 0 || !strings.Contains(errs, bad.want) || !strings.Contains(errs, "nothing changed") {
			t.Errorf("storegate %s: exit %d, stderr %q; want the reason %q", strings.Join(bad.args, " "), code, errs, bad.want)
		}
		assertUnchanged(t, e.path, before)
	}

	// config set moves the listener; the old port stops, the new one works.
	oldAddr := e.srv.Addr("proxy").String()
	newPort := freePorts(t, 1)[0]
	out, summary = e.mustRun("", "config", "set", "listen_port", fmt.Sprint(newPort))
	if !strings.Contains(out, fmt.Sprintf("listen_port: %s -> %d", strings.Split(oldAddr, ":")[1], newPort)) ||
		!strings.Contains(summary, fmt.Sprintf("-> %d", newPort)) {
		t.Fatalf("config set listen_port: %q, summary %q", out, summary)
	}
	if got := e.srv.Addr("proxy").String(); got != fmt.Sprintf("127.0.0.1:%d", newPort) {
		t.Fatalf("proxy on %s after config set", got)
	}
	if got := e.connect("a.test"); !strings.Contains(got, " 200 ") {
		t.Fatalf("CONNECT on the new port: %s", got)
	}
	_, _ = e.mustRun("", "config", "set", "limits.dial_timeout", "5s")
	code, out, _ = e.run("", "config", "get", "limits.dial_timeout")
	if code != 0 || strings.TrimSpace(out) != "5s" {
		t.Fatalf("config get limits.dial_timeout: %d %q", code, out)
	}
	// Values as they are in force and as a user writes them: an unset
	// switch is its default, a duration has no trailing zero units.
	for key, want := range map[string]string{"tls.inspect": "true", "events.tunnels": "true", "spool.max_age": "72h"} {
		if code, out, _ = e.run("", "config", "get", key); code != 0 || strings.TrimSpace(out) != want {
			t.Fatalf("config get %s: %d %q, want %q", key, code, out, want)
		}
	}

	// The relay: the password goes in on stdin and never comes out.
	const secret = "s3cret-Relay-pw"
	out, summary = e.mustRun(secret+"\n", "relay", "set", "--address", "http://127.0.0.1:3128", "--username", "store0042", "--password-stdin")
	if strings.Contains(out, secret) || strings.Contains(summary, secret) {
		t.Fatalf("password echoed: %q / %q", out, summary)
	}
	pwFile := filepath.Join(filepath.Dir(e.path), relayPasswordFile)
	if fi, err := os.Stat(pwFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", fi, err)
	}
	if got := e.srv.Policy().RelayPassword(); got != secret {
		t.Fatal("the gateway does not use the new password")
	}
	code, out, _ = e.run("", "relay", "get")
	if code != 0 || strings.Contains(out, secret) || !strings.Contains(out, "password: ****") || !strings.Contains(out, "store0042") {
		t.Fatalf("relay get: %q", out)
	}
	st := fetchStatus(t, e.srv)
	if !strings.Contains(st, "password ****") || strings.Contains(st, secret) {
		t.Fatalf("/status relay: %s", st)
	}
	// A new password under the same file name: the policy text is the same,
	// the watcher sees the file it names change.
	const secret2 = "an0ther-Relay-pw"
	out, summary = e.mustRun(secret2+"\n", "relay", "set", "--address", "http://127.0.0.1:3128", "--password-stdin")
	if !strings.Contains(summary, "relay password changed") || strings.Contains(out+summary, secret2) {
		t.Fatalf("password change: %q, summary %q", out, summary)
	}
	if e.srv.Policy().RelayPassword() != secret2 {
		t.Fatal("the gateway does not use the changed password")
	}
	out, summary = e.mustRun("", "relay", "set", "--address", "")
	if !strings.Contains(out, "connects directly") || !strings.Contains(summary, "relay_proxy.address http://127.0.0.1:3128 -> \"\"") {
		t.Fatalf("relay clear: %q, summary %q", out, summary)
	}
	if got := e.connect("a.test"); !strings.Contains(got, " 200 ") {
		t.Fatalf("CONNECT after clearing the relay: %s", got)
	}

	// Client certificates.
	_, summary = e.mustRun("", "allowed-client-cert", "add", "CN=pos-0001,O=Contoso")
	if !strings.Contains(summary, "allowed_client_certificates +CN=pos-0001,O=Contoso") {
		t.Fatalf("cert add summary %q", summary)
	}
	code, out, _ = e.run("", "allowed-client-cert", "list")
	if code != 0 || strings.TrimSpace(out) != "CN=pos-0001,O=Contoso" {
		t.Fatalf("allowed-client-cert list: %q", out)
	}
	_, _ = e.mustRun("", "allowed-client-cert", "remove", "cn=pos-0001, o=contoso")
	code, out, _ = e.run("", "allowed-client-cert", "list")
	if code != 0 || !strings.Contains(out, "(none") {
		t.Fatalf("allowed-client-cert list after remove: %q", out)
	}

	_, summary = e.mustRun("", "allowed-host", "remove", "b.test")
	if !strings.Contains(summary, "allowed_hosts -b.test") {
		t.Fatalf("remove summary %q", summary)
	}
	if got := e.connect("b.test"); !strings.Contains(got, " 403 ") {
		t.Fatalf("after remove: CONNECT b.test: %s", got)
	}

	// Nothing refused on the way, no secret in any event.
	if n := e.rec.count(events.BadConfig); n != 0 {
		t.Fatalf("%d refused reloads: %s", n, e.rec)
	}
	if s := e.rec.String(); strings.Contains(s, secret) || strings.Contains(s, secret2) {
		t.Fatal("a password reached an event")
	}
	// The file kept its comments, blank lines and mode.
	final, _ := os.ReadFile(e.path)
	if got, want := commentsAndBlanks(final), commentsAndBlanks(original); got != want {
		t.Fatalf("comments or blank lines changed:\n--- before\n%s\n--- after\n%s\n--- file\n%s", want, got, final)
	}
	if fi, _ := os.Stat(e.path); fi.Mode().Perm() != 0o640 {
		t.Fatalf("policy mode %v, want 0640", fi.Mode().Perm())
	}
	for _, want := range []string{"listen_port: " + fmt.Sprint(newPort) + "   # changed by config set in the test", "  dial_timeout: 5s   # WAN is slow", "  - a.test   # the vendor"} {
		if !strings.Contains(string(final), want+"\n") {
			t.Errorf("final file lacks %q:\n%s", want, final)
		}
	}
}

func fetchStatus(t *testing.T, srv *gateway.Server) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + srv.Addr("admin").String() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func assertUnchanged(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("policy file changed by a refused command:\n%s", got)
	}
}

// commentsAndBlanks is every comment (whole-line or trailing) and blank line, in order.
func commentsAndBlanks(b []byte) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == "" {
			out = append(out, "")
		} else if i := strings.Index(l, "#"); i >= 0 {
			out = append(out, strings.TrimSpace(l[i:]))
		}
	}
	return strings.Join(out, "\n")
}

func regexpLine(s, re string) bool {
	return regexp.MustCompile("(?m)" + re).MatchString(s)
}

// TestManagementWithoutGateway: the commands work on a file with no gateway
// running; --policy may come anywhere; $STOREGATE_POLICY is the default; a
// missing file is created from the default policy; usage errors exit 2.
func TestManagementWithoutGateway(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub-policy.yaml")
	t.Setenv("STOREGATE_POLICY", path)
	var out, errs bytes.Buffer
	s := stdio{In: strings.NewReader(""), Out: &out, Err: &errs}
	if code := dispatch(context.Background(), []string{"allowed-host", "add", "example.com"}, s); code != 0 {
		t.Fatalf("add on a missing file: %d %s", code, errs.String())
	}
	if !strings.Contains(out.String(), "created from the default policy") {
		t.Fatalf("output: %q", out.String())
	}
	if _, err := policy.Load(path, time.Now()); err != nil {
		t.Fatalf("created file: %v", err)
	}
	other := filepath.Join(dir, "other.yaml")
	os.WriteFile(other, []byte("version: 1\n"), 0o600)
	out.Reset()
	if code := dispatch(context.Background(), []string{"config", "set", "--policy", other, "listen_port", "9090"}, s); code != 0 {
		t.Fatalf("flag before arguments: %d %s", code, errs.String())
	}
	if code := dispatch(context.Background(), []string{"config", "set", "listen_port", "9091", "--policy", other}, s); code != 0 {
		t.Fatalf("flag after arguments: %d %s", code, errs.String())
	}
	b, _ := os.ReadFile(other)
	if string(b) != "version: 1\nlisten_port: 9091\n" {
		t.Fatalf("other.yaml: %q", b)
	}
	for _, args := range [][]string{
		{"config"}, {"config", "set", "listen_port"}, {"relay", "set"}, {"allowed-host", "add"},
		{"allowed-client-cert", "frob"}, {"config", "set", "relay_proxy.password", "x"},
	} {
		if code := dispatch(context.Background(), args, stdio{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}); code != 2 {
			t.Errorf("storegate %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
	out.Reset()
	if code := dispatch(context.Background(), []string{"config", "get"}, s); code != 0 || !strings.Contains(out.String(), "allowed_hosts:") ||
		!strings.Contains(out.String(), "example.com") || !strings.Contains(out.String(), "dial_timeout: 10s") {
		t.Fatalf("config get: %d %q", code, out.String())
	}
}

// TestRelaySetClientCertificate: the store's side of a regional storegate
// with mutual TLS is set with relay set, checked before it is written (a
// certificate that does not load changes nothing), shown by relay get, and
// cleared with the relay.
func TestRelaySetClientCertificate(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "store-0042"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "store.pem"), filepath.Join(dir, "store.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	path := filepath.Join(dir, "policy.yaml")
	os.WriteFile(path, policy.DefaultYAML(), 0o644)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(context.Background(), append(args, "--policy", path), stdio{In: strings.NewReader(""), Out: &out, Err: &errb})
		return code, out.String(), errb.String()
	}
	if code, _, errs := run("relay", "set", "--address", "https://regional.example:8443", "--client-cert", certFile); code != 2 || !strings.Contains(errs, "go together") {
		t.Fatalf("a certificate without its key: %d %q", code, errs)
	}
	before, _ := os.ReadFile(path)
	if code, _, errs := run("relay", "set", "--address", "https://regional.example:8443", "--client-cert", filepath.Join(dir, "nope.pem"), "--client-key", keyFile); code != 1 || !strings.Contains(errs, "relay_proxy.client_cert_file") {
		t.Fatalf("a certificate that does not exist: %d %q", code, errs)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a refused relay set changed the policy")
	}
	if code, out, errs := run("relay", "set", "--address", "https://regional.example:8443", "--client-cert", certFile, "--client-key", keyFile, "--ca-file", certFile); code != 0 || !strings.Contains(out, "relay_proxy.client_key_file: (none) -> "+keyFile) {
		t.Fatalf("relay set: %d %q %q", code, out, errs)
	}
	if code, out, _ := run("relay", "get"); code != 0 || !strings.Contains(out, "client certificate: "+certFile) || !strings.Contains(out, "CA file: "+certFile) {
		t.Fatalf("relay get: %d %q", code, out)
	}
	if code, out, _ := run("relay", "set", "--address", ""); code != 0 || !strings.Contains(out, "relay_proxy.client_cert_file: "+certFile+" -> (none)") {
		t.Fatalf("clearing the relay: %d %q", code, out)
	}
}
