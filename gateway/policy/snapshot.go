package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/storegate/storegate/gateway/tlspeek"
)

// Snapshot is a compiled, immutable policy. Request handling reads it through
// an atomic pointer; a reload builds a new one and never touches the old.
type Snapshot struct {
	File     *File  // the decoded file with defaults; read-only
	Source   string // path, or DefaultSource
	Hash     string // sha256 of the file's bytes, hex
	LoadedAt time.Time

	hosts                  *hostSet
	rawTCP                 *hostSet
	ports                  map[int]bool
	networks               []netip.Prefix
	minTLS                 uint16
	password               string // relay password, resolved from password_file; never printed
	subjects               *tlspeek.Subjects
	relayScheme, relayHost string // relay_proxy.address, parsed once
}

// OriginPolicy is the origin of an allowed host entry written in the policy
// file; a preset's entries have the origin "preset:NAME".
const OriginPolicy = "policy"

// Compile builds a Snapshot from a validated File. data is the file's bytes
// (for the hash). It reads relay_proxy.password_file.
func Compile(f *File, data []byte, source string, now time.Time) (*Snapshot, error) {
	sum := sha256.Sum256(data)
	s := &Snapshot{
		File:     f,
		Source:   source,
		Hash:     hex.EncodeToString(sum[:]),
		LoadedAt: now,
		hosts:    newHostSet(),
		rawTCP:   newHostSet(),
		ports:    make(map[int]bool, len(f.AllowedPorts)),
		minTLS:   TLSVersions[f.TLS.MinVersion],
	}
	for _, h := range f.AllowedHosts {
		p, err := ParseHostPattern(h)
		if err != nil {
			return nil, err
		}
		s.hosts.add(p, OriginPolicy)
	}
	for _, name := range f.Presets {
		pr, _ := presetByName(name)
		for _, h := range pr.Hosts {
			p, err := ParseHostPattern(h)
			if err != nil {
				return nil, fmt.Errorf("preset %s: %v", name, err)
			}
			s.hosts.add(p, "preset:"+name)
		}
	}
	for _, h := range f.TLS.RawTCPHosts {
		p, _ := ParseHostPattern(h)
		s.rawTCP.add(p, OriginPolicy)
	}
	for _, p := range f.AllowedPorts {
		s.ports[p] = true
	}
	for _, n := range f.AllowedNetworks {
		p, _ := parseNetwork(n)
		s.networks = append(s.networks, p)
	}
	subj, err := tlspeek.ParseSubjects(f.AllowedClientCertificates)
	if err != nil {
		return nil, &Error{File: source, Key: "allowed_client_certificates", Msg: err.Error()}
	}
	s.subjects = subj
	if a := f.RelayProxy.Address; a != "" {
		u, err := url.Parse(a)
		if err != nil || u.Host == "" {
			return nil, &Error{File: source, Key: "relay_proxy.address", Msg: "want http://host:port or https://host:port"}
		}
		s.relayScheme, s.relayHost = u.Scheme, u.Host
	}
	s.password = f.RelayProxy.Password
	if pf := f.RelayProxy.PasswordFile; pf != "" {
		b, err := os.ReadFile(pf)
		if err != nil {
			return nil, &Error{File: source, Key: "relay_proxy.password_file", Msg: "cannot read: " + unwrapPathErr(err)}
		}
		s.password = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	}
	return s, nil
}

// Default compiles the embedded default policy.
func Default(now time.Time) *Snapshot {
	f, err := Parse(defaultYAML, DefaultSource)
	if err != nil {
		panic("embedded default policy is invalid: " + err.Error()) // caught by tests
	}
	s, err := Compile(f, defaultYAML, DefaultSource, now)
	if err != nil {
		panic("embedded default policy does not compile: " + err.Error())
	}
	return s
}

// Load reads, validates and compiles a policy file in one step.
func Load(path string, now time.Time) (*Snapshot, error) {
	f, data, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	return Compile(f, data, path, now)
}

// RelayAddr is relay_proxy.address split into its scheme ("http" or
// "https") and host:port; both are "" when the policy names no relay.
func (s *Snapshot) RelayAddr() (scheme, hostport string) { return s.relayScheme, s.relayHost }

