package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/storegate/storegate/gateway/spool/queue"
)

func TestSpoolCheck(t *testing.T) {
	dir := t.TempDir()
	l, _, err := queue.Open(dir, queue.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ps []queue.Pos
	for _, p := range []string{"one", "two", "three"} {
		pos, err := l.Append(context.Background(), []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, pos)
	}
	l.Close()
	check := func(args ...string) (int, string) {
		var out, errw bytes.Buffer
		code := cmdSpool(context.Background(), append([]string{"check"}, args...), stdio{Out: &out, Err: &errw})
		return code, out.String() + errw.String()
	}
	if code, out := check(dir); code != 0 || !strings.Contains(out, "waiting for delivery: 3") || !strings.Contains(out, "problems: none") {
		t.Fatalf("clean spool: %d\n%s", code, out)
	}
	// Damage the middle record: reported, exit 1, and nothing changed.
	seg := filepath.Join(dir, "seg-0000000000000001.log")
	b, _ := os.ReadFile(seg)
	b[ps[1].Off+14] ^= 0xff
	os.WriteFile(seg, b, 0o600)
	code, out := check(dir, "--json")
	if code != 1 {
		t.Fatalf("damaged spool: %d\n%s", code, out)
	}
	var rep struct {
		Pending  int      `json:"pending"`
		Problems []string `json:"problems"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Pending != 2 || len(rep.Problems) != 1 {
		t.Fatalf("json report: %v %+v\n%s", err, rep, out)
	}
	if after, _ := os.ReadFile(seg); !bytes.Equal(after, b) {
		t.Fatal("check modified the segment")
	}
	if code, _ := check(filepath.Join(dir, "absent")); code != 2 {
		t.Fatalf("absent dir: %d", code)
	}
	if code, _ := check(); code != 2 {
		t.Fatalf("no dir: %d", code)
	}
}
