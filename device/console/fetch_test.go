package console

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// gatewayStatusJSON is what gateway.Status encodes to (see gateway/admin.go).
const gatewayStatusJSON = `{
  "version": "1.2.3",
  "uptime_seconds": 3725,
  "listen": "127.0.0.1:8080",
  "admin": "127.0.0.1:8081",
  "policy_file": "/etc/storegate/policy.yaml",
  "policy_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
  "policy_loaded_at": "2026-11-25T09:00:00Z",
  "relay": "http://proxy.corp.test:3128 (user pos, password ****)",
  "link": "up",
  "active_tunnels": 2,
  "spool_depth": 0,
  "counters": {
    "active_client_connections": 2,
    "connected_clients": 1,
    "errors_total": 0,
    "rejections_total": 5,
    "tunnels_total": 17,
    "bytes_up_total": 1024,
    "bytes_down_total": 4096,
    "refusals_total": {"host_not_allowed": 4, "port_not_allowed": 1},
    "policy_reload_errors_total": 0
  }
}`

func TestFetchStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/status":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(gatewayStatusJSON))
		case "/other/status":
			_, _ = w.Write([]byte(`{"hello":"world"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	st, err := FetchStatus(context.Background(), srv.Client(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.2.3" || st.Counters["refusals_total{host_not_allowed}"] != 4 || st.Counters["tunnels_total"] != 17 {
		t.Fatalf("decoded %+v", st)
	}
	var b bytes.Buffer
	WriteStatus(&b, "\n", st, time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC))
	for _, want := range []string{
		"version       1.2.3\n",
		"uptime        1h02m\n",
		"  loaded      2026-11-25 09:00:00Z (30m00s ago)\n",
		"relay         http://proxy.corp.test:3128 (user pos, password ****)\n",
		"tunnels       2 active\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}

	for _, tc := range []struct{ name, addr, want string }{
		{"not a status", srv.URL + "/other", "did not answer with a storegate status"},
		{"404", addr + "/nothing", "404"},
		{"off", "off", "admin endpoint is off"},
		{"nobody listening", closedAddr(t), "cannot reach the gateway's admin endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FetchStatus(context.Background(), srv.Client(), tc.addr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	return addr
}

func TestMaskURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                       "",
		"http://proxy:3128":                      "http://proxy:3128",
		"http://u:secret@proxy:3128":             "http://u:***@proxy:3128",
		"https://u@proxy:3128/":                  "https://u@proxy:3128/",
		"http://proxy:3128/?password=secret&a=b": "http://proxy:3128/?password=***&a=b",
		"not a url u:secret@proxy":               "***@proxy",
		"direct":                                 "direct",
	} {
		if got := MaskURL(in); got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCountersJSON(t *testing.T) {
	var c Counters
	if err := c.UnmarshalJSON([]byte(`{"a":1,"b":{"x":2,"y":{"z":3,"w":{"deep":4}}},"s":"str","n":null}`)); err != nil {
		t.Fatal(err)
	}
	want := Counters{"a": 1, "b{x}": 2, "b{y}{z}": 3}
	if len(c) != len(want) {
		t.Fatalf("got %v, want %v", c, want)
	}
	for k, v := range want {
		if c[k] != v {
			t.Fatalf("got %v, want %v", c, want)
		}
	}
	if err := c.UnmarshalJSON([]byte(`[1]`)); err == nil {
		t.Fatal("an array decoded as counters")
	}
}

func TestEventMasksProxyCredentials(t *testing.T) {
	got := FormatEvent([]byte(`{"time":"2026-11-25T08:00:00Z","level":"error","event_id":403,"msg":"relay failed","relay":"http://pos:hunter2@proxy:3128"}`))
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "relay=http://pos:***@proxy:3128") {
		t.Fatalf("FormatEvent = %q", got)
	}
}
