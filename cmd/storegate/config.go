package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/policy"
)

// The management commands (config, relay, allowed-host,
// allowed-client-cert) mirror the OMS Gateway's cmdlets. They edit the policy
// file in place, keeping its comments, key order and permissions, validate
// the result as `storegate policy check` would before writing anything, and
// write it atomically. The running gateway's watcher reloads it; there is no
// restart command because none is needed.

// defaultPolicyPath is where the management commands look without --policy
// and without $STOREGATE_POLICY.
const defaultPolicyPath = "/etc/storegate/policy.yaml"

// mgmtFlags is a FlagSet with --policy, parsed with flags allowed anywhere
// among the arguments ("config set KEY VALUE --policy P").
type mgmtFlags struct {
	*flag.FlagSet
	policy *string
}

func newMgmtFlags(name string, s stdio) mgmtFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(s.Err)
	p := fs.String("policy", "", "policy file (default $STOREGATE_POLICY, else "+defaultPolicyPath+")")
	return mgmtFlags{fs, p}
}

// parse returns the positional arguments; "--" ends the flags.
func (m mgmtFlags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := m.Parse(args); err != nil {
			return nil, err
		}
		rest := m.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (m mgmtFlags) path() string { return policyPathOr(*m.policy) }

// policyPathOr is the interface contract's rule for commands that take
// --policy: the flag's value, else $STOREGATE_POLICY, else defaultPolicyPath.
func policyPathOr(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := os.Getenv("STOREGATE_POLICY"); p != "" {
		return p
	}
	return defaultPolicyPath
}

// readPolicy reads and validates the policy file for a read-only command.
func readPolicy(path string) (*policy.File, error) {
	f, _, err := policy.LoadFile(path)
	if err != nil {
		if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
			return nil, fmt.Errorf("%s does not exist; `storegate policy default > %s` writes one (without --policy the gateway runs on that embedded default)", path, path)
		}
		return nil, err
	}
	return f, nil
}

// errUsage marks a mistake in the command line (exit status 2).
type errUsage string

func (e errUsage) Error() string { return string(e) }

