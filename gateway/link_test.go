package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/link"
)

func TestConnectHeldDuringOutage(t *testing.T) {
	echo := echoServer(t)
	for _, c := range []struct {
		name     string
		hold     time.Duration
		recovers bool
		status   string
	}{
		{"link returns within hold", 5 * time.Second, true, "HTTP/1.1 200 Connection established"},
		{"link stays down", 300 * time.Millisecond, false, "HTTP/1.1 503 Service Unavailable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := link.New(link.Options{Hold: c.hold})
			for i := 0; i < 5; i++ {
				tr.Observe(errors.New("test: uplink unreachable"))
			}
			if !tr.Down() {
				t.Fatal("tracker not down after failures")
			}
			gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\nlink: {hold: %s}\n", echo, c.hold),
				func(cfg *Config) { cfg.Link = tr })
			if c.recovers {
				go func() {
					time.Sleep(200 * time.Millisecond)
					tr.Observe(nil) // the link is back
				}()
			}
			conn, br, status := rawConnect(t, gw.addr, fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", echo))
			defer conn.Close()
			if status != c.status {
				t.Fatalf("status %q, want %q", status, c.status)
			}
			if !c.recovers {
				resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(status+"\r\n"), br)), nil)
				if err != nil || resp.Header.Get("Retry-After") == "" {
					t.Fatalf("503 without Retry-After: %v %v", err, resp)
				}
				gw.rec.waitFor(t, events.NetworkError, nil)
			}
		})
	}
}
