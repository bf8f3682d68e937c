package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/storegate/storegate/gateway/metrics"
)

// stats are the gateway's counters. All are updated with atomics except the
// refusal map, which is touched only on refusals.
type stats struct {
	active     atomic.Int64
	errors     atomic.Uint64
	rejections atomic.Uint64
	tunnels    atomic.Uint64
	bytesUp    atomic.Uint64
	bytesDown  atomic.Uint64
	// TLS handshakes completed, [0] full and [1] resumed: on the TLS
	// listener (a regional gateway's stores) and to an https:// relay.
	listenerTLS [2]atomic.Uint64
	relayTLS    [2]atomic.Uint64

	mu       sync.Mutex
	refusals map[string]uint64
}

// Counters is a copy of the gateway's counters.
type Counters struct {
	ActiveClientConnections int64             `json:"active_client_connections"`
	ConnectedClients        int               `json:"connected_clients"`
	Errors                  uint64            `json:"errors_total"`
	Rejections              uint64            `json:"rejections_total"`
	Tunnels                 uint64            `json:"tunnels_total"`
	BytesUp                 uint64            `json:"bytes_up_total"`
	BytesDown               uint64            `json:"bytes_down_total"`
	Refusals                map[string]uint64 `json:"refusals_total"`
	PolicyReloadErrors      uint64            `json:"policy_reload_errors_total"`
	// TLS handshakes on the TLS listener and to an https:// relay, and how
	// many of them resumed an earlier session.
	ListenerHandshakes uint64 `json:"tls_listener_handshakes_total"`
	ListenerResumed    uint64 `json:"tls_listener_resumed_total"`
	RelayHandshakes    uint64 `json:"relay_tls_handshakes_total"`
	RelayResumed       uint64 `json:"relay_tls_resumed_total"`
}

// countHandshake counts a completed TLS handshake in hs ([0] full, [1] resumed).
func countHandshake(hs *[2]atomic.Uint64, resumed bool) {
	if resumed {
		hs[1].Add(1)
	} else {
		hs[0].Add(1)
	}
}

// Counters returns the current counters.
func (s *Server) Counters() Counters {
	c := Counters{
		ActiveClientConnections: s.stats.active.Load(),
		Errors:                  s.stats.errors.Load(),
		Rejections:              s.stats.rejections.Load(),
		Tunnels:                 s.stats.tunnels.Load(),
		BytesUp:                 s.stats.bytesUp.Load(),
		BytesDown:               s.stats.bytesDown.Load(),
		Refusals:                map[string]uint64{},
		ListenerResumed:         s.stats.listenerTLS[1].Load(),
		RelayResumed:            s.stats.relayTLS[1].Load(),
	}
	c.ListenerHandshakes = s.stats.listenerTLS[0].Load() + c.ListenerResumed
	c.RelayHandshakes = s.stats.relayTLS[0].Load() + c.RelayResumed
	s.mu.Lock()
	c.ConnectedClients = len(s.clients)
	c.PolicyReloadErrors = s.reload.errors
	s.mu.Unlock()
	s.stats.mu.Lock()
	for k, v := range s.stats.refusals {
		c.Refusals[k] = v
	}
	s.stats.mu.Unlock()
	return c
}

// Status is what /status serves and what `storegate status` and the serial
// console print. Secrets never appear in it.
type Status struct {
	Version         string   `json:"version"`
	UptimeSeconds   int64    `json:"uptime_seconds"`
	Listen          string   `json:"listen"`
	TLSListen       string   `json:"tls_listen,omitempty"`
	Admin           string   `json:"admin"`
	PolicyFile      string   `json:"policy_file"`
	PolicyHash      string   `json:"policy_hash"`
	PolicyLoadedAt  string   `json:"policy_loaded_at"`
	LastReloadError string   `json:"last_reload_error,omitempty"`
	Relay           string   `json:"relay"`
	Link            string   `json:"link"`
	ActiveTunnels   int64    `json:"active_tunnels"`
	SpoolDepth      int64    `json:"spool_depth"`
	Counters        Counters `json:"counters"`
}

// RelayDisplay shows a relay address with credentials masked.
func RelayDisplay(address, username string) string {
	if address == "" {
		return "direct"
	}
	u, err := url.Parse(address)
	if err != nil {
		return "(invalid address)"
	}
	u.User = nil
	out := u.String()
	if username != "" {
		out += " (user " + username + ", password ****)"
	}
	return out
}

// Status reports the gateway's state.
func (s *Server) Status() Status {
	snap := s.policy.Load()
	st := Status{
		Version:       s.cfg.Version,
		UptimeSeconds: int64(s.cfg.Now().Sub(s.started).Seconds()),
		Link:          "up",
		Counters:      s.Counters(),
	}
	st.ActiveTunnels = st.Counters.ActiveClientConnections
	if a := s.Addr("proxy"); a != nil {
		st.Listen = a.String()
	}
	if a := s.Addr("tls"); a != nil {
		st.TLSListen = a.String()
	}
	if a := s.Addr("admin"); a != nil {
		st.Admin = a.String()
	}
	if snap != nil {
		st.PolicyFile = snap.Source
		st.PolicyHash = snap.Hash
		st.PolicyLoadedAt = snap.LoadedAt.UTC().Format(time.RFC3339)
		st.Relay = RelayDisplay(snap.File.RelayProxy.Address, snap.File.RelayProxy.Username)
	}
	s.mu.Lock()
	st.LastReloadError = s.reload.lastErr
	s.mu.Unlock()
	if s.cfg.SpoolStatus != nil {
		st.SpoolDepth, st.Link = s.cfg.SpoolStatus()
	}
	return st
}

