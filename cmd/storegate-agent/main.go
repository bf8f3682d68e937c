// Command storegate-agent hands messages from scripts on a terminal to the
// store gateway's spool, keeping them in a local spool while the gateway
// cannot be reached; it also writes the terminal's proxy setting and checks
// the path through the gateway. Behaviour lives in package agentside.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/storegate/storegate/agentside"
)

const defaultSpool = "/var/lib/storegate-agent/spool"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  storegate-agent send  --gateway URL --to URL --file F|- [--header 'K: V']... [--method M] [--spool DIR]
  storegate-agent flush --gateway URL [--spool DIR] [--watch INTERVAL]
  storegate-agent proxy set|show|clear ...    (storegate-agent proxy help)
  storegate-agent check --gateway URL [--to https://host[:port]]
A message the gateway cannot take now is kept in --spool (default `+defaultSpool+`;
--spool "" disables it) and handed over by a later send or flush.
`)
}

// listFlag collects a repeatable flag's values (--header, --service, --no-proxy).
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func run(ctx context.Context, args []string, in io.Reader, out, errw io.Writer) int {
	if len(args) == 0 {
		usage(errw)
		return 2
	}
	fs := flag.NewFlagSet("storegate-agent "+args[0], flag.ContinueOnError)
	fs.SetOutput(errw)
	gateway := fs.String("gateway", "", "the gateway's proxy listener, e.g. http://box:8080")
	spoolDir := fs.String("spool", defaultSpool, "local spool directory (\"\" for none)")
	timeout := fs.Duration("timeout", 30*time.Second, "timeout for one request to the gateway")
	switch args[0] {
	case "send":
		to := fs.String("to", "", "destination URL, https://host[:port]/path?query")
		file := fs.String("file", "", "file with the body, - for standard input")
		method := fs.String("method", "", "delivery method: POST (default), PUT or PATCH")
		var headers listFlag
		fs.Var(&headers, "header", "header to deliver, 'Name: value' (repeatable)")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		if *gateway == "" || *to == "" || *file == "" {
			fmt.Fprintln(errw, "storegate-agent send: --gateway, --to and --file are required")
			return 2
		}
		var body []byte
		var err error
		if *file == "-" {
			body, err = io.ReadAll(in)
		} else {
			body, err = os.ReadFile(*file)
		}
		if err != nil {
			fmt.Fprintln(errw, "storegate-agent send:", err)
			return 1
		}
		h := http.Header{}
		for _, hv := range headers {
			k, v, ok := strings.Cut(hv, ":")
			if !ok || strings.TrimSpace(k) == "" {
				fmt.Fprintf(errw, "storegate-agent send: --header %q: want 'Name: value'\n", hv)
				return 2
			}
			h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		if *method != "" {
			h.Set("Storegate-Method", strings.ToUpper(*method))
		}
		c, err := newClient(*gateway, *spoolDir, *timeout)
		if err != nil {
			fmt.Fprintln(errw, "storegate-agent send:", err)
			return 1
		}
		defer c.Close()
		id, err := c.Send(ctx, *to, h, body)
		if err != nil {
			fmt.Fprintln(errw, "storegate-agent send:", err)
			return 1
		}
		fmt.Fprintln(out, id)
		if strings.HasPrefix(id, agentside.LocalIDPrefix) {
			fmt.Fprintf(errw, "storegate-agent: the gateway is unavailable; message kept in %s (%d waiting)\n", *spoolDir, c.Pending())
		}
		return 0
	case "flush":
		watch := fs.Duration("watch", 0, "keep handing over every INTERVAL until stopped (0: once)")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		if *gateway == "" || *spoolDir == "" {
			fmt.Fprintln(errw, "storegate-agent flush: --gateway and --spool are required")
			return 2
		}
		// Each round opens the local spool briefly, so `send` from scripts can
		// use it between rounds.
		for {
			code := flushOnce(ctx, *gateway, *spoolDir, *timeout, *watch <= 0, out, errw)
			if *watch <= 0 {
				return code
			}
			t := time.NewTimer(*watch)
			select {
			case <-ctx.Done():
				t.Stop()
				return 0
			case <-t.C:
			}
		}
	case "proxy":
		return runProxy(args[1:], out, errw)
	case "check":
		return runCheck(ctx, args[1:], out, errw)
	case "help", "-h", "--help":
		usage(out)
		return 0
	default:
		fmt.Fprintf(errw, "storegate-agent: unknown command %q\n", args[0])
		usage(errw)
		return 2
	}
}

// newClient opens the client of send and flush. Requests go straight to the
// gateway: it is the proxy, so none is used to reach it.
func newClient(gateway, spoolDir string, timeout time.Duration) (*agentside.Client, error) {
	return agentside.New(agentside.Options{Gateway: gateway, SpoolDir: spoolDir,
		HTTPClient: &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil}}})
}

func flushOnce(ctx context.Context, gateway, spoolDir string, timeout time.Duration, always bool, out, errw io.Writer) int {
	c, err := newClient(gateway, spoolDir, timeout)
	if err != nil {
		fmt.Fprintln(errw, "storegate-agent flush:", err)
		return 1
	}
	defer c.Close()
	if c.Pending() == 0 && !always {
		return 0
	}
	handed, rejected, err := c.Flush(ctx)
	fmt.Fprintf(out, "handed %d, rejected %d, pending %d\n", handed, rejected, c.Pending())
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(errw, "storegate-agent flush: gateway unavailable:", err)
		return 1
	}
	return 0
}
