package policy

import (
	"net/netip"
	"testing"
	"time"
)

// FuzzParse: the loader never panics, and whatever it accepts compiles and
// re-validates.
func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	f.Add([]byte("version: 1\nlisten_port: 70000\n"))
	f.Add([]byte("version: 1\nallowed_hosts: [\"*.a.com\", 1.2.3.4, \"[::1]\"]\n"))
	f.Add([]byte("version: 1\nlimits: {dial_timeout: 3d, max_header_bytes: 4KiB}\n"))
	f.Add([]byte("a: &a [x,x]\nb: [*a,*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := Parse(data, "fuzz")
		if err != nil {
			return
		}
		if es := pf.validate(); len(es) > 0 {
			t.Fatalf("accepted a policy that fails validation: %v", es)
		}
		if pf.RelayProxy.PasswordFile != "" {
			return // Compile would read a file
		}
		if _, err := Compile(pf, data, "fuzz", time.Time{}); err != nil {
			t.Fatalf("accepted policy does not compile: %v", err)
		}
	})
}

// FuzzHostMatch: normalising and matching never panic, and a name that
// normalises is matched the same way in its canonical form.
func FuzzHostMatch(f *testing.F) {
	for _, s := range []string{"example.com", "A.Wild.Example.ORG.", "bücher.example", "xn--bcher-kva.example", "203.0.113.7", "::ffff:10.0.0.1", "*.x", "..", "a..b", "-a.com"} {
		f.Add(s)
	}
	s := compile(f, "version: 1\npresets: [log-analytics]\nallowed_hosts: [example.com, \"*.wild.example.org\", bücher.example, 203.0.113.7]\n")
	f.Fuzz(func(t *testing.T, host string) {
		_, _ = ParseHostPattern(host)
		if a, err := netip.ParseAddr(host); err == nil {
			_ = s.CheckAddr(a)
			_, _, _ = s.CheckTarget(a.String(), 443)
			return
		}
		name, err := NormalizeHost(host)
		if err != nil {
			return
		}
		_, _, err1 := s.CheckTarget(name, 443)
		again, err := NormalizeHost(name)
		if err != nil || again != name {
			t.Fatalf("NormalizeHost not idempotent: %q -> %q -> %q (%v)", host, name, again, err)
		}
		_, _, err2 := s.CheckTarget(again, 443)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("decision differs for %q", host)
		}
	})
}
