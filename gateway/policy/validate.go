package policy

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/storegate/storegate/gateway/tlspeek"
)

// Defaults of the keys a policy may leave out. They suit a small store box.
const (
	DefaultListenAddress    = "0.0.0.0"
	DefaultListenPort       = 8080
	DefaultAdminAddress     = "127.0.0.1:8081"
	DefaultHeaderTimeout    = 10 * time.Second
	DefaultMaxHeaderBytes   = 16 << 10
	DefaultMaxHeaders       = 64
	DefaultDialTimeout      = 10 * time.Second
	DefaultIdleTimeout      = 15 * time.Minute
	DefaultMaxConns         = 4096
	DefaultMaxConnsClient   = 256
	DefaultShutdownGrace    = 10 * time.Second
	DefaultSpoolDir         = "/var/lib/storegate/spool"
	DefaultSpoolMaxBytes    = 256 << 20
	DefaultSpoolMaxAge      = 72 * time.Hour
	DefaultSpoolMaxMessage  = 1 << 20
	DefaultSpoolDeadLetters = 32 << 20
	DefaultLinkHold         = 5 * time.Second
	DefaultProbeInterval    = 30 * time.Second
	DefaultHandshakeTimeout = tlspeek.DefaultTimeout
	DefaultBaud             = 115200
)

