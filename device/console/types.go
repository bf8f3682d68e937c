// Package console is the serial-console diagnostics session: a line editor for
// dumb terminals, read-only commands over a Provider, and the device loop.
package console

import (
	"context"
	"time"

	"github.com/storegate/storegate/device/netcheck"
)

// Status is the gateway's state as the console's "status" command and
// `storegate status` show it. It is also the JSON the admin endpoint serves on
// GET /status, so the field names are part of the interface.
type Status struct {
	Version         string             `json:"version"`
	UptimeSeconds   int64              `json:"uptime_seconds"`
	Listen          string             `json:"listen"`      // host:port of the proxy listener(s), comma separated
	Admin           string             `json:"admin"`       // admin endpoint host:port, or "off"
	PolicyFile      string             `json:"policy_file"` // path, or "(embedded default)"
	PolicyHash      string             `json:"policy_hash"` // sha256 of the file, hex
	PolicyLoadedAt  time.Time          `json:"policy_loaded_at"`
	LastReloadError string             `json:"last_reload_error"` // empty when the last reload succeeded
	Relay           RelayStatus        `json:"relay"`
	Link            string             `json:"link"` // "up", "down" or "unknown"
	ActiveTunnels   int64              `json:"active_tunnels"`
	SpoolDepth      int64              `json:"spool_depth"` // messages waiting
	Counters        map[string]float64 `json:"counters"`    // metric name (with labels) -> value, as on /metrics
}

// RelayStatus describes the upstream path without its secret. Address must
// not carry credentials; the console strips any it finds anyway.
type RelayStatus struct {
	Address     string `json:"address"` // "" means direct
	Username    string `json:"username"`
	PasswordSet bool   `json:"password_set"` // the password itself is never served or shown
}

// HostEntry is one allowed host pattern and where it came from ("policy",
// "preset log-analytics", ...).
type HostEntry struct {
	Pattern string
	Origin  string
}

// PolicyView is the policy in force, as the "policy" command shows it.
type PolicyView struct {
	File               string
	Hash               string
	LoadedAt           time.Time
	LastReloadError    string
	Hosts              []HostEntry
	Ports              []int
	Networks           []string
	ClientCertificates []string
	MinTLSVersion      string
	Relay              RelayStatus
	AllowChanges       bool // console.allow_changes; no console command changes anything yet
}

// SpoolView is the store-and-forward queue. A zero Dir means the spool is off.
type SpoolView struct {
	Dir         string
	Messages    int64
	Bytes       int64
	MaxBytes    int64
	Oldest      time.Duration // age of the oldest waiting message
	MaxAge      time.Duration
	DeadLetters int64
	Delivered   int64
	Dropped     int64
	LastError   string
}

// LinkView is the WAN link as the gateway sees it.
type LinkView struct {
	State       string // "up", "down" or "unknown"
	Via         string // "direct" or the relay address (no credentials)
	Since       time.Time
	LastProbe   time.Time
	ProbeTarget string
	LastError   string
}

// Provider is everything the console reads. The gateway implements it (the
// console never imports the gateway); every method must return promptly and
// must never return secrets. Recent and Follow have the signatures of
// *events.Log, so a provider can embed one.
type Provider interface {
	Status() Status
	Counters() map[string]float64
	Policy() PolicyView
	Spool() SpoolView
	Link() LinkView
	// Recent returns up to n of the latest event lines (JSON), oldest first.
	Recent(n int) []string
	// Follow delivers event lines from now on until cancel is called; a slow
	// reader misses lines rather than slowing the gateway.
	Follow(buffer int) (lines <-chan []byte, cancel func())
	// Check runs the connectivity check through the gateway's configured path.
	Check(ctx context.Context, host string, port int) netcheck.Report
}
