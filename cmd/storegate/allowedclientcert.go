package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/storegate/storegate/gateway/policy"
	"github.com/storegate/storegate/gateway/tlspeek"
)

// cmdAllowedClientCert: allowed-client-cert list | add SUBJECT... |
// remove SUBJECT... SUBJECT is a distinguished name such as
// "CN=pos-0001,O=Contoso"; an empty list means no client-certificate check.
func cmdAllowedClientCert(_ context.Context, args []string, s stdio) int {
	m := newMgmtFlags("allowed-client-cert", s)
	pos, err := m.parse(args)
	if err != nil {
		return 2
	}
	usage := func() int {
		fmt.Fprintln(s.Err, "usage: storegate allowed-client-cert list | add SUBJECT... | remove SUBJECT...  [--policy PATH]\n"+
			"  SUBJECT: a distinguished name such as \"CN=pos-0001,O=Contoso\"")
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
		f, err := readPolicy(m.path())
		if err != nil {
			fmt.Fprintln(s.Err, "storegate:", err)
			return 1
		}
		if len(f.AllowedClientCertificates) == 0 {
			fmt.Fprintln(s.Out, "(none: no client-certificate check)")
		}
		for _, c := range f.AllowedClientCertificates {
			fmt.Fprintln(s.Out, c)
		}
		return 0
	case "add", "remove":
		if len(pos) < 2 {
			return usage()
		}
		subjects := pos[1:]
		for _, sub := range subjects {
			// The same forms the gateway matches: a DN or a bare common name.
			if _, err := tlspeek.ParseSubjects([]string{sub}); err != nil { // a blank one too
				fmt.Fprintf(s.Err, "storegate: %q is not a subject; write it as \"CN=pos-0001,O=Contoso\" or a bare common name\nnothing changed\n", sub)
				return 1
			}
		}
		add := pos[0] == "add"
		return editPolicy(m.path(), s, func(d *policy.Doc) ([]string, error) {
			var lines []string
			for _, sub := range subjects {
				sub = strings.TrimSpace(sub)
				if add {
					added, err := d.Append("allowed_client_certificates", sub, tlspeek.SameSubject)
					if err != nil {
						return nil, err
					}
					if added {
						lines = append(lines, "allowed client certificate added: "+sub)
					} else {
						lines = append(lines, sub+" is already allowed")
					}
					continue
				}
				removed, err := d.Remove("allowed_client_certificates", func(x string) bool { return tlspeek.SameSubject(x, sub) })
				if err != nil {
					return nil, err
				}
				if len(removed) == 0 {
					return nil, fmt.Errorf("%s is not in allowed_client_certificates", sub)
				}
				lines = append(lines, "allowed client certificate removed: "+sub)
			}
			return lines, nil
		}, nil)
	}
	return usage()
}