func (f *File) validate() Errors {
	var es Errors
	bad := func(key, value, format string, args ...any) {
		es = append(es, &Error{Key: key, Value: value, Msg: fmt.Sprintf(format, args...)})
	}
	if f.Version != 1 {
		bad("version", strconv.Itoa(f.Version), "%d is not a policy version this storegate reads; valid: 1", f.Version)
	}
	if f.ListenAddress != "" {
		if _, err := netip.ParseAddr(f.ListenAddress); err != nil {
			bad("listen_address", f.ListenAddress, "%q is not an IP address; use 0.0.0.0 for all IPv4 interfaces or :: for all", f.ListenAddress)
		}
	}
	if f.ListenPort < 0 || f.ListenPort > 65535 {
		bad("listen_port", strconv.Itoa(f.ListenPort), "%d is out of range; valid: 1-65535", f.ListenPort)
	}
	if f.AdminAddress != "" && f.AdminAddress != "off" {
		if err := checkHostPort(f.AdminAddress); err != nil {
			bad("admin_address", f.AdminAddress, "%q: %v; write it as 127.0.0.1:8081, or off", f.AdminAddress, err)
		}
	}
	for i, h := range f.AllowedHosts {
		if _, err := ParseHostPattern(h); err != nil {
			bad(fmt.Sprintf("allowed_hosts[%d]", i), h, "%v", err)
		}
	}
	for i, p := range f.AllowedPorts {
		if p < 1 || p > 65535 {
			bad(fmt.Sprintf("allowed_ports[%d]", i), strconv.Itoa(p), "%d is out of range; valid: 1-65535", p)
		}
	}
	for i, n := range f.AllowedNetworks {
		if _, err := parseNetwork(n); err != nil {
			bad(fmt.Sprintf("allowed_networks[%d]", i), n, "%q is not a network; write it in CIDR form such as 10.20.0.0/16 or fd00::/8", n)
		}
	}
	for i, p := range f.Presets {
		if _, ok := presetByName(p); !ok {
			bad(fmt.Sprintf("presets[%d]", i), p, "unknown preset %q; `storegate policy presets` lists them", p)
		}
	}
	for i, s := range f.AllowedClientCertificates {
		// ParseSubjects refuses an empty or blank entry too.
		if _, err := tlspeek.ParseSubjects([]string{s}); err != nil {
			bad(fmt.Sprintf("allowed_client_certificates[%d]", i), s, "%v; write CN=name,O=org or a bare common name", err)
		}
	}
	es = append(es, f.RelayProxy.validate()...)
	if v := f.TLS.MinVersion; v != "" {
		if _, ok := TLSVersions[v]; !ok {
			bad("tls.min_version", v, "%q is not a TLS version; valid: 1.0, 1.1, 1.2, 1.3", v)
		}
	}
	switch f.TLS.TLS13ClientCert {
	case "", "refuse", "allow":
	default:
		bad("tls.tls13_client_cert", f.TLS.TLS13ClientCert, "%q: valid: refuse, allow", f.TLS.TLS13ClientCert)
	}
	for i, h := range f.TLS.RawTCPHosts {
		if _, err := ParseHostPattern(h); err != nil {
			bad(fmt.Sprintf("tls.raw_tcp_hosts[%d]", i), h, "%v", err)
		}
	}
	if l := f.TLSListener; l.Port != 0 {
		if l.Port < 1 || l.Port > 65535 {
			bad("tls_listener.port", strconv.Itoa(l.Port), "%d is out of range; valid: 0 (off) or 1-65535", l.Port)
		}
		if l.CertFile == "" || l.KeyFile == "" {
			bad("tls_listener.cert_file", "", "a TLS listener needs cert_file and key_file")
		}
		if l.Port == f.ListenPort || (f.ListenPort == 0 && l.Port == DefaultListenPort) {
			bad("tls_listener.port", strconv.Itoa(l.Port), "%d is already listen_port", l.Port)
		}
	}
	switch f.Spool.Overflow {
	case "", "refuse", "drop-oldest":
	default:
		bad("spool.overflow", f.Spool.Overflow, "%q: valid: refuse, drop-oldest", f.Spool.Overflow)
	}
	if f.Spool.MaxBytes != 0 && f.Spool.MaxBytes < 1<<20 {
		bad("spool.max_bytes", f.Spool.MaxBytes.String(), "%s is too small; at least 1MiB", f.Spool.MaxBytes)
	}
	if f.Spool.MaxMessageBytes < 0 || (f.Spool.MaxBytes != 0 && f.Spool.MaxMessageBytes > f.Spool.MaxBytes) {
		bad("spool.max_message_bytes", f.Spool.MaxMessageBytes.String(), "must be between 1 byte and spool.max_bytes")
	}
	if f.Spool.DeadLetterMaxBytes != 0 && f.Spool.DeadLetterMaxBytes < 64<<10 {
		bad("spool.dead_letter_max_bytes", f.Spool.DeadLetterMaxBytes.String(), "%s is too small; at least 64KiB", f.Spool.DeadLetterMaxBytes)
	}
	if f.Link.ProbeHost != "" {
		if _, _, err := net.SplitHostPort(f.Link.ProbeHost); err != nil {
			if _, err := ParseHostPattern(f.Link.ProbeHost); err != nil || strings.HasPrefix(f.Link.ProbeHost, "*") {
				bad("link.probe_host", f.Link.ProbeHost, "%q is not a host or host:port", f.Link.ProbeHost)
			}
		}
	}
	if f.Link.Hold.D() > 5*time.Minute {
		bad("link.hold", f.Link.Hold.D().String(), "%s is too long; agents time out first (valid: 0-5m)", f.Link.Hold.D())
	}
	if b := f.Console.Baud; b != 0 && !validBaud(b) {
		bad("console.baud", strconv.Itoa(b), "%d is not a standard rate; valid: 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600", b)
	}
	l := f.Limits
	if l.MaxHeaderBytes != 0 && (l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20) {
		bad("limits.max_header_bytes", l.MaxHeaderBytes.String(), "%s is out of range; valid: 1KiB-1MiB", l.MaxHeaderBytes)
	}
	if l.MaxHeaders != 0 && (l.MaxHeaders < 8 || l.MaxHeaders > 1000) {
		bad("limits.max_headers", strconv.Itoa(l.MaxHeaders), "%d is out of range; valid: 8-1000", l.MaxHeaders)
	}
	if l.MaxConnections < 0 || l.MaxConnections > 1000000 {
		bad("limits.max_connections", strconv.Itoa(l.MaxConnections), "%d is out of range; valid: 1-1000000", l.MaxConnections)
	}
	if l.MaxConnectionsClient < 0 || l.MaxConnectionsClient > 1000000 {
		bad("limits.max_connections_per_client", strconv.Itoa(l.MaxConnectionsClient), "%d is out of range; valid: 1-1000000", l.MaxConnectionsClient)
	}
	if l.MaxProcs < 0 || l.MaxProcs > 1024 {
		bad("limits.max_procs", strconv.Itoa(l.MaxProcs), "%d is out of range; valid: 0 (automatic) or 1-1024", l.MaxProcs)
	}
	switch f.Events.Format {
	case "", "json":
	default:
		bad("events.format", f.Events.Format, "%q: valid: json", f.Events.Format)
	}
	switch f.Events.Language {
	case "", "en", "sv":
	default:
		bad("events.language", f.Events.Language, "%q: valid: en, sv", f.Events.Language)
	}
	if f.Network.Address != "" {
		if _, err := netip.ParsePrefix(f.Network.Address); err != nil {
			bad("network.address", f.Network.Address, "%q is not an address in CIDR form such as 192.168.1.20/24", f.Network.Address)
		}
	}
	if f.Network.Gateway != "" {
		if _, err := netip.ParseAddr(f.Network.Gateway); err != nil {
			bad("network.gateway", f.Network.Gateway, "%q is not an IP address", f.Network.Gateway)
		}
	}
	for i, d := range f.Network.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			bad(fmt.Sprintf("network.dns[%d]", i), d, "%q is not an IP address", d)
		}
	}
	switch f.Reload.Established {
	case "", "keep", "close":
	default:
		bad("reload.established", f.Reload.Established, "%q: valid: keep, close", f.Reload.Established)
	}
	return es
}

