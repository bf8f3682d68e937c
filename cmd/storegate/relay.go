package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/policy"
)

// relayPasswordFile is where relay set --password-stdin keeps the password:
// beside the policy, readable by its owner only.
const relayPasswordFile = "relay-password"

// cmdRelay: relay get | relay set --address URL [--username U]
// [--password-file F | --password-stdin]. An empty address clears the relay
// and its credentials (connect directly). The password is never printed.
func cmdRelay(_ context.Context, args []string, s stdio) int {
	m := newMgmtFlags("relay", s)
	address := m.String("address", "", "relay proxy URL, http://host:port or https://host:port; empty: connect directly")
	username := m.String("username", "", "Basic auth user name")
	passFile := m.String("password-file", "", "file whose first line is the password")
	passStdin := m.Bool("password-stdin", false, "read the password from standard input and keep it in "+relayPasswordFile+" beside the policy (mode 0600)")
	clientCert := m.String("client-cert", "", "PEM certificate this gateway shows an https:// relay (a regional storegate); \"\" clears it")
	clientKey := m.String("client-key", "", "PEM private key of --client-cert; \"\" clears it")
	caFile := m.String("ca-file", "", "PEM CA certificates that verify an https:// relay; \"\" clears it (system roots)")
	pos, err := m.parse(args)
	if err != nil {
		return 2
	}
	usage := func() int {
		fmt.Fprintln(s.Err, "usage: storegate relay get | relay set --address URL [--username U] [--password-file F | --password-stdin] [--client-cert F --client-key F] [--ca-file F]  [--policy PATH]")
		return 2
	}
	if len(pos) != 1 {
		return usage()
	}
	set := map[string]bool{}
	m.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch pos[0] {
	case "get":
		if len(set) > 0 && !(len(set) == 1 && set["policy"]) {
			return usage()
		}
		return relayGet(m.path(), s)
	case "set":
		if !set["address"] {
			fmt.Fprintln(s.Err, "storegate relay set: --address is required (--address \"\" connects directly)")
			return 2
		}
		if *passFile != "" && *passStdin {
			fmt.Fprintln(s.Err, "storegate relay set: --password-file or --password-stdin, not both")
			return 2
		}
		if set["client-cert"] != set["client-key"] {
			fmt.Fprintln(s.Err, "storegate relay set: --client-cert and --client-key go together")
			return 2
		}
		c := relayChange{
			address: *address, username: *username, setUser: set["username"],
			passFile: *passFile, passStdin: *passStdin,
		}
		for _, f := range []struct {
			flag, key string
			value     *string
		}{
			{"client-cert", "relay_proxy.client_cert_file", clientCert},
			{"client-key", "relay_proxy.client_key_file", clientKey},
			{"ca-file", "relay_proxy.ca_file", caFile},
		} {
			if !set[f.flag] {
				continue
			}
			v := *f.value
			if v != "" {
				abs, err := filepath.Abs(v)
				if err != nil {
					fmt.Fprintln(s.Err, "storegate:", err)
					return 1
				}
				v = abs
			}
			if c.files == nil {
				c.files = map[string]string{}
			}
			c.files[f.key] = v
		}
		return relaySet(m.path(), c, s)
	}
	return usage()
}

func relayGet(path string, s stdio) int {
	f, err := readPolicy(path)
	if err != nil {
		fmt.Fprintln(s.Err, "storegate:", err)
		return 1
	}
	r := f.RelayProxy
	if r.Address == "" {
		fmt.Fprintln(s.Out, "relay: none (connects directly)")
		return 0
	}
	fmt.Fprintln(s.Out, "address:", gateway.RelayDisplay(r.Address, ""))
	user := r.Username
	if user == "" {
		user = "(none)"
	}
	fmt.Fprintln(s.Out, "username:", user)
	switch {
	case r.PasswordFile != "":
		fmt.Fprintf(s.Out, "password: **** (from %s)\n", r.PasswordFile)
	case r.Password != "":
		fmt.Fprintln(s.Out, "password: **** (in the policy file; prefer relay set --password-stdin)")
	default:
		fmt.Fprintln(s.Out, "password: (none)")
	}
	if r.ClientCertFile != "" {
		fmt.Fprintln(s.Out, "client certificate:", r.ClientCertFile)
		fmt.Fprintln(s.Out, "client key:", r.ClientKeyFile)
	}
	if r.CAFile != "" {
		fmt.Fprintln(s.Out, "CA file:", r.CAFile)
	}
	return 0
}

