package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/storegate/storegate/gateway/policy"
)

// cmdAllowedHost: allowed-host list | add HOST... | remove HOST...
// list shows where each host comes from: the policy file, or a preset
// compiled into storegate (the original separated local hosts from those it
// fetched automatically).
func cmdAllowedHost(_ context.Context, args []string, s stdio) int {
	m := newMgmtFlags("allowed-host", s)
	pos, err := m.parse(args)
	if err != nil {
		return 2
	}
	usage := func() int {
		fmt.Fprintln(s.Err, "usage: storegate allowed-host list | add HOST... | remove HOST...  [--policy PATH]\n"+
			"  HOST: example.com, \"*.example.com\" (any name below it) or an IP address")
		return 2
	}
	if len(pos) == 0 {
		return usage()
	}
	switch pos[0] {
	case "list":
		if len(pos) != 1 {
			return usage()
		}
		return allowedHostList(m.path(), s)
	case "add", "remove":
		if len(pos) < 2 {
			return usage()
		}
		var pats []policy.HostPattern
		for _, h := range pos[1:] {
			p, err := policy.ParseHostPattern(h)
			if err != nil {
				fmt.Fprintf(s.Err, "storegate: %v\nnothing changed\n", err)
				return 1
			}
			pats = append(pats, p)
		}
		if pos[0] == "add" {
			return allowedHostAdd(m.path(), pats, s)
		}
		return allowedHostRemove(m.path(), pats, s)
	}
	return usage()
}

func allowedHostList(path string, s stdio) int {
	f, err := readPolicy(path)
	if err != nil {
		fmt.Fprintln(s.Err, "storegate:", err)
		return 1
	}
	tw := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tORIGIN")
	for _, h := range f.AllowedHosts {
		fmt.Fprintf(tw, "%s\tpolicy file\n", h)
	}
	for _, p := range enabledPresets(f) {
		for _, h := range p.Hosts {
			fmt.Fprintf(tw, "%s\tpreset:%s\n", h, p.Name)
		}
	}
	_ = tw.Flush()
	ports := fmt.Sprint(f.AllowedPorts)
	fmt.Fprintf(s.Out, "ports: %s\n", ports[1:len(ports)-1])
	return 0
}

// samePattern compares two allowed_hosts entries in canonical form.
func samePattern(a, b string) bool {
	pa, errA := policy.ParseHostPattern(a)
	pb, errB := policy.ParseHostPattern(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa.String() == pb.String()
}

// presetOf names the enabled preset that lists p, if any.
func presetOf(f *policy.File, p policy.HostPattern) string {
	if f == nil {
		return ""
	}
	for _, pr := range enabledPresets(f) {
		for _, h := range pr.Hosts {
			if samePattern(h, p.String()) {
				return pr.Name
			}
		}
	}
	return ""
}

func allowedHostAdd(path string, pats []policy.HostPattern, s stdio) int {
	f, _ := readPolicy(path) // for the preset note only; the edit checks the file
	return editPolicy(path, s, func(d *policy.Doc) ([]string, error) {
		var lines []string
		for _, p := range pats {
			added, err := d.Append("allowed_hosts", p.String(), samePattern)
			if err != nil {
				return nil, err
			}
			note := ""
			if pr := presetOf(f, p); pr != "" {
				note = " (preset:" + pr + " allows it too)"
			}
			if added {
				lines = append(lines, "allowed host added: "+p.String()+note)
			} else {
				lines = append(lines, p.String()+" is already allowed by the policy file")
			}
		}
		return lines, nil
	}, nil)
}

func allowedHostRemove(path string, pats []policy.HostPattern, s stdio) int {
	f, _ := readPolicy(path)
	return editPolicy(path, s, func(d *policy.Doc) ([]string, error) {
		var lines []string
		for _, p := range pats {
			removed, err := d.Remove("allowed_hosts", func(h string) bool { return samePattern(h, p.String()) })
			if err != nil {
				return nil, err
			}
			if len(removed) > 0 {
				lines = append(lines, "allowed host removed: "+p.String())
				if pr := presetOf(f, p); pr != "" {
					lines = append(lines, "note: preset:"+pr+" still allows "+p.String())
				}
				continue
			}
			if pr := presetOf(f, p); pr != "" {
				return nil, fmt.Errorf("%s comes from preset:%s, not from the policy file; to drop the whole preset: storegate config set presets \"[...]\"", p, pr)
			}
			return nil, fmt.Errorf("%s is not in the policy file's allowed_hosts (storegate allowed-host list shows them)", p)
		}
		return lines, nil
	}, nil)
}
