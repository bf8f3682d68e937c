package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/storegate/storegate/agentside"
)

const proxyUsage = `usage:
  storegate-agent proxy set   --gateway URL [--service NAME]... [--no-proxy HOSTS] [--username U --password-file F]
                              [--oms=false] [--profile=false] [--root DIR] [--dry-run]
  storegate-agent proxy show  [--root DIR]
  storegate-agent proxy clear [--service NAME]... [--gateway URL] [--root DIR] [--dry-run]
set writes a systemd drop-in for each --service, the Log Analytics agent's proxy.conf (when
that agent is installed) and /etc/profile.d/storegate-proxy.sh; clear without --service
removes all of them (proxy.conf only when it points at the gateway).
`

func runProxy(args []string, out, errw io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(errw, proxyUsage)
		return 2
	}
	fs := flag.NewFlagSet("storegate-agent proxy "+args[0], flag.ContinueOnError)
	fs.SetOutput(errw)
	root := fs.String("root", "/", "write under this directory instead of / (tests, images)")
	dry := fs.Bool("dry-run", false, "say what would change and write nothing")
	var services listFlag
	switch args[0] {
	case "set":
		gateway := fs.String("gateway", "", "the gateway's proxy listener, e.g. http://box:8080")
		fs.Var(&services, "service", "systemd service that gets the proxy environment (repeatable)")
		var noProxy listFlag
		fs.Var(&noProxy, "no-proxy", "more hosts that bypass the gateway, comma-separated (repeatable)")
		username := fs.String("username", "", "user name for the gateway, if it asks for one")
		passwordFile := fs.String("password-file", "", "file holding the password for --username")
		oms := fs.Bool("oms", true, "write the Log Analytics agent's proxy.conf when the agent is installed")
		profile := fs.Bool("profile", true, "write /etc/profile.d/storegate-proxy.sh for login shells")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		if *gateway == "" || fs.NArg() > 0 {
			fmt.Fprint(errw, "storegate-agent proxy set: --gateway is required\n"+proxyUsage)
			return 2
		}
		gw, err := withCredentials(*gateway, *username, *passwordFile)
		if err != nil {
			fmt.Fprintln(errw, "storegate-agent proxy set:", err)
			return 2
		}
		pf := agentside.ProxyFiles{Root: *root, DryRun: *dry}
		changes, err := pf.Set(agentside.ProxySettings{Gateway: gw, NoProxy: noProxy, Services: services, OMS: *oms, Profile: *profile})
		return report(out, errw, "set", changes, err, *dry)
	case "show":
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		files, err := agentside.ProxyFiles{Root: *root}.Show()
		for _, f := range files {
			fmt.Fprintf(out, "== %s\n%s", f.Path, f.Content)
			if !strings.HasSuffix(f.Content, "\n") {
				fmt.Fprintln(out)
			}
		}
		if err != nil {
			fmt.Fprintln(errw, "storegate-agent proxy show:", err)
			return 1
		}
		if len(files) == 0 {
			fmt.Fprintln(out, "no proxy setting written")
		}
		return 0
	case "clear":
		fs.Var(&services, "service", "remove only this service's drop-in (repeatable)")
		gateway := fs.String("gateway", "", "also treat an OMS proxy.conf pointing here as ours")
		if fs.Parse(args[1:]) != nil {
			return 2
		}
		changes, err := agentside.ProxyFiles{Root: *root, DryRun: *dry}.Clear(services, *gateway)
		return report(out, errw, "clear", changes, err, *dry)
	case "help", "-h", "--help":
		fmt.Fprint(out, proxyUsage)
		return 0
	default:
		fmt.Fprintf(errw, "storegate-agent proxy: unknown command %q\n%s", args[0], proxyUsage)
		return 2
	}
}

// withCredentials puts --username and the password from --password-file
// into the gateway URL (never taken from the command line itself, where
// other users could read it).
func withCredentials(gateway, username, passwordFile string) (string, error) {
	if username == "" && passwordFile == "" {
		return gateway, nil
	}
	if username == "" || passwordFile == "" {
		return "", fmt.Errorf("--username and --password-file go together")
	}
	u, err := agentside.ProxyURL(gateway)
	if err != nil {
		return "", err
	}
	if u.User != nil {
		return "", fmt.Errorf("--gateway already carries credentials; drop them or --username")
	}
	b, err := os.ReadFile(passwordFile)
	if err != nil {
		return "", fmt.Errorf("--password-file: %w", err)
	}
	pass := strings.TrimRight(string(b), "\r\n")
	if pass == "" || strings.ContainsAny(pass, "\r\n") {
		return "", fmt.Errorf("--password-file %s: want one line holding the password", passwordFile)
	}
	u.User = url.UserPassword(username, pass)
	return u.String(), nil
}

// report prints the changes of proxy set or clear (those made before an
// error too), then the error or what to restart, and returns the exit code.
func report(out, errw io.Writer, cmd string, changes []agentside.Change, err error, dry bool) int {
	for _, c := range changes {
		fmt.Fprintln(out, c.Line(dry))
	}
	if err != nil {
		fmt.Fprintf(errw, "storegate-agent proxy %s: %v\n", cmd, err)
		return 1
	}
	printNext(out, changes, dry)
	return 0
}

// printNext says what to restart so the new setting is read.
func printNext(out io.Writer, changes []agentside.Change, dry bool) {
	var units []string
	oms := false
	for _, c := range changes {
		if c.Action != agentside.Created && c.Action != agentside.Updated && c.Action != agentside.Removed {
			continue
		}
		switch {
		case strings.HasPrefix(c.Path, agentside.SystemdDir+"/"):
			units = append(units, strings.TrimSuffix(strings.TrimPrefix(c.Path, agentside.SystemdDir+"/"), ".d/"+agentside.DropInName))
		case c.Path == agentside.OMSProxyFile:
			oms = true
		}
	}
	prefix := "next: "
	if dry {
		prefix = "then: "
	}
	if len(units) > 0 {
		fmt.Fprintf(out, "%ssystemctl daemon-reload && systemctl restart %s\n", prefix, strings.Join(units, " "))
	}
	if oms {
		fmt.Fprintf(out, "%s/opt/microsoft/omsagent/bin/service_control restart\n", prefix)
	}
}
