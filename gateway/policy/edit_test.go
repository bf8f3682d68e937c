package policy

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/edit")

// TestDocEditsGolden: each edit changes only the bytes of the value it
// touches; the golden files show comments, blank lines and order kept.
func TestDocEditsGolden(t *testing.T) {
	input, err := os.ReadFile("testdata/edit/input.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sameHost := func(a, b string) bool { return strings.EqualFold(a, b) }
	cases := []struct {
		name string
		src  []byte
		edit func(d *Doc) error
	}{
		{"set-scalar", input, func(d *Doc) error { return d.Set("listen_port", ValueNode("9090")) }},
		{"set-in-flow-map", input, func(d *Doc) error { return d.Set("limits.dial_timeout", ValueNode("5s")) }},
		{"add-to-flow-map", input, func(d *Doc) error { return d.Set("limits.idle_timeout", ValueNode("30m")) }},
		{"add-to-block-map", input, func(d *Doc) error { return d.Set("spool.max_bytes", ValueNode("64MiB")) }},
		{"add-new-section", input, func(d *Doc) error { return d.Set("tls.min_version", ValueNode("1.3")) }},
		{"add-root-list", input, func(d *Doc) error { return d.Set("allowed_ports", ValueNode("[443, 8443]")) }},
		{"set-quoted", input, func(d *Doc) error {
			return d.Set("relay_proxy.address", ValueNode("http://proxy.contoso.example:3128"))
		}},
		{"append-block-list", input, func(d *Doc) error {
			_, err := d.Append("allowed_hosts", "new.example", sameHost)
			return err
		}},
		{"remove-block-list", input, func(d *Doc) error {
			_, err := d.Remove("allowed_hosts", func(s string) bool { return s == "example.com" })
			return err
		}},
		{"append-flow-list", input, func(d *Doc) error {
			_, err := d.Append("allowed_client_certificates", "CN=pos-0002,O=Contoso", strings.EqualFold)
			return err
		}},
		{"remove-last-of-list", input, func(d *Doc) error {
			_, err := d.Remove("allowed_client_certificates", func(string) bool { return true })
			return err
		}},
		{"default-relay", DefaultYAML(), func(d *Doc) error {
			if err := d.Set("relay_proxy.address", ValueNode("http://10.1.2.3:3128")); err != nil {
				return err
			}
			return d.Set("relay_proxy.username", ValueNode("store0042"))
		}},
		{"default-append-empty-list", DefaultYAML(), func(d *Doc) error {
			_, err := d.Append("allowed_hosts", "*.contoso.example", sameHost)
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := ParseDoc(c.src, "input.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if err := c.edit(d); err != nil {
				t.Fatal(err)
			}
			if d.Reformatted() {
				t.Errorf("edit fell back to re-encoding the whole file")
			}
			got := d.Bytes()
			if _, err := Parse(got, c.name); err != nil {
				t.Fatalf("edited file is not a valid policy: %v\n%s", err, got)
			}
			golden := filepath.Join("testdata", "edit", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("edited file differs from %s:\n%s", golden, got)
			}
		})
	}
}

// TestDocEditNoChange: adding what is there and removing what is not leave
// the bytes alone.
func TestDocEditNoChange(t *testing.T) {
	input, _ := os.ReadFile("testdata/edit/input.yaml")
	d, err := ParseDoc(input, "input.yaml")
	if err != nil {
		t.Fatal(err)
	}
	added, err := d.Append("allowed_hosts", "EXAMPLE.com", strings.EqualFold)
	if err != nil || added {
		t.Fatalf("Append of a present host: added=%v err=%v", added, err)
	}
	removed, err := d.Remove("allowed_hosts", func(s string) bool { return s == "absent.example" })
	if err != nil || len(removed) != 0 {
		t.Fatalf("Remove of an absent host: %v %v", removed, err)
	}
	if !bytes.Equal(d.Bytes(), input) {
		t.Fatalf("bytes changed:\n%s", d.Bytes())
	}
}

// TestDocEditFallback: a layout the splicer does not handle (an anchor)
// is still edited correctly, by re-encoding, and says so.
func TestDocEditFallback(t *testing.T) {
	src := []byte("version: 1\n# ports\nallowed_ports: &p [443]\nlisten_port: 8080\n")
	d, err := ParseDoc(src, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Set("allowed_ports", ValueNode("[443, 8443]")); err != nil {
		t.Fatal(err)
	}
	f, err := Parse(d.Bytes(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.AllowedPorts) != 2 || f.ListenPort != 8080 {
		t.Fatalf("edit result: ports %v listen %d", f.AllowedPorts, f.ListenPort)
	}
	if !d.Reformatted() || !bytes.Contains(d.Bytes(), []byte("# ports")) {
		t.Fatalf("fallback: reformatted=%v\n%s", d.Reformatted(), d.Bytes())
	}
}

// TestDocRefusals: edits that cannot apply say why.
func TestDocRefusals(t *testing.T) {
	if _, err := ParseDoc([]byte("- a\n- b\n"), "t"); err == nil {
		t.Fatal("a list accepted as a policy document")
	}
	if _, err := ParseDoc([]byte("a: [\n"), "t"); err == nil {
		t.Fatal("broken YAML accepted")
	}
	d, _ := ParseDoc([]byte("version: 1\nlisten_port: 8080\n"), "t")
	if err := d.Set("listen_port.x", ValueNode("1")); err == nil {
		t.Fatal("set below a scalar accepted")
	}
	if _, err := d.Append("listen_port", "x", strings.EqualFold); err == nil {
		t.Fatal("append to a scalar accepted")
	}
}
