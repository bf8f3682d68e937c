package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDefaultPolicyParses(t *testing.T) {
	s := Default(time.Now())
	f := s.File
	if f.ListenAddress != "0.0.0.0" || f.ListenPort != 8080 || f.AdminAddress != "127.0.0.1:8081" {
		t.Fatalf("default listen = %s:%d admin %s", f.ListenAddress, f.ListenPort, f.AdminAddress)
	}
	if _, _, err := s.CheckTarget("abc.ods.opinsights.azure.com", 443); err != nil {
		t.Fatalf("log-analytics preset not in force: %v", err)
	}
	if _, _, err := s.CheckTarget("example.com", 443); err == nil {
		t.Fatal("example.com allowed by default")
	}
}

func TestParseErrorsNameKeyAndLine(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"port text", "version: 1\nlisten_port: \"text\"\n", `x.yaml:2: listen_port: "text" is not a whole number; valid: 1-65535`},
		{"port range", "version: 1\nlisten_port: 70000\n", `x.yaml:2: listen_port: 70000 is out of range; valid: 1-65535`},
		{"port zero", "version: 1\nlisten_port: 0\n", `x.yaml:2: listen_port: 0 is out of range; valid: 1-65535`},
		{"unknown key", "version: 1\nlisten_prot: 80\n", `x.yaml:2: listen_prot: unknown key "listen_prot"`},
		{"unknown nested", "version: 1\nlimits:\n  dial_timout: 3s\n", `x.yaml:3: limits.dial_timout: unknown key "dial_timout"`},
		{"bad duration", "version: 1\nlimits:\n  dial_timeout: soon\n", `x.yaml:3: limits.dial_timeout:`},
		{"no version", "listen_port: 80\n", `version: missing`},
		{"wrong version", "version: 2\n", `x.yaml:1: version: 2 is not a policy version`},
		{"empty", "  \n", `file is empty`},
		{"not a map", "- a\n- b\n", `a YAML mapping`},
		{"bad host", "version: 1\nallowed_hosts: [\"https://x.com/\"]\n", `allowed_hosts[0]`},
		{"bad wildcard", "version: 1\nallowed_hosts: [\"a.*.com\"]\n", `wildcard is only allowed`},
		{"bad preset", "version: 1\npresets: [nope]\n", `unknown preset "nope"`},
		{"relay creds in url", "version: 1\nrelay_proxy: {address: \"http://u:p@h:3128\"}\n", `relay_proxy.address: put credentials`},
		{"two docs", "version: 1\n---\nversion: 1\n", `more than one YAML document`},
		{"syntax", "version: 1\nallowed_hosts: [a\n", `x.yaml`},
		{"dead letters too small", "version: 1\nspool:\n  dead_letter_max_bytes: 1KiB\n", `x.yaml:3: spool.dead_letter_max_bytes: 1KiB is too small; at least 64KiB`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "x.yaml")
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, c.want)
			}
		})
	}
}

func TestAliasBombRefused(t *testing.T) {
	// Every anchor sits under a key the schema knows, so the unknown-key
	// check cannot stop it: 10^7 strings if expanded. The schema's types do
	// (a list of lists is not a list of strings), before any alias is expanded.
	keys := []string{"allowed_hosts", "allowed_networks", "presets", "allowed_client_certificates", "network: {dns", "tls: {raw_tcp_hosts", "allowed_ports"}
	var b strings.Builder
	b.WriteString("version: 1\n")
	for i, k := range keys {
		b.WriteString(k + ": &a" + string(rune('0'+i)) + " [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			if i == 0 {
				b.WriteString("x.example")
			} else {
				b.WriteString("*a" + string(rune('0'+i-1)))
			}
		}
		b.WriteString("]")
		if strings.Contains(k, "{") {
			b.WriteString("}")
		}
		b.WriteString("\n")
	}
	_, err := Parse([]byte(b.String()), "bomb.yaml")
	if err == nil {
		t.Fatal("alias bomb accepted")
	}
	t.Logf("refused: %v", err)
}

// compile parses and compiles a policy that must be valid.
func compile(t testing.TB, src string) *Snapshot {
	t.Helper()
	f, err := Parse([]byte(src), "t")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(f, nil, "t", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHostMatching(t *testing.T) {
	s := compile(t, `version: 1
presets: []
allowed_hosts: [Example.COM., "*.wild.example.org", "203.0.113.7", "[2001:db8::7]", "bücher.example", "*.xn--caf-dma.example"]
allowed_ports: [443, 8443]
`)
	cases := []struct {
		host string
		port int
		ok   bool
	}{
		{"example.com", 443, true},
		{"example.com", 8443, true},
		{"example.com", 80, false},
		{"www.example.com", 443, false},
		{"a.wild.example.org", 443, true},
		{"b.a.wild.example.org", 443, true},
		{"wild.example.org", 443, false},
		{"xwild.example.org", 443, false},
		{"203.0.113.7", 443, true},
		{"203.0.113.8", 443, false},
		{"2001:db8::7", 443, true},
		{"::ffff:203.0.113.7", 443, true},
		{"xn--bcher-kva.example", 443, true},
		{"shop.xn--caf-dma.example", 443, true},
	}
	for _, c := range cases {
		_, _, err := s.CheckTarget(c.host, c.port)
		if (err == nil) != c.ok {
			t.Errorf("CheckTarget(%q, %d) = %v, want ok=%v", c.host, c.port, err, c.ok)
		}
	}
	for in, want := range map[string]string{"Example.COM.": "example.com", "BÜCHER.example": "xn--bcher-kva.example", "café.example.": "xn--caf-dma.example"} {
		got, err := NormalizeHost(in)
		if err != nil || got != want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestAddressSafety(t *testing.T) {
	s := compile(t, "version: 1\nallowed_networks: [10.20.0.0/16, \"fd00:1::/32\"]\n")
	cases := []struct {
		addr string
		ok   bool
	}{
		{"93.184.216.34", true},
		{"2606:2800:220:1::1", true},
		{"127.0.0.1", false},
		{"127.8.9.1", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"10.20.3.4", true}, // allowed_networks
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false},
		{"100.64.0.1", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"0.0.0.0", false},
		{"::", false},
		{"fe80::1", false},
		{"fc00::1", false},
		{"fd00:1::5", true}, // allowed_networks
		{"ff02::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.20.0.1", true},
		{"64:ff9b::7f00:1", false},
		{"2002:7f00:1::", false},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false},
		{"::127.0.0.1", false},
	}
	for _, c := range cases {
		err := s.CheckAddr(netip.MustParseAddr(c.addr))
		if (err == nil) != c.ok {
			t.Errorf("CheckAddr(%s) = %v, want ok=%v", c.addr, err, c.ok)
		}
	}
}
