package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSpoolThroughRunningGateway submits to the proxy listener of a running
// gateway and sees the message delivered to a real HTTPS receiver through the
// gateway's own dial path; a destination the policy refuses gets 403.
func TestSpoolThroughRunningGateway(t *testing.T) {
	var mu sync.Mutex
	var got []string
	var keys []string
	recv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+string(b))
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
	}))
	defer recv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: recv.Certificate().Raw}), 0o644)
	_, rport, _ := net.SplitHostPort(recv.Listener.Addr().String())

	ports := freePorts(t, 2)
	path := filepath.Join(dir, "policy.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(`version: 1
listen_address: 127.0.0.1
listen_port: %d
admin_address: 127.0.0.1:%d
allowed_hosts: [127.0.0.1]
allowed_ports: [%s]
tls: {ca_file: %q}
spool: {dir: %q}
`, ports[0], ports[1], rport, ca, filepath.Join(dir, "spool"))), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuf
	done := make(chan int, 1)
	go func() { done <- dispatch(ctx, []string{"run", "--policy", path}, stdio{Out: io.Discard, Err: &stderr}) }()
	defer func() { cancel(); <-done }()
	proxy := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	waitFor(t, stderr.String, `"event_id":101`)

	submit := func(dest, body string) int {
		req, _ := http.NewRequest("POST", proxy+"/spool/v1/messages", strings.NewReader(body))
		req.Header.Set("Storegate-Destination", dest)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := submit(fmt.Sprintf("https://127.0.0.1:%s/ingest?x=1", rport), `{"n":1}`); code != 202 {
		t.Fatalf("submission: %d", code)
	}
	if code := submit("https://example.com/ingest", `{"n":2}`); code != 403 {
		t.Fatalf("refused destination: %d", code)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if got[0] != `POST /ingest {"n":1}` || keys[0] == "" {
		t.Fatalf("receiver got %q with key %q", got[0], keys[0])
	}
}
