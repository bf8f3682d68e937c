// Package console is the serial-console diagnostics session: a line editor for
// dumb terminals, read-only commands over a Provider, and the device loop.
package console

import (
	"context"
	"time"

	"github.com/storegate/storegate/device/netcheck"
)

// Status is the gateway's state as the console's "status" command and
// `storegate status` show it. Its JSON form is what the admin endpoint serves
// on GET /status (the same field names as gateway.Status), so the console and
// the command line print the same thing.
type Status struct {
	Version         string   `json:"version"`
	UptimeSeconds   int64    `json:"uptime_seconds"`
	Listen          string   `json:"listen"`
	TLSListen       string   `json:"tls_listen,omitempty"`
	Admin           string   `json:"admin"`
	PolicyFile      string   `json:"policy_file"`
	PolicyHash      string   `json:"policy_hash"`      // sha256 of the file, hex
	PolicyLoadedAt  string   `json:"policy_loaded_at"` // RFC 3339
	LastReloadError string   `json:"last_reload_error,omitempty"`
	Relay           string   `json:"relay"` // "direct" or the address, credentials masked
	Link            string   `json:"link"`  // "up", "down" or "unknown"
	ActiveTunnels   int64    `json:"active_tunnels"`
	SpoolDepth      int64    `json:"spool_depth"`
	Counters        Counters `json:"counters"`
}

// Counters maps a counter's name to its value. Decoding JSON flattens nested
// objects: {"refusals_total":{"host":3}} becomes "refusals_total{host}" = 3.
type Counters map[string]float64

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
	Relay              string // "direct" or the address, credentials masked
	AllowChanges       bool   // console.allow_changes; no console command changes anything yet
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
	Counters() Counters
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
