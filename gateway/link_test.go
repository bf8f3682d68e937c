package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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
		// Every dial times out: the CONNECT that Wait lets through as a
		// trial fails, and it is then held like the others.
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
				func(cfg *Config) {
					cfg.Link = tr
					if !c.recovers {
						cfg.Dialer = timeoutDialer{}
					}
				})
			if c.recovers {
				// Take the outage's trial, so this CONNECT is held until
				// the link returns rather than let through at once.
				_ = tr.Wait(context.Background())
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

// timeoutDialer fails every dial as a network that does not answer would.
type timeoutDialer struct{}

func (timeoutDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return nil, &net.OpError{Op: "dial", Net: network, Err: os.ErrDeadlineExceeded}
}

// TestLinkComesBackWithoutProbe: with no relay and no link.probe_host (the
// default policy) nothing probes the uplink. After failures marked it down,
// the next CONNECT goes through as a trial, and its success brings the link
// back; before, every CONNECT was held and answered 503 until a restart.
func TestLinkComesBackWithoutProbe(t *testing.T) {
	echo := echoServer(t)
	tr := link.New(link.Options{Hold: 300 * time.Millisecond})
	for i := 0; i < 5; i++ {
		tr.Observe(&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded})
	}
	if !tr.Down() {
		t.Fatal("tracker not down after failures")
	}
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d]\ntls: {inspect: false}\nlink: {hold: 300ms}\n", echo),
		func(cfg *Config) { cfg.Link = tr })
	c, br := openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", echo))
	io.WriteString(c, "x")
	if b, err := br.ReadByte(); err != nil || b != 'x' {
		t.Fatalf("tunnel: %q %v", b, err)
	}
	if tr.Down() {
		t.Fatal("link still down after a CONNECT went through")
	}
}

// TestRefusedTargetsDoNotTakeTheLinkDown: a destination that refuses
// connections answered; however often it is tried, the link stays up and
// other CONNECTs are not held.
func TestRefusedTargetsDoNotTakeTheLinkDown(t *testing.T) {
	echo := echoServer(t)
	closed := freePort(t)
	tr := link.New(link.Options{Hold: 5 * time.Second})
	gw := startGW(t, fmt.Sprintf("allowed_hosts: [127.0.0.1]\nallowed_ports: [%d, %d]\ntls: {inspect: false}\n", echo, closed),
		func(cfg *Config) { cfg.Link = tr })
	for i := 0; i < 5; i++ {
		_, _, status := rawConnect(t, gw.addr, fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", closed))
		if status != "HTTP/1.1 502 Bad Gateway" {
			t.Fatalf("CONNECT to a closed port: %q", status)
		}
	}
	if tr.Down() {
		t.Fatal("refused connections took the link down")
	}
	openTunnel(t, gw.addr, fmt.Sprintf("127.0.0.1:%d", echo))
}