func (r Relay) validate() Errors {
	var es Errors
	if r.Address == "" {
		if r.Username != "" || r.Password != "" || r.PasswordFile != "" {
			es = append(es, &Error{Key: "relay_proxy.username", Msg: "credentials without relay_proxy.address; set the address or clear them"})
		}
		return es
	}
	u, err := url.Parse(r.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" {
		return append(es, &Error{Key: "relay_proxy.address", Value: r.Address, Msg: "want http://host:port or https://host:port"})
	}
	if u.User != nil {
		es = append(es, &Error{Key: "relay_proxy.address", Msg: "put credentials in username and password_file, not in the address"})
	}
	if u.Path != "" && u.Path != "/" {
		es = append(es, &Error{Key: "relay_proxy.address", Value: r.Address, Msg: "a proxy address has no path; want http://host:port"})
	}
	if r.Password != "" && r.PasswordFile != "" {
		es = append(es, &Error{Key: "relay_proxy.password", Msg: "set password or password_file, not both"})
	}
	if (r.ClientCertFile == "") != (r.ClientKeyFile == "") {
		es = append(es, &Error{Key: "relay_proxy.client_cert_file", Msg: "client_cert_file and client_key_file go together"})
	}
	if u.Scheme == "http" && r.ClientCertFile != "" {
		es = append(es, &Error{Key: "relay_proxy.client_cert_file", Msg: "a client certificate needs an https:// relay"})
	}
	return es
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return fmt.Errorf("host must be an IP address")
		}
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port must be 1-65535")
	}
	return nil
}

func validBaud(b int) bool {
	switch b {
	case 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600:
		return true
	}
	return false
}

func parseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// TLSVersions maps the policy's version names to wire versions.
var TLSVersions = map[string]uint16{
	"1.0": tlspeek.VersionTLS10, "1.1": tlspeek.VersionTLS11, "1.2": tlspeek.VersionTLS12, "1.3": tlspeek.VersionTLS13,
}

func (f *File) fillDefaults() {
	if f.ListenAddress == "" {
		f.ListenAddress = DefaultListenAddress
	}
	if f.ListenPort == 0 {
		f.ListenPort = DefaultListenPort
	}
	if f.AdminAddress == "" {
		f.AdminAddress = DefaultAdminAddress
	}
	if len(f.AllowedPorts) == 0 {
		f.AllowedPorts = []int{443}
	}
	if f.TLS.MinVersion == "" {
		f.TLS.MinVersion = "1.2"
	}
	if f.TLS.TLS13ClientCert == "" {
		f.TLS.TLS13ClientCert = "refuse"
	}
	if f.TLS.HandshakeTimeout == 0 {
		f.TLS.HandshakeTimeout = Duration(DefaultHandshakeTimeout)
	}
	if f.Spool.Dir == "" {
		f.Spool.Dir = DefaultSpoolDir
	}
	if f.Spool.MaxBytes == 0 {
		f.Spool.MaxBytes = DefaultSpoolMaxBytes
	}
	if f.Spool.MaxAge == 0 {
		f.Spool.MaxAge = Duration(DefaultSpoolMaxAge)
	}
	if f.Spool.MaxMessageBytes == 0 {
		f.Spool.MaxMessageBytes = DefaultSpoolMaxMessage
	}
	if f.Spool.DeadLetterMaxBytes == 0 {
		f.Spool.DeadLetterMaxBytes = DefaultSpoolDeadLetters
	}
	if f.Spool.Overflow == "" {
		f.Spool.Overflow = "refuse"
	}
	if f.Link.Hold == 0 {
		f.Link.Hold = Duration(DefaultLinkHold)
	}
	if f.Link.ProbeInterval == 0 {
		f.Link.ProbeInterval = Duration(DefaultProbeInterval)
	}
	if f.Console.Baud == 0 {
		f.Console.Baud = DefaultBaud
	}
	l := &f.Limits
	if l.HeaderTimeout == 0 {
		l.HeaderTimeout = Duration(DefaultHeaderTimeout)
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders == 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	if l.DialTimeout == 0 {
		l.DialTimeout = Duration(DefaultDialTimeout)
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if l.MaxConnections == 0 {
		l.MaxConnections = DefaultMaxConns
	}
	if l.MaxConnectionsClient == 0 {
		l.MaxConnectionsClient = DefaultMaxConnsClient
	}
	if l.ShutdownGrace == 0 {
		l.ShutdownGrace = Duration(DefaultShutdownGrace)
	}
	if f.Events.Format == "" {
		f.Events.Format = "json"
	}
	if f.Events.Language == "" {
		f.Events.Language = "en"
	}
	if f.Reload.Established == "" {
		f.Reload.Established = "keep"
	}
}

// Switches fills the optional switches a file leaves unset with the values
// the gateway applies for them (all four default to on), for views of the
// policy in force such as `storegate config get`.
func (f *File) Switches() {
	for _, p := range []**bool{&f.TLS.Inspect, &f.TLS.RequireSNIMatch, &f.Events.Tunnels, &f.Network.DHCP} {
		if *p == nil {
			on := true
			*p = &on
		}
	}
}

// On reports a *bool policy switch with its default.
func On(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}