// editPolicy applies change to the policy file at path and writes the result
// if it is a valid policy. change returns the lines that say what changed.
// before, if set, runs after validation and before the policy is written
// (relay set writes the password file there). A missing file is created from
// the embedded default policy.
func editPolicy(path string, s stdio, change func(d *policy.Doc) ([]string, error), before func() error) int {
	data, err := os.ReadFile(path)
	creating := false
	if errors.Is(err, os.ErrNotExist) {
		data, creating = policy.DefaultYAML(), true
	} else if err != nil {
		fmt.Fprintln(s.Err, "storegate:", err)
		return 1
	}
	d, err := policy.ParseDoc(data, path)
	if err != nil {
		fmt.Fprintf(s.Err, "storegate: %v\nnothing changed; fix the file by hand first\n", err)
		return 1
	}
	lines, err := change(d)
	if err != nil {
		fmt.Fprintln(s.Err, "storegate:", err)
		fmt.Fprintln(s.Err, "nothing changed")
		var u errUsage
		if errors.As(err, &u) {
			return 2
		}
		return 1
	}
	out := d.Bytes()
	if bytes.Equal(out, data) && !creating {
		if before != nil {
			// The policy names the same file; only the file changes. The
			// gateway's watcher sees it (the policy's related files).
			if err := before(); err != nil {
				fmt.Fprintln(s.Err, "storegate:", err)
				return 1
			}
		}
		for _, l := range lines {
			fmt.Fprintln(s.Out, l)
		}
		if before == nil {
			fmt.Fprintf(s.Out, "%s: nothing changed\n", path)
		}
		return 0
	}
	f, err := policy.Parse(out, path)
	if err == nil {
		if f.RelayProxy.PasswordFile == "" || before == nil {
			var snap *policy.Snapshot
			if snap, err = policy.Compile(f, out, path, time.Now()); err == nil {
				err = gateway.CheckFiles(snap)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(s.Err, "storegate: refused, the result would not be a valid policy:\n%v\nnothing changed\n", err)
		return 1
	}
	if before != nil {
		if err := before(); err != nil {
			fmt.Fprintln(s.Err, "storegate:", err)
			fmt.Fprintln(s.Err, "nothing changed")
			return 1
		}
	}
	if err := policy.WriteFileAtomic(path, out, 0o644); err != nil {
		fmt.Fprintln(s.Err, "storegate: cannot write the policy:", err)
		return 1
	}
	if creating {
		fmt.Fprintf(s.Out, "%s: created from the default policy\n", path)
	}
	for _, l := range lines {
		fmt.Fprintln(s.Out, l)
	}
	if d.Reformatted() {
		fmt.Fprintf(s.Out, "note: %s was re-written as a whole (its layout was beyond an in-place edit); comments and key order are kept, blank lines may not be\n", path)
	}
	fmt.Fprintf(s.Out, "%s written; a running gateway applies it within a second\n", path)
	return 0
}

// cmdConfig: config get [KEY] | config set KEY VALUE.
func cmdConfig(_ context.Context, args []string, s stdio) int {
	m := newMgmtFlags("config", s)
	pos, err := m.parse(args)
	if err != nil {
		return 2
	}
	usage := func() int {
		fmt.Fprintln(s.Err, "usage: storegate config get [KEY] | config set KEY VALUE  [--policy PATH]\n"+
			"  KEY is dotted: listen_port, limits.dial_timeout, relay_proxy.address, ...\n"+
			"  VALUE is YAML: 8080, 5s, true, \"[443, 8443]\"; anything else is a string")
		return 2
	}
	if len(pos) == 0 {
		return usage()
	}
	switch pos[0] {
	case "get":
		if len(pos) > 2 {
			return usage()
		}
		key := ""
		if len(pos) == 2 {
			key = pos[1]
		}
		return configGet(m.path(), key, s)
	case "set":
		if len(pos) != 3 {
			return usage()
		}
		return configSet(m.path(), pos[1], pos[2], s)
	}
	return usage()
}

// configGet prints the policy in force once the file is loaded: the whole
// of it with defaults filled in, or one key. Secrets are masked.
func configGet(path, key string, s stdio) int {
	f, err := readPolicy(path)
	if err != nil {
		fmt.Fprintln(s.Err, "storegate:", err)
		return 1
	}
	if f.RelayProxy.Password != "" {
		f.RelayProxy.Password = "****"
	}
	f.Switches() // an unset switch shows the value in force, not null
	var root yaml.Node
	if err := root.Encode(f); err != nil {
		fmt.Fprintln(s.Err, "storegate:", err)
		return 1
	}
	flowLists(&root)
	n := &root
	if key != "" {
		for _, k := range strings.Split(key, ".") {
			var next *yaml.Node
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
					}
				}
			}
			if next == nil {
				fmt.Fprintf(s.Err, "storegate: %q is not a policy key; `storegate config get` lists them\n", key)
				return 1
			}
			n = next
		}
	}
	if n.Kind == yaml.ScalarNode {
		fmt.Fprintln(s.Out, n.Value)
		return 0
	}
	enc := yaml.NewEncoder(s.Out)
	enc.SetIndent(2)
	_ = enc.Encode(n)
	_ = enc.Close()
	return 0
}

// flowLists writes lists on one line, as the policy files do.
func flowLists(n *yaml.Node) {
	if n.Kind == yaml.SequenceNode {
		n.Style = yaml.FlowStyle
	}
	for _, c := range n.Content {
		flowLists(c)
	}
}

// configSet sets one key. The password is refused here: a command line
// ends up in shell histories and process lists.
func configSet(path, key, value string, s stdio) int {
	if key == "relay_proxy.password" || key == "relay_proxy" {
		fmt.Fprintln(s.Err, "storegate: set the relay with `storegate relay set --address URL [--username U] [--password-file F | --password-stdin]`; a password never goes on a command line")
		return 2
	}
	return editPolicy(path, s, func(d *policy.Doc) ([]string, error) {
		old := "(not set)"
		if n, ok := d.Get(key); ok {
			old = nodeText(n)
		}
		v := policy.ValueNode(value)
		if err := d.Set(key, v); err != nil {
			return nil, err
		}
		return []string{fmt.Sprintf("%s: %s -> %s", key, old, nodeText(v))}, nil
	}, nil)
}

// nodeText shows a value on one line, as it would be written.
func nodeText(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		if n.Value == "" {
			return `""`
		}
		return n.Value
	}
	c := *n
	c.Style = yaml.FlowStyle
	b, err := yaml.Marshal(&c)
	if err != nil {
		return "(unprintable)"
	}
	return strings.TrimSpace(string(b))
}

// readSecret reads one line from r, at most 4 KiB, without the line end.
func readSecret(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, 4<<10))
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", errors.New("no password on standard input")
	}
	return line, nil
}
