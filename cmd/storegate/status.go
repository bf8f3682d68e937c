package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/storegate/storegate/device/console"
	"github.com/storegate/storegate/gateway/policy"
)

// cmdStatus prints a running gateway's status, read from its admin endpoint,
// the way the serial console's "status" shows it.
func cmdStatus(ctx context.Context, args []string, s stdio) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(s.Err)
	admin := fs.String("admin", "", "admin endpoint host:port (default: admin_address from the policy, else "+policy.DefaultAdminAddress+")")
	policyPath := fs.String("policy", "", "policy file to read admin_address from (default $STOREGATE_POLICY, else /etc/storegate/policy.yaml)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(s.Err, "usage: storegate status [--admin ADDR] [--policy PATH] [--json]")
		return 2
	}
	addr := *admin
	if addr == "" {
		a, err := statusAdminAddress(*policyPath)
		if err != nil {
			fmt.Fprintln(s.Err, "storegate status:", err)
			return 1
		}
		addr = a
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := console.FetchStatus(ctx, &http.Client{}, addr)
	if err != nil {
		fmt.Fprintln(s.Err, "storegate status:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(s.Out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	console.WriteStatus(s.Out, "\n", st, time.Now())
	return 0
}

// statusAdminAddress finds admin_address: from an explicit policy file (an
// error if it cannot be read), else from the default policy file if there is
// one, else the built-in default.
func statusAdminAddress(explicit string) (string, error) {
	path := policyPathOr(explicit)
	f, _, err := policy.LoadFile(path)
	if err != nil {
		if explicit != "" {
			return "", err
		}
		if _, statErr := os.Stat(path); statErr == nil {
			return "", fmt.Errorf("%v (or pass --admin ADDR)", err)
		}
		return policy.DefaultAdminAddress, nil
	}
	if f.AdminAddress == "" {
		return policy.DefaultAdminAddress, nil
	}
	return f.AdminAddress, nil
}
