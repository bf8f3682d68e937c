package tlspeek

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Subjects is a compiled list of allowed client-certificate subjects (see the
// package doc for the forms accepted). It is immutable once built.
type Subjects struct {
	entries []subjectEntry
}

type subjectEntry struct {
	text string // as written, for reporting
	cn   string // bare-CN entry; "" for a DN entry
	dn   []rdn
}

// rdn is one relative distinguished name: its attributes sorted by type.
type rdn []ava

type ava struct {
	typ   string // canonical: short name upper-case, or dotted OID
	value string // unescaped, lower-cased, trimmed
}

// ParseSubjects compiles allowed subjects. An error names the bad entry, so a
// policy loader can report it as a configuration error.
func ParseSubjects(list []string) (*Subjects, error) {
	s := &Subjects{entries: make([]subjectEntry, 0, len(list))}
	for i, text := range list {
		e := subjectEntry{text: text}
		t := strings.TrimSpace(text)
		if t == "" {
			return nil, fmt.Errorf("allowed client certificate %d is empty", i+1)
		}
		if !strings.ContainsRune(t, '=') {
			e.cn = strings.ToLower(t)
		} else {
			dn, err := parseDN(t)
			if err != nil {
				return nil, fmt.Errorf("allowed client certificate %q: %v", text, err)
			}
			e.dn = dn
		}
		s.entries = append(s.entries, e)
	}
	return s, nil
}

// Len is the number of allowed subjects; a nil Subjects has none.
func (s *Subjects) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Match reports whether cert's subject is allowed, and the entry that matched.
func (s *Subjects) Match(cert *ClientCert) (string, bool) {
	if s == nil || cert == nil {
		return "", false
	}
	subject, err := parseDN(cert.Subject)
	if err != nil {
		subject = nil // still matchable by bare CN
	}
	cn := strings.ToLower(strings.TrimSpace(cert.CommonName))
	for _, e := range s.entries {
		if e.cn != "" {
			if cn != "" && e.cn == cn {
				return e.text, true
			}
			continue
		}
		if subject != nil && (equalDN(e.dn, subject, false) || equalDN(e.dn, subject, true)) {
			return e.text, true
		}
	}
	return "", false
}

// SameSubject reports whether two allowed-subject entries allow the same
// certificates, compared as Match compares: bare common names ignoring case,
// DNs attribute by attribute (canonical types, unescaped values, case and the
// spaces around separators ignored, in either order). An entry that does not
// parse is compared as text, ignoring case and surrounding spaces.
func SameSubject(a, b string) bool {
	x, errA := ParseSubjects([]string{a})
	y, errB := ParseSubjects([]string{b})
	if errA != nil || errB != nil {
		return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
	}
	ex, ey := x.entries[0], y.entries[0]
	if ex.cn != "" || ey.cn != "" {
		return ex.cn == ey.cn
	}
	return equalDN(ex.dn, ey.dn, false) || equalDN(ex.dn, ey.dn, true)
}

func equalDN(a, b []rdn, reversed bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		j := i
		if reversed {
			j = len(b) - 1 - i
		}
		if !slices.Equal(a[i], b[j]) {
			return false
		}
	}
	return true
}

// parseDN parses an RFC 4514 string (',' or ';' between RDNs, '+' inside
// one), tolerating spaces around separators as OpenSSL prints them, or
// OpenSSL's "/A=x/B=y" form.
func parseDN(s string) ([]rdn, error) {
	s = strings.TrimSpace(s)
	sep := byte(',')
	if strings.HasPrefix(s, "/") {
		s = s[1:]
		sep = '/'
	}
	var out []rdn
	var cur rdn
	for {
		a, rest, end, err := parseAVA(s, sep)
		if err != nil {
			return nil, err
		}
		cur = append(cur, a)
		if end != '+' {
			slices.SortFunc(cur, func(x, y ava) int { return strings.Compare(x.typ, y.typ) })
			out = append(out, cur)
			cur = nil
		}
		if end == 0 {
			return out, nil
		}
		s = rest
	}
}

