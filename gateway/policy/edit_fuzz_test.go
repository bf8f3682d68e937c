package policy

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzDocEdit: editing any document never panics, and an edit that succeeds
// changes the key it was asked to and nothing else.
func FuzzDocEdit(f *testing.F) {
	f.Add(DefaultYAML(), "limits.dial_timeout", "5s")
	f.Add([]byte("version: 1\nlimits: {dial_timeout: 10s}\n"), "limits.idle_timeout", "30m")
	f.Add([]byte("version: 1\nallowed_hosts:\n  - a.example # x\n  - \"*.b.example\"\n"), "allowed_hosts", "[c.example]")
	f.Add([]byte("version: 1\nrelay_proxy:\n  address: \"\"\n"), "relay_proxy.address", "http://p:3128")
	f.Add([]byte("a: &x 1\nb: *x\n"), "b", "2")
	f.Add([]byte("a: |\n  x\n  y\nb: 1\n"), "a", "z")
	f.Add([]byte("a:\nb: 1"), "a.c", "d")
	f.Fuzz(func(t *testing.T, data []byte, key, value string) {
		if len(data) > 4096 || key == "" || strings.Contains(key, "..") || strings.HasPrefix(key, ".") || strings.HasSuffix(key, ".") {
			return
		}
		d, err := ParseDoc(data, "fuzz")
		if err != nil {
			return
		}
		var before map[string]any
		if yaml.Unmarshal(data, &before) != nil {
			return
		}
		if err := d.Set(key, ValueNode(value)); err != nil {
			return
		}
		var after map[string]any
		if err := yaml.Unmarshal(d.Bytes(), &after); err != nil {
			t.Fatalf("edit produced invalid YAML: %v\n%s", err, d.Bytes())
		}
		// Put the edited key back to what it was; the rest must be equal.
		restore(after, before, strings.Split(key, "."))
		if !reflect.DeepEqual(after, before) {
			t.Fatalf("edit of %s changed other keys:\nbefore %v\nafter  %v", key, before, after)
		}
	})
}

// restore copies the value at path from src into dst (deleting it if src
// lacks it). Where the path leaves the mappings both sides share (a parent
// the edit created or replaced), that whole parent is restored.
func restore(dst, src map[string]any, path []string) {
	for i, k := range path {
		if i == len(path)-1 {
			if v, ok := src[k]; ok {
				dst[k] = v
			} else {
				delete(dst, k)
			}
			return
		}
		s, ok1 := src[k].(map[string]any)
		d, ok2 := dst[k].(map[string]any)
		if !ok1 || !ok2 {
			if _, had := src[k]; !had {
				delete(dst, k)
				return
			}
			dst[k] = src[k]
			return
		}
		src, dst = s, d
	}
}
