package policy

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default policy, comments included.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// DefaultSource names the embedded policy in events and status.
const DefaultSource = "(embedded default)"

// MaxFileBytes bounds a policy file; anything larger is refused before parsing.
const MaxFileBytes = 1 << 20

// Error is one problem in a policy file. Key is the dotted path ("limits.dial_timeout").
type Error struct {
	File  string
	Line  int
	Key   string
	Value string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// LoadFile reads, decodes and validates a policy file.
func LoadFile(path string) (*File, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, Errors{{File: path, Msg: "cannot read: " + unwrapPathErr(err)}}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, nil, Errors{{File: path, Msg: "cannot read: " + unwrapPathErr(err)}}
	}
	pf, err := Parse(data, path)
	return pf, data, err
}

func unwrapPathErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Parse decodes and validates a policy. Decoding is strict: unknown keys,
// wrong types and duplicate keys are errors that name the key and line.
// On success the returned File has every default filled in.
func Parse(data []byte, source string) (*File, error) {
	if len(data) > MaxFileBytes {
		return nil, Errors{{File: source, Msg: fmt.Sprintf("file is larger than %d bytes; a policy is a few KiB", MaxFileBytes)}}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, Errors{{File: source, Msg: "file is empty; start from `storegate policy default`"}}
	}
	root, err := parseMapping(data, source)
	if err != nil {
		return nil, err
	}
	lines := keyLines(root.Content[0], "", map[int]string{})

	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			es := make(Errors, 0, len(te.Errors))
			for _, msg := range te.Errors {
				es = append(es, yamlError(errors.New(msg), source, lines))
			}
			return nil, es
		}
		return nil, Errors{yamlError(err, source, lines)}
	}
	// A second document would be silently ignored by Decode; refuse it.
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, Errors{{File: source, Msg: "file holds more than one YAML document; a policy is one"}}
	}
	if f.Version == 0 {
		return nil, Errors{{File: source, Key: "version", Msg: "missing; write `version: 1` as the first line"}}
	}
	es := f.validate()
	// Zero means "default" inside the program, but a user who writes
	// listen_port: 0 made a mistake, not a request for 8080.
	if l := lineOfKey(lines, "listen_port"); l > 0 && f.ListenPort == 0 {
		es = append(es, &Error{Key: "listen_port", Line: l, Value: "0", Msg: "0 is out of range; valid: 1-65535"})
	}
	if len(es) > 0 {
		for _, e := range es {
			e.File = source
			if e.Line == 0 {
				e.Line = lineOfKey(lines, e.Key)
			}
		}
		sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
		return nil, es
	}
	f.fillDefaults()
	return &f, nil
}

// keyLines maps each line that holds a value to the dotted key path of that value.
func keyLines(n *yaml.Node, prefix string, out map[int]string) map[int]string {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if _, seen := out[k.Line]; !seen {
				out[k.Line] = path
			}
			keyLines(v, path, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := prefix + "[" + strconv.Itoa(i) + "]"
			if _, seen := out[c.Line]; !seen {
				out[c.Line] = p
			}
			keyLines(c, p, out)
		}
	}
	return out
}

func lineOfKey(lines map[int]string, key string) int {
	best := 0
	for line, k := range lines {
		if k == key && (best == 0 || line < best) {
			best = line
		}
	}
	if best == 0 {
		// A key inside a list ("allowed_hosts[2]") or a parent of it.
		for line, k := range lines {
			if strings.HasPrefix(k, key) && (best == 0 || line < best) {
				best = line
			}
		}
	}
	return best
}

var (
	lineRE    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	typeRE    = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// yamlError turns one of yaml.v3's messages into an Error naming key and line.
func yamlError(err error, source string, lines map[int]string) *Error {
	msg := err.Error()
	e := &Error{File: source, Msg: msg}
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		e.Msg = strings.TrimPrefix(msg, "yaml: ")
		if strings.Contains(msg, "excessive aliasing") {
			e.Msg = "too many YAML aliases (an alias bomb?); write the values out"
		}
		return e
	}
	e.Line, _ = strconv.Atoi(m[1])
	rest := m[2]
	key := lines[e.Line]
	switch {
	case unknownRE.MatchString(rest):
		name := unknownRE.FindStringSubmatch(rest)[1]
		e.Key = name
		if key != "" {
			e.Key = key
		}
		e.Msg = fmt.Sprintf("unknown key %q; check its spelling against `storegate policy default`", name)
	case typeRE.MatchString(rest):
		t := typeRE.FindStringSubmatch(rest)
		e.Key, e.Value = key, t[2]
		e.Msg = fmt.Sprintf("%q is not %s", t[2], describeGoType(t[3]))
		if r, ok := ranges[key]; ok {
			e.Msg += "; valid: " + r
		}
	default:
		e.Key = key
		e.Msg = rest
	}
	if strings.HasPrefix(e.Key, "[") {
		e.Key = ""
	}
	return e
}

func describeGoType(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "a whole number"
	case t == "bool" || t == "*bool":
		return "true or false"
	case t == "string":
		return "a string"
	default:
		return "the right kind of value (a mapping of keys)"
	}
}

// ranges documents valid values for the keys most often got wrong.
var ranges = map[string]string{
	"version":                           "1",
	"listen_port":                       "1-65535",
	"tls_listener.port":                 "0 (off) or 1-65535",
	"console.baud":                      "a standard rate such as 9600 or 115200",
	"limits.max_connections":            "1-1000000",
	"limits.max_connections_per_client": "1-1000000",
	"limits.max_headers":                "8-1000",
}
