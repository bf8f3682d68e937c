package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// maxHead bounds the proxy's CONNECT response head the client reads.
const maxHead = 2048

// hop is how a client reaches the proxy: its address ("" for a direct
// connection) and, for a TLS listener (storegate's tls_listener, squid's
// https_port), the client's TLS configuration for that leg.
type hop struct {
	addr string
	tls  *tls.Config
}

// dialTunnel connects to target through the proxy at via (directly when
// via.addr is empty) and returns the open tunnel and the time from the start
// of the dial to the end of the proxy's 200 response (to the accepted TCP
// connection when direct). Over a TLS hop that time includes the handshake
// with the proxy, and the tunnel is the TLS connection. The deadline bounds
// the dial, the handshake and the head.
func dialTunnel(ctx context.Context, via hop, target string, deadline time.Time) (net.Conn, time.Duration, error) {
	d := net.Dialer{Deadline: deadline}
	start := time.Now()
	if via.addr == "" {
		c, err := d.DialContext(ctx, "tcp", target)
		return c, time.Since(start), err
	}
	c, err := d.DialContext(ctx, "tcp", via.addr)
	if err != nil {
		return nil, 0, err
	}
	if via.tls != nil {
		tc := tls.Client(c, via.tls)
		hctx, cancel := context.WithDeadline(ctx, deadline)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, 0, fmt.Errorf("TLS handshake with the proxy: %w", err)
		}
		c = tc
	}
	if err := connectHandshake(c, target, deadline); err != nil {
		c.Close()
		return nil, 0, err
	}
	elapsed := time.Since(start)
	if err := c.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, 0, err
	}
	return c, elapsed, nil
}

// connectHandshake sends CONNECT target and reads the response head. The
// upstreams never speak first, so any byte after the head is an error.
func connectHandshake(c net.Conn, target string, deadline time.Time) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return err
	}
	var buf [maxHead]byte
	n := 0
	for {
		m, err := c.Read(buf[n:])
		n += m
		if end := bytes.Index(buf[:n], []byte("\r\n\r\n")); end >= 0 {
			if err := checkStatus(buf[:end]); err != nil {
				return err
			}
			if end+4 != n {
				return errors.New("proxy sent bytes after its CONNECT response")
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading CONNECT response: %w", err)
		}
		if n == len(buf) {
			return errors.New("CONNECT response head too long")
		}
	}
}

// checkStatus accepts an "HTTP/1.x 200 ..." status line.
func checkStatus(head []byte) error {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return fmt.Errorf("bad CONNECT response %q", line)
	}
	if string(f[1]) != "200" {
		return fmt.Errorf("CONNECT refused: %q", line)
	}
	return nil
}
