package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/storegate/storegate/agentside"
)

const checkUsage = `usage:
  storegate-agent check --gateway URL [--to https://host[:port]] [--ca-file F] [--timeout D]
Checks the path through the gateway step by step: TCP to the gateway, CONNECT to the target
and a verified TLS handshake with it (or, without --to, the gateway's spool status).
Exits 1 naming the first step that failed.
`

func runCheck(ctx context.Context, args []string, out, errw io.Writer) int {
	fs := flag.NewFlagSet("storegate-agent check", flag.ContinueOnError)
	fs.SetOutput(errw)
	gateway := fs.String("gateway", "", "the gateway's proxy listener, e.g. http://box:8080")
	to := fs.String("to", "", "target, https://host[:port]; empty checks the gateway's spool status")
	caFile := fs.String("ca-file", "", "PEM roots trusted besides the system's")
	timeout := fs.Duration("timeout", 10*time.Second, "limit for each step")
	if fs.Parse(args) != nil {
		return 2
	}
	if *gateway == "" || fs.NArg() > 0 {
		fmt.Fprint(errw, "storegate-agent check: --gateway is required\n"+checkUsage)
		return 2
	}
	var roots *x509.CertPool
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(errw, "storegate-agent check: --ca-file:", err)
			return 2
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			fmt.Fprintf(errw, "storegate-agent check: --ca-file %s: no PEM certificates in it\n", *caFile)
			return 2
		}
	}
	r, err := agentside.Check(ctx, agentside.CheckOptions{Gateway: *gateway, Target: *to, Roots: roots, Timeout: *timeout})
	if err != nil {
		fmt.Fprintln(errw, "storegate-agent check:", err)
		return 2
	}
	fmt.Fprintf(out, "check %s through %s\n", r.Target, r.Gateway)
	for _, s := range r.Steps {
		mark := "ok  "
		switch {
		case s.Skipped:
			mark = "skip"
		case !s.OK:
			mark = "FAIL"
		}
		dur := ""
		if !s.Skipped {
			dur = fmt.Sprintf("%.1fms", float64(s.Duration.Microseconds())/1000)
		}
		fmt.Fprintf(out, "%s  %-11s %9s  %s\n", mark, s.Name, dur, s.Detail)
	}
	if f, failed := r.Failed(); failed {
		fmt.Fprintf(errw, "storegate-agent check: failed at %s: %s\n", f.Name, f.Detail)
		return 1
	}
	return 0
}
