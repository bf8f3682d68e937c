package events

import (
	"fmt"
	"strings"
)

// KeyMsgEN holds the English original of a translated msg.
const KeyMsgEN = "msg_en"

// Languages lists the event languages, English (the default) first. The
// policy's events.language takes one of these.
func Languages() []string { return []string{"en", "sv"} }

// Catalog translates the gateway's English event messages into one other
// language, keyed by the English text. A message it does not know stays in
// English, so a new message is never lost, only untranslated.
type Catalog struct {
	lang     string
	exact    map[string]string
	patterns []pattern
}

// pattern is a message with variable parts: en and tr are the literal pieces
// around the placeholders ({} in the source tables), filled in the same order.
type pattern struct {
	en []string
	tr []string
}

// NewCatalog returns the catalog for a language. English ("en" or "") needs
// none and returns nil, which translates nothing.
func NewCatalog(lang string) (*Catalog, error) {
	switch lang {
	case "", "en":
		return nil, nil
	case "sv":
		return compile("sv", swedishTable()), nil
	}
	return nil, fmt.Errorf("event language %q: valid: %s", lang, strings.Join(Languages(), ", "))
}

// Language is the catalog's language code; a nil Catalog is "en".
func (c *Catalog) Language() string {
	if c == nil {
		return "en"
	}
	return c.lang
}

func compile(lang string, table [][2]string) *Catalog {
	c := &Catalog{lang: lang, exact: make(map[string]string, len(table))}
	for _, e := range table {
		if !strings.Contains(e[0], "{}") {
			c.exact[e[0]] = e[1]
			continue
		}
		c.patterns = append(c.patterns, pattern{en: strings.Split(e[0], "{}"), tr: strings.Split(e[1], "{}")})
	}
	return c
}

// Translate returns msg in the catalog's language and whether it knew it.
// It tries, in order: the whole message; the patterns with variable parts;
// then the part before the first ": " (the rest, a host or an error from
// elsewhere, is kept as is unless it is itself a known message).
func (c *Catalog) Translate(msg string) (string, bool) {
	if c == nil {
		return msg, false
	}
	if t, ok := c.exact[msg]; ok {
		return t, true
	}
	for i := range c.patterns {
		if t, ok := c.patterns[i].apply(msg); ok {
			return t, true
		}
	}
	head, rest, ok := strings.Cut(msg, ": ")
	if !ok {
		return msg, false
	}
	t, ok := c.exact[head]
	if !ok {
		return msg, false
	}
	if r, ok := c.exact[rest]; ok {
		rest = r
	}
	return t + ": " + rest, true
}

// apply matches msg against the pattern; each placeholder takes the shortest
// text up to the next literal piece, and the last one whatever remains
// before the final piece.
func (p *pattern) apply(msg string) (string, bool) {
	last := len(p.en) - 1
	if len(p.en) != len(p.tr) || len(p.en[0])+len(p.en[last]) > len(msg) ||
		!strings.HasPrefix(msg, p.en[0]) || !strings.HasSuffix(msg, p.en[last]) {
		return "", false
	}
	rest := msg[len(p.en[0]) : len(msg)-len(p.en[last])]
	var b strings.Builder
	b.Grow(len(msg) + 32)
	b.WriteString(p.tr[0])
	for i := 1; i <= last; i++ {
		var val string
		if i == last {
			val, rest = rest, ""
		} else {
			j := strings.Index(rest, p.en[i])
			if j < 0 {
				return "", false
			}
			val, rest = rest[:j], rest[j+len(p.en[i]):]
		}
		if val == "" {
			return "", false
		}
		b.WriteString(val)
		b.WriteString(p.tr[i])
	}
	return b.String(), true
}
