package main

import (
	"bytes"
	"context"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/storegate/storegate/gateway/spool"
)

func TestSendAndFlush(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	body := filepath.Join(dir, "body.json")
	os.WriteFile(body, []byte(`{"sale":1}`), 0o600)
	local := filepath.Join(dir, "local")
	var out, errw bytes.Buffer
	args := []string{"send", "--gateway", "http://" + addr, "--to", "https://127.0.0.1:9/ingest",
		"--file", body, "--header", "Content-Type: application/json", "--spool", local}
	if code := run(context.Background(), args, nil, &out, &errw); code != 0 {
		t.Fatalf("send while down: %d %s", code, errw.String())
	}
	if !strings.HasPrefix(out.String(), "local-") || !strings.Contains(errw.String(), "kept") {
		t.Fatalf("send while down: %q %q", out.String(), errw.String())
	}

	sp, err := spool.New(spool.Options{Dir: filepath.Join(dir, "gw")})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	srv := httptest.NewUnstartedServer(sp)
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l2
	srv.Start()
	defer srv.Close()
	out.Reset()
	if code := run(context.Background(), []string{"flush", "--gateway", "http://" + addr, "--spool", local}, nil, &out, &errw); code != 0 {
		t.Fatalf("flush: %d %s", code, errw.String())
	}
	if out.String() != "handed 1, rejected 0, pending 0\n" || sp.Status().Depth != 1 {
		t.Fatalf("flush: %q depth %d", out.String(), sp.Status().Depth)
	}
	out.Reset()
	args = []string{"send", "--gateway", "http://" + addr, "--to", "https://127.0.0.1:9/ingest", "--file", "-", "--spool", ""}
	if code := run(context.Background(), args, strings.NewReader("stdin body"), &out, &errw); code != 0 || strings.HasPrefix(out.String(), "local-") {
		t.Fatalf("send: %d %q %s", code, out.String(), errw.String())
	}
	if sp.Status().Depth != 2 {
		t.Fatalf("depth %d", sp.Status().Depth)
	}
	if code := run(context.Background(), []string{"send", "--gateway", "http://" + addr}, nil, &out, &errw); code != 2 {
		t.Fatalf("missing flags: %d", code)
	}
}
