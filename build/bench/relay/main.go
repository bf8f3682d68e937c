// Command go-relay is the least a CONNECT relay written in Go can do: read
// the request head, dial, answer 200, and let io.Copy splice both ways. The
// bench harness measures it beside storegate as a floor (what the runtime
// and the kernel cost on this machine), not as a product: no policy, limits,
// events or idle handling.
//
//	go-relay --policy FILE   (listens on 127.0.0.1 at FILE's listen_port)
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "go-relay:", err)
		os.Exit(1)
	}
}

var listenPort = regexp.MustCompile(`(?m)^listen_port: *([0-9]+)\s*$`)

func run(args []string) error {
	if len(args) != 2 || args[0] != "--policy" {
		return fmt.Errorf("usage: go-relay --policy FILE")
	}
	b, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	m := listenPort.FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("%s has no listen_port", args[1])
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+string(m[1]))
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go relay(c.(*net.TCPConn))
	}
}

func relay(c *net.TCPConn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 1024)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if l == "\r\n" {
			break
		}
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "CONNECT" || br.Buffered() > 0 {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return
	}
	u, err := net.Dial("tcp", f[1])
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up := u.(*net.TCPConn)
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, c) // splice(2) between the two sockets
		up.CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.CloseWrite()
	<-done
}