// ReloadFailed records a policy file on disk that was refused; the policy in
// force stays. /readyz, /status and the metrics show it until a reload works.
func (s *Server) ReloadFailed(err error, diskHash string) {
	s.mu.Lock()
	s.reload.errors++
	s.reload.lastErr = err.Error()
	s.reload.diskHash = diskHash
	s.mu.Unlock()
}

// ReloadSucceeded clears the reload error.
func (s *Server) ReloadSucceeded() {
	s.mu.Lock()
	s.reload.lastErr, s.reload.diskHash = "", ""
	s.reload.lastSuccess = s.cfg.Now()
	s.mu.Unlock()
}

// AdminHandler serves /metrics, /healthz, /readyz and /status.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		var b bytes.Buffer
		s.WriteMetrics(&b)
		_, _ = w.Write(b.Bytes())
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ready, detail := s.Ready()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = io.WriteString(w, detail)
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Status())
	})
	return mux
}

// Ready reports whether a load balancer should send traffic here, with a
// human-readable explanation.
func (s *Server) Ready() (bool, string) {
	snap := s.policy.Load()
	var b bytes.Buffer
	ready := true
	s.mu.Lock()
	draining, proxy := s.draining, s.listeners["proxy"] != nil
	lastErr, diskHash := s.reload.lastErr, s.reload.diskHash
	s.mu.Unlock()
	switch {
	case draining:
		ready = false
		b.WriteString("not ready: shutting down\n")
	case snap == nil || !proxy:
		ready = false
		b.WriteString("not ready: no proxy listener\n")
	default:
		b.WriteString("ready\n")
	}
	if snap != nil {
		fmt.Fprintf(&b, "policy: %s sha256:%s\n", snap.Source, snap.Hash)
	}
	if lastErr != "" {
		fmt.Fprintf(&b, "policy on disk refused (sha256:%s), last good policy in force: %s\n", diskHash, lastErr)
	}
	if s.cfg.SpoolStatus != nil {
		_, link := s.cfg.SpoolStatus()
		fmt.Fprintf(&b, "link: %s\n", link)
	}
	return ready, b.String()
}

// WriteMetrics writes every series in the Prometheus text format.
func (s *Server) WriteMetrics(w io.Writer) {
	c := s.Counters()
	m := metrics.NewWriter(w)
	m.Gauge("storegate_active_client_connections", "Open client connections (TCP), tunnels included.", float64(c.ActiveClientConnections))
	m.Gauge("storegate_connected_clients", "Distinct client addresses with an open connection.", float64(c.ConnectedClients))
	m.Counter("storegate_errors_total", "Errors (events 400-403).", float64(c.Errors))
	m.Counter("storegate_rejections_total", "Refusals by policy, including TLS validation failures.", float64(c.Rejections))
	m.Counter("storegate_tunnels_total", "Tunnels established.", float64(c.Tunnels))
	m.CounterVec("storegate_tunnel_bytes_total", "Bytes relayed through tunnels.", "direction",
		[]string{"up", "down"}, []float64{float64(c.BytesUp), float64(c.BytesDown)})
	keys := make([]string, 0, len(c.Refusals))
	for k := range c.Refusals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := make([]float64, len(keys))
	for i, k := range keys {
		vals[i] = float64(c.Refusals[k])
	}
	m.CounterVec("storegate_refusals_total", "Refused requests by reason.", "reason", keys, vals)
	m.CounterVec("storegate_tls_listener_handshakes_total", "TLS handshakes completed on the TLS listener, by whether they resumed a session.", "resumed",
		[]string{"false", "true"}, []float64{float64(c.ListenerHandshakes - c.ListenerResumed), float64(c.ListenerResumed)})
	m.CounterVec("storegate_relay_tls_handshakes_total", "TLS handshakes completed with an https:// relay, by whether they resumed a session.", "resumed",
		[]string{"false", "true"}, []float64{float64(c.RelayHandshakes - c.RelayResumed), float64(c.RelayResumed)})
	snap := s.policy.Load()
	s.mu.Lock()
	r := s.reload
	s.mu.Unlock()
	m.Counter("storegate_policy_reload_errors_total", "Policy files refused on reload.", float64(r.errors))
	if !r.lastSuccess.IsZero() {
		m.Gauge("storegate_policy_last_reload_success_timestamp_seconds", "When a policy was last put in force by a reload.", float64(r.lastSuccess.Unix()))
	}
	if snap != nil {
		m.Gauge("storegate_policy_loaded_timestamp_seconds", "When the policy in force was loaded.", float64(snap.LoadedAt.Unix()))
		inForce := 1.0
		if r.lastErr != "" {
			inForce = 0
		}
		m.GaugeLabels("storegate_policy_info", "The policy in force; disk_matches is 0 when the file on disk was refused.",
			[]string{"source", "sha256", "disk_matches"}, []string{snap.Source, snap.Hash, strconv.Itoa(int(inForce))}, 1)
	}
	m.Gauge("storegate_uptime_seconds", "Seconds since start.", s.cfg.Now().Sub(s.started).Seconds())
	m.Process()
	if s.cfg.SpoolMetrics != nil {
		s.cfg.SpoolMetrics(w)
	}
}
