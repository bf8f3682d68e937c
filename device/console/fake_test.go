package console

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/storegate/storegate/device/netcheck"
	"github.com/storegate/storegate/gateway/events"
)

var fixedNow = time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)

// fakeProvider serves fixed data and a real events.Log.
type fakeProvider struct {
	*events.Log
	mu       sync.Mutex
	checked  []string
	statuses int
}

func newFakeProvider(t testing.TB) *fakeProvider {
	t.Helper()
	tick := fixedNow.Add(-10 * time.Minute)
	var mu sync.Mutex
	log := events.NewLog(io.Discard, events.Options{Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		tick = tick.Add(time.Second)
		return tick
	}})
	t.Cleanup(log.Close)
	log.Emit(events.Started, "service started", events.Str(events.KeyListen, "0.0.0.0:8080"), events.Str(events.KeyVersion, "1.2.3"))
	log.Emit(events.ConnectReceived, "tunnel closed", events.Str(events.KeyClient, "10.1.2.3:50000"), events.Str(events.KeyTarget, "we-agentservice-prod-1.azure-automation.net:443"), events.Int(events.KeyBytesUp, 5120), events.Int(events.KeyBytesDown, 80213), events.Int(events.KeyDurationMS, 812))
	log.Emit(events.NotAllowed, "target not allowed", events.Str(events.KeyClient, "10.1.2.4:50001"), events.Str(events.KeyTarget, "evil.example:443"), events.Str(events.KeyReason, "host not in allowlist"))
	log.Emit(events.BadConfig, "policy rejected; previous policy stays in force", events.Str(events.KeyFile, "/etc/storegate/policy.yaml"), events.Int(events.KeyLine, 7), events.Str(events.KeyError, "listen_port: 70000 is not 1-65535"))
	log.Emit(events.Info, "hostile \x1b[2J field", events.Str("note", "tab\there \u202e rtl"))
	deadline := time.Now().Add(10 * time.Second)
	for len(log.Recent(0)) < 5 {
		if time.Now().After(deadline) {
			t.Fatal("event log never recorded the seed events")
		}
		time.Sleep(time.Millisecond)
	}
	return &fakeProvider{Log: log}
}

func (f *fakeProvider) Status() Status {
	f.mu.Lock()
	f.statuses++
	f.mu.Unlock()
	return Status{
		Version:         "1.2.3",
		UptimeSeconds:   3*86400 + 4*3600 + 5*60 + 6,
		Listen:          "0.0.0.0:8080",
		Admin:           "127.0.0.1:8081",
		PolicyFile:      "/etc/storegate/policy.yaml",
		PolicyHash:      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		PolicyLoadedAt:  fixedNow.Add(-90 * time.Minute).Format(time.RFC3339),
		LastReloadError: "/etc/storegate/policy.yaml line 7: listen_port: 70000 is not 1-65535",
		Relay:           "http://pos:hunter2@proxy.corp.test:3128",
		Link:            "up",
		ActiveTunnels:   12,
		SpoolDepth:      3,
		Counters:        f.Counters(),
	}
}

func (f *fakeProvider) Counters() Counters {
	return Counters{
		"storegate_active_client_connections":                 12,
		"storegate_connected_clients":                         7,
		"storegate_errors_total":                              2,
		"storegate_rejections_total":                          41,
		"storegate_tunnels_total":                             10234,
		`storegate_tunnel_bytes_total{direction="up"}`:        123456789,
		`storegate_tunnel_bytes_total{direction="down"}`:      987654321,
		`storegate_refusals_total{reason="host_not_allowed"}`: 40,
		`storegate_refusals_total{reason="a_very_long_reason_name_that_does_not_fit_the_column"}`: 1,
		"storegate_spool_messages": 3,
	}
}

func (f *fakeProvider) Policy() PolicyView {
	return PolicyView{
		File:     "/etc/storegate/policy.yaml",
		Hash:     "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		LoadedAt: fixedNow.Add(-90 * time.Minute),
		Hosts: []HostEntry{
			{"example.com", "policy"},
			{"203.0.113.7", "policy"},
			{"*.ods.opinsights.azure.com", "preset log-analytics"},
			{"*.oms.opinsights.azure.com", "preset log-analytics"},
			{"we-jobruntimedata-prod-su1.azure-automation.net", "preset log-analytics"},
		},
		Ports:              []int{443, 8443},
		Networks:           []string{"10.20.0.0/16"},
		ClientCertificates: []string{"CN=pos-0001,O=Contoso"},
		MinTLSVersion:      "1.2",
		Relay:              "http://proxy.corp.test:3128 (user pos, password ****)",
	}
}

func (f *fakeProvider) Spool() SpoolView {
	return SpoolView{
		Dir: "/var/lib/storegate/spool", Messages: 3, Bytes: 48 << 10, MaxBytes: 256 << 20,
		Oldest: 95 * time.Second, MaxAge: 72 * time.Hour, DeadLetters: 1, Delivered: 5012, Dropped: 0,
		LastError: "POST https://x.ods.opinsights.azure.com/: 503 Service Unavailable",
	}
}

func (f *fakeProvider) Link() LinkView {
	return LinkView{
		State: "up", Via: "http://proxy.corp.test:3128", Since: fixedNow.Add(-2 * time.Hour),
		LastProbe: fixedNow.Add(-15 * time.Second), ProbeTarget: "global.handler.control.monitor.azure.com:443",
	}
}

func (f *fakeProvider) Check(_ context.Context, host string, port int) netcheck.Report {
	f.mu.Lock()
	f.checked = append(f.checked, net.JoinHostPort(host, strconv.Itoa(port)))
	f.mu.Unlock()
	return netcheck.Report{
		Host: host, Port: port, Via: "relay http://proxy.corp.test:3128",
		Steps: []netcheck.Step{
			{Name: netcheck.StepResolve, OK: true, Detail: "127.0.0.1", Duration: 1200 * time.Microsecond},
			{Name: netcheck.StepConnect, OK: true, Detail: "via relay http://proxy.corp.test:3128", Duration: 3 * time.Millisecond},
			{Name: netcheck.StepTLS, OK: true, Detail: "TLS 1.3 TLS_AES_128_GCM_SHA256", Duration: 14500 * time.Microsecond},
			{Name: netcheck.StepVerify, OK: false, Detail: "CN=upstream.test: x509: certificate signed by unknown authority", Duration: 200 * time.Microsecond},
		},
	}
}

func (f *fakeProvider) checks() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.checked...)
}