// RelayPassword returns the relay password. Callers must not log it.
func (s *Snapshot) RelayPassword() string { return s.password }

// ClientSubjects is the compiled allowed_client_certificates list.
func (s *Snapshot) ClientSubjects() *tlspeek.Subjects { return s.subjects }

// MinTLSVersion is the lowest TLS version allowed inside tunnels.
func (s *Snapshot) MinTLSVersion() uint16 { return s.minTLS }

// Refusal reasons, used in events, metrics labels and 403 bodies.
const (
	ReasonHost    = "host not allowed"
	ReasonPort    = "port not allowed"
	ReasonAddress = "address not allowed"
	ReasonSelf    = "destination is this gateway"
)

// ErrNotAllowed wraps every policy refusal.
var ErrNotAllowed = errors.New("not allowed")

// Refusal is a policy decision against a target.
type Refusal struct {
	Reason string
	Detail string
}

func (r *Refusal) Error() string {
	if r.Detail == "" {
		return r.Reason
	}
	return r.Reason + ": " + r.Detail
}

func (r *Refusal) Unwrap() error { return ErrNotAllowed }

// CheckTarget decides a CONNECT target by name and port only (no DNS). host
// must already be canonical (see NormalizeHost) or an IP literal. It returns
// the origin of the entry that allowed it, and whether the host is an IP
// literal that is itself listed (which exempts it from the address checks).
func (s *Snapshot) CheckTarget(host string, port int) (origin string, literal bool, err error) {
	if !s.ports[port] {
		return "", false, &Refusal{Reason: ReasonPort, Detail: fmt.Sprintf("%d", port)}
	}
	if a, ok := parseIP(host); ok {
		if o, ok := s.hosts.addrs[a]; ok {
			return o, true, nil
		}
		return "", false, &Refusal{Reason: ReasonHost, Detail: host}
	}
	if o, ok := s.hosts.matchName(host); ok {
		return o, false, nil
	}
	return "", false, &Refusal{Reason: ReasonHost, Detail: host}
}

// parseIP parses an IP literal without allocating for the common case of a
// host name (netip.ParseAddr allocates its error).
func parseIP(host string) (netip.Addr, bool) {
	if host == "" {
		return netip.Addr{}, false
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; c == ':' {
			break // IPv6
		} else if (c < '0' || c > '9') && c != '.' {
			return netip.Addr{}, false
		}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// AllowRawTCP reports whether host may carry non-TLS bytes on an allowed port.
func (s *Snapshot) AllowRawTCP(host string) bool {
	if a, ok := parseIP(host); ok {
		_, ok := s.rawTCP.addrs[a]
		return ok
	}
	_, ok := s.rawTCP.matchName(host)
	return ok
}

// CheckAddr decides whether a resolved address may be dialled. Addresses in
// special-purpose ranges are refused unless allowed_networks covers them.
func (s *Snapshot) CheckAddr(a netip.Addr) error {
	a = a.Unmap()
	for _, n := range s.networks {
		if n.Contains(a) {
			return nil
		}
	}
	if why := SpecialPurpose(a); why != "" {
		return &Refusal{Reason: ReasonAddress, Detail: a.String() + " is " + why}
	}
	return nil
}

var specialV4 = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified (this network)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT (RFC 6598)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private (RFC 1918)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private (RFC 1918)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking (RFC 2544)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (including broadcast)"},
}

var specialV6 = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64 (embeds IPv4)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local NAT64 (embeds IPv4)"},
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("2001::/32"), "Teredo (embeds IPv4)"},
	{netip.MustParsePrefix("2002::/16"), "6to4 (embeds IPv4)"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local (deprecated)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// SpecialPurpose names the special-purpose range an address is in, or "" for
// an ordinary public unicast address. IPv4-mapped IPv6 is judged as IPv4.
func SpecialPurpose(a netip.Addr) string {
	a = a.Unmap()
	if !a.IsValid() {
		return "invalid"
	}
	if a.Zone() != "" {
		return "scoped (has a zone)"
	}
	table := specialV6
	if a.Is4() {
		table = specialV4
	}
	for _, s := range table {
		if s.p.Contains(a) {
			return s.why
		}
	}
	return ""
}