// parseAVA reads "type=value" up to an unescaped separator and returns the
// separator found (0 at the end of s).
func parseAVA(s string, sep byte) (ava, string, byte, error) {
	eq := strings.IndexByte(s, '=')
	if eq < 0 {
		return ava{}, "", 0, fmt.Errorf("%q has no '='", s)
	}
	typ, err := canonicalType(strings.TrimSpace(s[:eq]))
	if err != nil {
		return ava{}, "", 0, err
	}
	s = strings.TrimLeft(s[eq+1:], " ")
	var b strings.Builder
	hexForm := strings.HasPrefix(s, "#")
	i := 0
	trail := 0 // escaped characters at the end must survive trimming
	for ; i < len(s); i++ {
		c := s[i]
		if c == sep || c == '+' || (sep == ',' && c == ';') {
			break
		}
		if c != '\\' {
			b.WriteByte(c)
			if c != ' ' {
				trail = b.Len()
			}
			continue
		}
		if i+1 >= len(s) {
			return ava{}, "", 0, fmt.Errorf("value ends in a lone backslash")
		}
		if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			v, _ := hex.DecodeString(s[i+1 : i+3])
			b.WriteByte(v[0])
			i += 2
		} else {
			b.WriteByte(s[i+1])
			i++
		}
		trail = b.Len()
	}
	value := b.String()[:trail]
	if hexForm {
		v, err := decodeHexValue(value[1:])
		if err != nil {
			return ava{}, "", 0, fmt.Errorf("attribute %s: %v", typ, err)
		}
		value = v
	}
	var end byte
	rest := ""
	if i < len(s) {
		end = s[i]
		if end == ';' {
			end = ','
		}
		rest = strings.TrimLeft(s[i+1:], " ")
		if rest == "" {
			return ava{}, "", 0, fmt.Errorf("nothing after %q", string(s[i]))
		}
	}
	return ava{typ: typ, value: strings.ToLower(value)}, rest, end, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// decodeHexValue decodes RFC 4514's "#" form, the BER encoding of the value,
// as pkix.Name.String writes attributes it has no name for (emailAddress).
// Only single-byte-length string types are decoded; others stay as hex.
func decodeHexValue(h string) (string, error) {
	der, err := hex.DecodeString(h)
	if err != nil || len(der) < 2 {
		return "", fmt.Errorf("bad #hex value")
	}
	switch der[0] {
	case 0x0c, 0x13, 0x14, 0x16: // UTF8String, PrintableString, T61String, IA5String
		if int(der[1]) == len(der)-2 && der[1] < 0x80 {
			return string(der[2:]), nil
		}
	}
	return "#" + strings.ToLower(h), nil
}

// canonicalType maps attribute names to one spelling; pkix.Name.String uses
// the short names below and dotted OIDs for everything else.
func canonicalType(t string) (string, error) {
	if t == "" {
		return "", fmt.Errorf("empty attribute name")
	}
	switch u := strings.ToUpper(t); u {
	case "CN", "COMMONNAME", "2.5.4.3":
		return "CN", nil
	case "O", "ORGANIZATIONNAME", "2.5.4.10":
		return "O", nil
	case "OU", "ORGANIZATIONALUNITNAME", "2.5.4.11":
		return "OU", nil
	case "C", "COUNTRYNAME", "2.5.4.6":
		return "C", nil
	case "L", "LOCALITYNAME", "2.5.4.7":
		return "L", nil
	case "ST", "S", "STATEORPROVINCENAME", "2.5.4.8":
		return "ST", nil
	case "STREET", "STREETADDRESS", "2.5.4.9":
		return "STREET", nil
	case "POSTALCODE", "2.5.4.17":
		return "POSTALCODE", nil
	case "SERIALNUMBER", "2.5.4.5":
		return "SERIALNUMBER", nil
	case "DC", "0.9.2342.19200300.100.1.25":
		return "DC", nil
	case "UID", "0.9.2342.19200300.100.1.1":
		return "UID", nil
	case "E", "EMAIL", "EMAILADDRESS", "1.2.840.113549.1.9.1":
		return "EMAILADDRESS", nil
	default:
		for i := 0; i < len(u); i++ {
			c := u[i]
			if !(c == '.' || '0' <= c && c <= '9') {
				return "", fmt.Errorf("unknown attribute name %q", t)
			}
		}
		return u, nil
	}
}
