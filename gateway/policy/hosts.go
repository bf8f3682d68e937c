package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// HostPattern is one allowlist entry in canonical form.
type HostPattern struct {
	// Name is the lower-case ASCII (punycode) name; for a wildcard it is the
	// suffix without "*.".
	Name     string
	Wildcard bool
	// Addr is set for IP literal entries.
	Addr netip.Addr
}

func (p HostPattern) String() string {
	switch {
	case p.Addr.IsValid():
		return p.Addr.String()
	case p.Wildcard:
		return "*." + p.Name
	default:
		return p.Name
	}
}

// ParseHostPattern checks and canonicalises one allowed_hosts entry: an exact
// name, "*.suffix", or an IPv4/IPv6 literal (brackets allowed).
func ParseHostPattern(s string) (HostPattern, error) {
	raw := strings.TrimSpace(s)
	if raw == "" {
		return HostPattern{}, errors.New("empty host")
	}
	if strings.HasPrefix(raw, "[") && strings.HasSuffix(raw, "]") {
		raw = raw[1 : len(raw)-1]
	}
	if a, err := netip.ParseAddr(raw); err == nil {
		if a.Zone() != "" {
			return HostPattern{}, fmt.Errorf("%q: an address with a zone cannot be allowed", s)
		}
		return HostPattern{Addr: a.Unmap()}, nil
	}
	wild := false
	if strings.HasPrefix(raw, "*.") {
		wild, raw = true, raw[2:]
	}
	if strings.Contains(raw, "*") {
		return HostPattern{}, fmt.Errorf("%q: a wildcard is only allowed as the whole first label (*.example.com)", s)
	}
	if strings.ContainsAny(raw, ":/ ") {
		return HostPattern{}, fmt.Errorf("%q is not a host name; write the name alone, without scheme, port or path", s)
	}
	name, err := NormalizeHost(raw)
	if err != nil {
		return HostPattern{}, fmt.Errorf("%q: %v", s, err)
	}
	if wild && !strings.Contains(name, ".") {
		return HostPattern{}, fmt.Errorf("%q: a wildcard needs at least two labels after it (*.example.com), not a whole top-level domain", s)
	}
	return HostPattern{Name: name, Wildcard: wild}, nil
}

var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// NormalizeHost returns the canonical form of a DNS name: lower case, no
// trailing dot, punycode for internationalised labels. Plain lower-case ASCII
// names (the common case) are returned without allocating.
func NormalizeHost(h string) (string, error) {
	if len(h) == 0 || len(h) > 254 {
		return "", errors.New("host name length must be 1-253")
	}
	if isCanonicalASCII(h) {
		return h, nil
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return "", errors.New("empty host name")
	}
	out, err := idnaProfile.ToASCII(h)
	if err != nil {
		// Underscores appear in real service names (_dmarc, SRV-style hosts);
		// idna refuses them, so accept plain ASCII names that are otherwise sane.
		lower := strings.ToLower(h)
		if isCanonicalASCII(lower) {
			return lower, nil
		}
		return "", fmt.Errorf("not a valid host name")
	}
	if !isCanonicalASCII(out) {
		return "", fmt.Errorf("not a valid host name")
	}
	return out, nil
}

// isCanonicalASCII reports whether h is already lower-case LDH(+underscore)
// labels of 1-63 bytes, with no trailing dot.
func isCanonicalASCII(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
			label++
		case c == '-':
			if label == 0 {
				return false
			}
			label++
		case c == '.':
			if label == 0 || h[i-1] == '-' {
				return false
			}
			label = 0
		default:
			return false
		}
		if label > 63 {
			return false
		}
	}
	return label > 0 && h[len(h)-1] != '-'
}

// hostSet matches names against exact entries and wildcard suffixes.
// A wildcard "*.a.com" matches every name below a.com at any depth
// ("x.a.com", "y.x.a.com") but not "a.com" itself: list both to allow both.
type hostSet struct {
	exact  map[string]string // canonical name -> origin
	suffix map[string]string // suffix of a wildcard -> origin
	addrs  map[netip.Addr]string
}

func newHostSet() *hostSet {
	return &hostSet{exact: map[string]string{}, suffix: map[string]string{}, addrs: map[netip.Addr]string{}}
}

func (s *hostSet) add(p HostPattern, origin string) {
	switch {
	case p.Addr.IsValid():
		if _, ok := s.addrs[p.Addr]; !ok {
			s.addrs[p.Addr] = origin
		}
	case p.Wildcard:
		if _, ok := s.suffix[p.Name]; !ok {
			s.suffix[p.Name] = origin
		}
	default:
		if _, ok := s.exact[p.Name]; !ok {
			s.exact[p.Name] = origin
		}
	}
}

// matchName reports the origin of the entry that allows the canonical name.
func (s *hostSet) matchName(name string) (string, bool) {
	if o, ok := s.exact[name]; ok {
		return o, true
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			if o, ok := s.suffix[name[i+1:]]; ok {
				return o, true
			}
		}
	}
	return "", false
}