type relayChange struct {
	address, username string
	setUser           bool
	passFile          string
	passStdin         bool
	files             map[string]string // relay_proxy.client_cert_file, client_key_file, ca_file: absolute paths, "" clears
}

func relaySet(path string, c relayChange, s stdio) int {
	secret := ""
	pwPath := ""
	if c.address == "" && (c.username != "" || c.passFile != "" || c.passStdin || len(c.files) > 0) {
		fmt.Fprintln(s.Err, "storegate relay set: credentials need an address; --address \"\" alone clears the relay")
		return 2
	}
	if c.passFile != "" {
		abs, err := filepath.Abs(c.passFile)
		if err != nil {
			fmt.Fprintln(s.Err, "storegate:", err)
			return 1
		}
		if b, err := os.ReadFile(abs); err != nil {
			fmt.Fprintln(s.Err, "storegate: --password-file:", err)
			return 1
		} else if len(b) == 0 {
			fmt.Fprintf(s.Err, "storegate: --password-file: %s is empty\n", abs)
			return 1
		}
		pwPath = abs
	}
	if c.passStdin {
		p, err := readSecret(s.In)
		if err != nil {
			fmt.Fprintln(s.Err, "storegate: --password-stdin:", err)
			return 1
		}
		secret = p
		abs, err := filepath.Abs(filepath.Join(filepath.Dir(path), relayPasswordFile))
		if err != nil {
			fmt.Fprintln(s.Err, "storegate:", err)
			return 1
		}
		pwPath = abs
	}
	var before func() error
	if secret != "" {
		before = func() error {
			if err := policy.WriteFileAtomic(pwPath, []byte(secret+"\n"), 0o600); err != nil {
				return fmt.Errorf("cannot write the password file: %v", err)
			}
			return os.Chmod(pwPath, 0o600)
		}
	}
	return editPolicy(path, s, func(d *policy.Doc) ([]string, error) {
		var lines []string
		str := func(key string) string {
			if n, ok := d.Get(key); ok && n.Value != "" {
				return n.Value
			}
			return ""
		}
		set := func(key, v string) error {
			old := str(key)
			if old == v { // a missing key reads as "": nothing to clear
				return nil
			}
			if err := d.Set(key, policy.StringNode(v)); err != nil {
				return err
			}
			show := func(x string) string {
				if x == "" {
					return "(none)"
				}
				return x
			}
			if key == "relay_proxy.password" {
				lines = append(lines, "relay_proxy.password: cleared")
				return nil
			}
			lines = append(lines, fmt.Sprintf("%s: %s -> %s", key, show(old), show(v)))
			return nil
		}
		if c.address == "" {
			for _, k := range []string{"relay_proxy.address", "relay_proxy.username", "relay_proxy.password", "relay_proxy.password_file",
				"relay_proxy.client_cert_file", "relay_proxy.client_key_file", "relay_proxy.ca_file"} {
				if str(k) != "" {
					if err := set(k, ""); err != nil {
						return nil, err
					}
				}
			}
			if len(lines) == 0 {
				lines = append(lines, "relay: none already (connects directly)")
			} else {
				lines = append(lines, "the gateway connects directly")
			}
			return lines, nil
		}
		if err := set("relay_proxy.address", c.address); err != nil {
			return nil, err
		}
		if c.setUser {
			if err := set("relay_proxy.username", c.username); err != nil {
				return nil, err
			}
		}
		for _, k := range []string{"relay_proxy.client_cert_file", "relay_proxy.client_key_file", "relay_proxy.ca_file"} {
			if v, ok := c.files[k]; ok {
				if err := set(k, v); err != nil {
					return nil, err
				}
			}
		}
		if pwPath != "" {
			if str("relay_proxy.password") != "" {
				if err := set("relay_proxy.password", ""); err != nil {
					return nil, err
				}
			}
			if err := set("relay_proxy.password_file", pwPath); err != nil {
				return nil, err
			}
			if secret != "" {
				lines = append(lines, "password: written to "+pwPath+" (mode 0600, not shown)")
			}
		}
		return lines, nil
	}, before)
}
