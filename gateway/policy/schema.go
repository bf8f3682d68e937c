// Package policy owns storegate's policy file: its schema (version 1), strict
// decoding and validation with messages that name the key and line, the
// presets compiled into the binary, and the immutable Snapshot that request
// handling reads.
package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// File is the policy file as written by a user: plain data, no live state.
// Every key is optional except version; zero values mean the defaults that
// Defaults fills in.
type File struct {
	Version                   int         `yaml:"version"`
	ListenAddress             string      `yaml:"listen_address"`
	ListenPort                int         `yaml:"listen_port"`
	AdminAddress              string      `yaml:"admin_address"`
	AllowedHosts              []string    `yaml:"allowed_hosts"`
	AllowedPorts              []int       `yaml:"allowed_ports"`
	AllowedNetworks           []string    `yaml:"allowed_networks"`
	Presets                   []string    `yaml:"presets"`
	AllowedClientCertificates []string    `yaml:"allowed_client_certificates"`
	RelayProxy                Relay       `yaml:"relay_proxy"`
	TLS                       TLS         `yaml:"tls"`
	TLSListener               TLSListener `yaml:"tls_listener"`
	Spool                     Spool       `yaml:"spool"`
	Link                      Link        `yaml:"link"`
	Console                   Console     `yaml:"console"`
	Limits                    Limits      `yaml:"limits"`
	Events                    Events      `yaml:"events"`
	Network                   Network     `yaml:"network"`
	Reload                    Reload      `yaml:"reload"`
}

// Relay is the upstream proxy the gateway sends its own traffic through.
type Relay struct {
	Address        string `yaml:"address"` // http://host:port or https://host:port; empty: connect directly
	Username       string `yaml:"username"`
	Password       string `yaml:"password"`      // for parity with the original; prefer password_file
	PasswordFile   string `yaml:"password_file"` // first line is the password
	ClientCertFile string `yaml:"client_cert_file"`
	ClientKeyFile  string `yaml:"client_key_file"`
	CAFile         string `yaml:"ca_file"`
}

// TLS holds the handshake checks and the roots for connections the gateway makes.
type TLS struct {
	Inspect    *bool  `yaml:"inspect"`     // read the handshake inside tunnels; default true
	MinVersion string `yaml:"min_version"` // "1.0", "1.1", "1.2" (default) or "1.3"
	CAFile     string `yaml:"ca_file"`
	// RequireSNIMatch refuses a tunnel whose ClientHello names another host
	// than the CONNECT (domain fronting). Default true.
	RequireSNIMatch *bool `yaml:"require_sni_match"`
	// TLS13ClientCert says what to do when allowed_client_certificates is set
	// but the session is TLS 1.3, whose certificate is encrypted: "refuse"
	// (default) or "allow" (with an event saying it was not observable).
	TLS13ClientCert string `yaml:"tls13_client_cert"`
	// RawTCPHosts may carry non-TLS bytes on allowed ports.
	RawTCPHosts []string `yaml:"raw_tcp_hosts"`
	// HandshakeTimeout bounds the inspection. Default 10s.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
}

// TLSListener is the optional HTTPS proxy listener beside the plain one.
type TLSListener struct {
	Port         int    `yaml:"port"` // 0: off
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Spool is the store-and-forward queue.
type Spool struct {
	Dir             string   `yaml:"dir"`
	MaxBytes        ByteSize `yaml:"max_bytes"`
	MaxAge          Duration `yaml:"max_age"`
	MaxMessageBytes ByteSize `yaml:"max_message_bytes"`
	Overflow        string   `yaml:"overflow"` // "refuse" (default) or "drop-oldest"
	// DeadLetterMaxBytes bounds the dead-letter area; the oldest go first.
	DeadLetterMaxBytes ByteSize `yaml:"dead_letter_max_bytes"`
	Disabled           bool     `yaml:"disabled"`
}

// Link is uplink awareness.
type Link struct {
	ProbeHost     string   `yaml:"probe_host"`
	ProbeInterval Duration `yaml:"probe_interval"`
	Hold          Duration `yaml:"hold"` // how long a CONNECT waits during an outage
}

// Console is the serial console.
type Console struct {
	Device       string `yaml:"device"`
	Baud         int    `yaml:"baud"`
	AllowChanges bool   `yaml:"allow_changes"`
}

// Limits bound what one client or all clients can hold.
type Limits struct {
	HeaderTimeout        Duration `yaml:"header_timeout"`
	MaxHeaderBytes       ByteSize `yaml:"max_header_bytes"`
	MaxHeaders           int      `yaml:"max_headers"`
	DialTimeout          Duration `yaml:"dial_timeout"`
	IdleTimeout          Duration `yaml:"idle_timeout"`
	MaxConnections       int      `yaml:"max_connections"`
	MaxConnectionsClient int      `yaml:"max_connections_per_client"`
	ShutdownGrace        Duration `yaml:"shutdown_grace"`
	// MaxProcs bounds the OS threads running Go code at once (GOMAXPROCS).
	// 0 means automatic: one less than the CPUs, at least one, leaving a
	// core to the kernel's network work. Measured on a 2-core box, one
	// scheduler thread moves more bytes per CPU-second than two.
	MaxProcs int `yaml:"max_procs"`
}

// Events configures the event log.
type Events struct {
	Format   string `yaml:"format"`   // "json" (default) or "logfmt"
	Language string `yaml:"language"` // "en" (default)
	Tunnels  *bool  `yaml:"tunnels"`  // one summary line per tunnel; default true
}

// Network is used by the firmware's init only: how the box gets its address.
type Network struct {
	DHCP      *bool    `yaml:"dhcp"` // default true
	Interface string   `yaml:"interface"`
	Address   string   `yaml:"address"` // CIDR, for static addressing
	Gateway   string   `yaml:"gateway"`
	DNS       []string `yaml:"dns"`
}

// Reload says how a new policy treats tunnels that are already open.
type Reload struct {
	// Established is "keep" (default: open tunnels run until they end) or
	// "close" (tunnels whose target the new policy refuses are closed).
	Established string `yaml:"established"`
}

// Duration is a time.Duration written as "10s", "5m", "72h".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML accepts Go duration strings and also "3d" for days.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 10s, 5m or 72h", n.Line)
	}
	s := strings.TrimSpace(n.Value)
	if strings.HasSuffix(s, "d") {
		days, err := strconv.ParseFloat(strings.TrimSuffix(s, "d"), 64)
		if err != nil || days < 0 || days > 3650 {
			return fmt.Errorf("line %d: %q is not a duration; write it as 10s, 5m, 72h or 3d", n.Line, s)
		}
		*d = Duration(days * float64(24*time.Hour))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration; write it as 10s, 5m, 72h or 3d", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// String writes the duration the way a user would: 72h, 1h30m, 5m, 10s
// (Go's own form, without the trailing zero units of 72h0m0s).
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalYAML writes the duration the way a user would.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ByteSize is a size written as "256MiB", "64KiB", "1GB" or plain bytes.
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseByteSize parses "256MiB", "10MB", "4096".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	num := s
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult, num = u.mult, strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || v*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("%q is not a size; write it as 4096, 64KiB, 256MiB or 1GiB", s)
	}
	return ByteSize(v * float64(mult)), nil
}

// UnmarshalYAML accepts a plain number of bytes or a number with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a size such as 64KiB or 256MiB", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*b = v
	return nil
}

// String writes the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(b) >= u.m && int64(b)%u.m == 0 {
			return strconv.FormatInt(int64(b)/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalYAML writes the size the way a user would.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }
