package policy

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Doc is a policy file opened for editing by the management commands.
//
// An edit is made twice: on a yaml.v3 node tree, which says what the file
// must mean afterwards, and as a splice of the file's text, which changes
// only the bytes of the value touched, so comments, blank lines, key order
// and quoting elsewhere stay byte for byte. The spliced text is parsed again
// and must mean exactly what the node tree means; if it does not (an exotic
// layout the splicer does not handle), the node tree is written out instead,
// which keeps comments and key order but not blank lines, and Reformatted
// says so.
type Doc struct {
	src         []byte
	source      string
	reformatted bool
}

// ParseDoc opens data for editing. It must be a YAML mapping; it need not be
// a valid policy (an edit may be what fixes it), but the result of every
// edit is checked by the caller with Parse before it is written.
func ParseDoc(data []byte, source string) (*Doc, error) {
	if len(data) > MaxFileBytes {
		return nil, &Error{File: source, Msg: fmt.Sprintf("file is larger than %d bytes; a policy is a few KiB", MaxFileBytes)}
	}
	if _, err := parseMapping(data, source); err != nil {
		return nil, err
	}
	return &Doc{src: bytes.Clone(data), source: source}, nil
}

// Bytes returns the document's current text.
func (d *Doc) Bytes() []byte { return bytes.Clone(d.src) }

// Reformatted reports whether an edit had to re-encode the whole document.
func (d *Doc) Reformatted() bool { return d.reformatted }

// parseMapping parses data into a node tree whose document is a mapping, as
// both a policy and a document to edit must be.
func parseMapping(data []byte, source string) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Errors{yamlError(err, source, nil)}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, Errors{{File: source, Line: 1, Msg: "a policy is a YAML mapping of keys (version: 1, listen_port: ..., ...)"}}
	}
	return &doc, nil
}

// Get returns the value node at a dotted key ("limits.dial_timeout"), as
// written in the file (defaults are not filled in).
func (d *Doc) Get(key string) (*yaml.Node, bool) {
	doc, err := parseMapping(d.src, d.source)
	if err != nil {
		return nil, false
	}
	n := doc.Content[0]
	for _, k := range strings.Split(key, ".") {
		if n.Kind != yaml.MappingNode {
			return nil, false
		}
		_, v := lookup(n, k)
		if v == nil {
			return nil, false
		}
		n = v
	}
	return n, true
}

// ValueNode turns a value given on the command line into a node: YAML for
// numbers, booleans and flow lists ("[443, 8443]"), anything else a string.
func ValueNode(text string) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err == nil && len(doc.Content) == 1 && !strings.Contains(text, "\n") {
		n := doc.Content[0]
		switch {
		case n.Kind == yaml.ScalarNode && n.Tag != "!!str" && n.Tag != "!!null":
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: n.Tag, Value: n.Value}
		case (n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode) && n.Style&yaml.FlowStyle != 0:
			clearPositions(n)
			return n
		}
	}
	return StringNode(text)
}

// StringNode is a string value node.
func StringNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func clearPositions(n *yaml.Node) {
	n.Line, n.Column = 0, 0
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		clearPositions(c)
	}
}

// textEdit replaces src[start:end] with text.
type textEdit struct {
	start, end int
	text       string
}

// errNoSplice says the splicer does not handle a layout; the node tree is
// written out instead.
var errNoSplice = errors.New("layout not handled by the splicer")

// Set sets the value at a dotted key, creating the key (and the mappings
// above it) at the end of its mapping when missing.
func (d *Doc) Set(key string, value *yaml.Node) error {
	return d.edit(func(doc *yaml.Node, sp *splicer) ([]textEdit, error) {
		return setNode(doc.Content[0], strings.Split(key, "."), value, sp)
	})
}

// Append adds item to the list at key unless an entry equal to it under
// same is there already; it reports whether it added it.
func (d *Doc) Append(key, item string, same func(a, b string) bool) (bool, error) {
	added := false
	err := d.edit(func(doc *yaml.Node, sp *splicer) ([]textEdit, error) {
		path := strings.Split(key, ".")
		seq := find(doc.Content[0], path)
		if seq == nil || isNull(seq) {
			added = true
			return setNode(doc.Content[0], path, &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, Content: []*yaml.Node{StringNode(item)}}, sp)
		}
		if seq.Kind != yaml.SequenceNode {
			return nil, fmt.Errorf("%s is not a list", key)
		}
		for _, c := range seq.Content {
			if c.Kind == yaml.ScalarNode && same(c.Value, item) {
				return nil, nil
			}
		}
		added = true
		node := StringNode(item)
		var last *yaml.Node
		if n := len(seq.Content); n > 0 {
			last = seq.Content[n-1]
			if last.Kind == yaml.ScalarNode && last.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
				node.Style = last.Style // quote like the entries before it
			}
		}
		if last == nil || seq.Style&yaml.FlowStyle != 0 {
			// An empty list or a flow list is rewritten whole, inline.
			start, end, err := sp.span(seq)
			seq.Content = append(seq.Content, node)
			if err != nil {
				return nil, err
			}
			return []textEdit{{start, end, renderInline(seq)}}, nil
		}
		prefix, err := sp.dashPrefix(last)
		seq.Content = append(seq.Content, node)
		if err != nil {
			return nil, err
		}
		at := sp.lineEnd(maxLine(last))
		return []textEdit{{at, at, sp.newlineBefore(at) + prefix + renderInline(node) + "\n"}}, nil
	})
	return added, err
}

// Remove deletes every entry of the list at key for which match is true and
// returns the entries removed.
func (d *Doc) Remove(key string, match func(string) bool) ([]string, error) {
	var removed []string
	err := d.edit(func(doc *yaml.Node, sp *splicer) ([]textEdit, error) {
		removed = nil
		path := strings.Split(key, ".")
		seq := find(doc.Content[0], path)
		if seq == nil || isNull(seq) {
			return nil, nil
		}
		if seq.Kind != yaml.SequenceNode {
			return nil, fmt.Errorf("%s is not a list", key)
		}
		var keep, gone []*yaml.Node
		for _, c := range seq.Content {
			if c.Kind == yaml.ScalarNode && match(c.Value) {
				gone = append(gone, c)
				removed = append(removed, c.Value)
			} else {
				keep = append(keep, c)
			}
		}
		if len(gone) == 0 {
			return nil, nil
		}
		if len(keep) == 0 || seq.Style&yaml.FlowStyle != 0 {
			return setNode(doc.Content[0], path, &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, Content: keep}, sp)
		}
		seq.Content = keep
		var edits []textEdit
		for _, c := range gone {
			prefix, err := sp.dashPrefix(c)
			if err != nil || strings.TrimSpace(strings.TrimSuffix(prefix, "- ")) != "" {
				return nil, errNoSplice
			}
			edits = append(edits, textEdit{sp.lineStart(c.Line), sp.lineEnd(maxLine(c)), ""})
		}
		return edits, nil
	})
	return removed, err
}

// edit runs change on a fresh node tree, applies its text edits and checks
// that the new text means what the changed tree means.
func (d *Doc) edit(change func(doc *yaml.Node, sp *splicer) ([]textEdit, error)) error {
	doc, err := parseMapping(d.src, d.source)
	if err != nil {
		return err
	}
	sp := newSplicer(d.src)
	edits, err := change(doc, sp)
	if err != nil && !errors.Is(err, errNoSplice) {
		return err
	}
	if err == nil && len(edits) == 0 {
		return nil
	}
	var want any
	if err := doc.Decode(&want); err != nil {
		return err
	}
	if err == nil {
		out := applyEdits(d.src, edits)
		if sameMeaning(out, want) {
			d.src = out
			return nil
		}
	}
	// The fallback: write the tree. Comments and key order stay.
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_ = enc.Close()
	if !sameMeaning(b.Bytes(), want) {
		return fmt.Errorf("%s: cannot make this edit without changing other keys; edit the file by hand", d.source)
	}
	d.src, d.reformatted = b.Bytes(), true
	return nil
}

func sameMeaning(text []byte, want any) bool {
	var got any
	if err := yaml.Unmarshal(text, &got); err != nil {
		return false
	}
	return reflect.DeepEqual(got, want)
}

func applyEdits(src []byte, edits []textEdit) []byte {
	sort.Slice(edits, func(i, j int) bool { return edits[i].start > edits[j].start })
	out := bytes.Clone(src)
	for _, e := range edits {
		out = slices.Concat(out[:e.start:e.start], []byte(e.text), out[e.end:])
	}
	return out
}

// setNode sets path below mapping m to value, in the tree and as text edits.
func setNode(m *yaml.Node, path []string, value *yaml.Node, sp *splicer) ([]textEdit, error) {
	k, v := lookup(m, path[0])
	if v == nil {
		return insertKey(m, path, value, sp)
	}
	if len(path) > 1 {
		if v.Kind == yaml.MappingNode {
			return setNode(v, path[1:], value, sp)
		}
		if !isNull(v) {
			return nil, fmt.Errorf("%s is not a mapping of keys", k.Value)
		}
		value = nested(path[1:], value)
		path = path[:1]
	}
	// Keep a quoted string quoted: address: "" becomes address: "http://...".
	if v.Kind == yaml.ScalarNode && value.Kind == yaml.ScalarNode && value.Tag == "!!str" &&
		v.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 && !strings.Contains(value.Value, "\n") {
		value.Style = v.Style
	}
	replace(m, k, value)
	switch {
	case m.Style&yaml.FlowStyle != 0: // plain scalars end differently inside [] and {}
		start, end, err := sp.span(m)
		if err != nil {
			return nil, err
		}
		return []textEdit{{start, end, renderInline(m)}}, nil
	case isNull(v) && v.Value == "":
		at, err := sp.afterColon(k)
		if err != nil {
			return nil, err
		}
		return []textEdit{{at, at, " " + renderInline(value)}}, nil
	case v.Kind == yaml.ScalarNode || v.Style&yaml.FlowStyle != 0:
		start, end, err := sp.span(v)
		if err != nil {
			return nil, err
		}
		return []textEdit{{start, end, renderInline(value)}}, nil
	default: // a block list or mapping becomes a flow one on the key's line
		at, err := sp.afterColon(k)
		if err != nil {
			return nil, err
		}
		return []textEdit{{at, sp.lineEnd(maxLine(v)) - 1, " " + renderInline(value)}}, nil
	}
}

// insertKey adds path (missing from m) with value at the end of m.
func insertKey(m *yaml.Node, path []string, value *yaml.Node, sp *splicer) ([]textEdit, error) {
	add := nested(path, value)
	if m.Style&yaml.FlowStyle != 0 || len(m.Content) == 0 {
		start, end, err := sp.span(m)
		m.Content = append(m.Content, add.Content...)
		if err != nil {
			return nil, err
		}
		return []textEdit{{start, end, renderInline(m)}}, nil
	}
	indent := m.Content[0].Column - 1
	at := sp.lineEnd(maxLine(m))
	m.Content = append(m.Content, add.Content...)
	block, err := renderBlock(add, indent)
	if err != nil {
		return nil, err
	}
	return []textEdit{{at, at, sp.newlineBefore(at) + block}}, nil
}

// nested builds {a: {b: value}} for path [a b].
func nested(path []string, value *yaml.Node) *yaml.Node {
	n := value
	for i := len(path) - 1; i >= 0; i-- {
		n = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{StringNode(path[i]), n}}
	}
	return n
}

func lookup(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func find(m *yaml.Node, path []string) *yaml.Node {
	n := m
	for _, k := range path {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		_, n = lookup(n, k)
		if n == nil {
			return nil
		}
	}
	return n
}

func replace(m, key, value *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i] == key {
			m.Content[i+1] = value
		}
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// maxLine is the last line a node's text reaches (as far as node positions
// tell; the meaning check catches what they do not).
func maxLine(n *yaml.Node) int {
	l := n.Line
	if n.Kind == yaml.ScalarNode && n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		l += strings.Count(strings.TrimRight(n.Value, "\n"), "\n") + 1
	}
	for _, c := range n.Content {
		l = max(l, maxLine(c))
	}
	return l
}

// renderInline writes a value for one line: collections in flow style,
// multi-line strings double-quoted.
func renderInline(n *yaml.Node) string {
	c := flowCopy(n)
	b, err := yaml.Marshal(c)
	if err != nil {
		return `""`
	}
	return strings.TrimSuffix(string(b), "\n")
}

func flowCopy(n *yaml.Node) *yaml.Node {
	c := *n
	clearPositions(&c)
	if c.Kind == yaml.ScalarNode && (strings.Contains(c.Value, "\n") || needsQuotes(&c)) {
		c.Style = yaml.DoubleQuotedStyle
	}
	if c.Kind == yaml.SequenceNode || c.Kind == yaml.MappingNode {
		c.Style = yaml.FlowStyle
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, x := range n.Content {
			c.Content[i] = flowCopy(x)
		}
	}
	return &c
}

// needsQuotes reports a new string that yaml.v3 would single-quote in a
// flow list; storegate's files use double quotes, so it gets those.
func needsQuotes(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode || n.Style != 0 || n.Tag != "!!str" {
		return false
	}
	b, err := yaml.Marshal(&yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Tag: "!!str", Value: n.Value}}})
	return err == nil && bytes.HasPrefix(b, []byte("['"))
}

// renderBlock writes a mapping in block style at indent, its leaves inline.
func renderBlock(m *yaml.Node, indent int) (string, error) {
	var b strings.Builder
	pad := strings.Repeat(" ", indent)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		b.WriteString(pad + renderInline(k) + ":")
		if v.Kind == yaml.MappingNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 {
			inner, err := renderBlock(v, indent+2)
			if err != nil {
				return "", err
			}
			b.WriteString("\n" + inner)
			continue
		}
		b.WriteString(" " + renderInline(v) + "\n")
	}
	return b.String(), nil
}

// splicer finds byte offsets in the source from yaml.v3 node positions
// (1-based lines, 1-based columns counted in characters).
type splicer struct {
	src   []byte
	lines []int // byte offset of the start of each line
}

func newSplicer(src []byte) *splicer {
	sp := &splicer{src: src, lines: []int{0}}
	for i, c := range src {
		if c == '\n' {
			sp.lines = append(sp.lines, i+1)
		}
	}
	return sp
}

func (sp *splicer) lineStart(line int) int {
	if line < 1 {
		return 0
	}
	if line > len(sp.lines) {
		return len(sp.src)
	}
	return sp.lines[line-1]
}

// lineEnd is the offset just after the newline ending line (or the end).
func (sp *splicer) lineEnd(line int) int {
	if line >= len(sp.lines) {
		return len(sp.src)
	}
	return sp.lines[line]
}

// newlineBefore is "\n" when inserting at at would continue an unterminated last line.
func (sp *splicer) newlineBefore(at int) string {
	if at > 0 && sp.src[at-1] != '\n' {
		return "\n"
	}
	return ""
}

func (sp *splicer) offset(line, col int) (int, error) {
	if line < 1 || line > len(sp.lines) {
		return 0, errNoSplice
	}
	off := sp.lines[line-1]
	for range col - 1 {
		if off >= len(sp.src) || sp.src[off] == '\n' {
			return 0, errNoSplice
		}
		_, w := utf8.DecodeRune(sp.src[off:])
		off += w
	}
	return off, nil
}

// span is the byte range of a scalar or flow collection's text.
func (sp *splicer) span(n *yaml.Node) (int, int, error) {
	start, err := sp.offset(n.Line, n.Column)
	if err != nil {
		return 0, 0, err
	}
	if n.Anchor != "" || n.Kind == yaml.AliasNode || n.Tag != "" && strings.HasPrefix(n.Tag, "!") && n.Style&yaml.TaggedStyle != 0 {
		return 0, 0, errNoSplice
	}
	s := sp.src
	switch {
	case n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode:
		if n.Style&yaml.FlowStyle == 0 || start >= len(s) || (s[start] != '[' && s[start] != '{') {
			return 0, 0, errNoSplice
		}
		end, ok := matchBracket(s, start)
		if !ok {
			return 0, 0, errNoSplice
		}
		return start, end, nil
	case n.Style&yaml.DoubleQuotedStyle != 0:
		for i := start + 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '"':
				return start, i + 1, nil
			}
		}
	case n.Style&yaml.SingleQuotedStyle != 0:
		for i := start + 1; i < len(s); i++ {
			if s[i] == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					i++
					continue
				}
				return start, i + 1, nil
			}
		}
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		return 0, 0, errNoSplice
	default: // plain: to a comment or the end of the line
		end := start
		for end < len(s) && s[end] != '\n' {
			if s[end] == '#' && end > start && (s[end-1] == ' ' || s[end-1] == '\t') {
				break
			}
			end++
		}
		for end > start && (s[end-1] == ' ' || s[end-1] == '\t' || s[end-1] == '\r') {
			end--
		}
		return start, end, nil
	}
	return 0, 0, errNoSplice
}

// matchBracket returns the offset after the bracket closing the one at start.
func matchBracket(s []byte, start int) (int, bool) {
	depth := 0
	for i := start; i < len(s); i++ {
		switch s[i] {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		case '\'':
			for i++; i < len(s); i++ {
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						i++
						continue
					}
					break
				}
			}
		case '#':
			if i > start && (s[i-1] == ' ' || s[i-1] == '\t') {
				for i < len(s) && s[i] != '\n' {
					i++
				}
			}
		}
	}
	return 0, false
}

// afterColon is the offset just after the ':' that follows key.
func (sp *splicer) afterColon(key *yaml.Node) (int, error) {
	var end int
	if key.Kind == yaml.ScalarNode && key.Style == 0 {
		start, err := sp.offset(key.Line, key.Column)
		if err != nil || !bytes.HasPrefix(sp.src[start:], []byte(key.Value)) {
			return 0, errNoSplice
		}
		end = start + len(key.Value)
	} else {
		_, e, err := sp.span(key)
		if err != nil {
			return 0, err
		}
		end = e
	}
	for i := end; i < len(sp.src); i++ {
		switch sp.src[i] {
		case ' ', '\t':
		case ':':
			return i + 1, nil
		default:
			return 0, errNoSplice
		}
	}
	return 0, errNoSplice
}

// dashPrefix is the text of an item's line up to and including "- ".
func (sp *splicer) dashPrefix(item *yaml.Node) (string, error) {
	off, err := sp.offset(item.Line, item.Column)
	if err != nil {
		return "", err
	}
	ls := sp.lineStart(item.Line)
	i := off - 1
	for i >= ls && (sp.src[i] == ' ' || sp.src[i] == '\t') {
		i--
	}
	if i < ls || sp.src[i] != '-' {
		return "", errNoSplice
	}
	return string(sp.src[ls:i]) + "- ", nil
}
