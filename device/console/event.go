package console

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// FormatEvent turns one JSON event line into a short console line:
// "08:15:02 105 W target not allowed client=10.0.0.7 target=x.test:443".
// Fields keep their order. A line that is not a JSON object is returned
// sanitized with a "? " prefix, so nothing is ever hidden.
func FormatEvent(line []byte) string {
	var b strings.Builder
	ts, id, level, msg, fields, ok := parseEvent(line)
	if !ok {
		return "? " + sanitize(string(line))
	}
	if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		b.WriteString(t.UTC().Format("15:04:05"))
	} else {
		b.WriteString("--:--:--")
	}
	b.WriteByte(' ')
	if id == "" {
		id = "---"
	}
	b.WriteString(id)
	b.WriteByte(' ')
	switch level {
	case "error":
		b.WriteByte('E')
	case "warn":
		b.WriteByte('W')
	case "info":
		b.WriteByte('I')
	default:
		b.WriteByte('-')
	}
	b.WriteByte(' ')
	b.WriteString(msg)
	for _, f := range fields {
		if strings.Contains(f[1], "://") && strings.Contains(f[1], "@") {
			f[1] = MaskURL(f[1]) // a proxy URL with credentials must not reach the screen
		}
		b.WriteByte(' ')
		b.WriteString(f[0])
		b.WriteByte('=')
		if f[1] == "" || strings.ContainsAny(f[1], " =\"") {
			b.WriteString(quote(f[1]))
		} else {
			b.WriteString(f[1])
		}
	}
	return sanitize(b.String())
}

func quote(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// parseEvent reads the top-level members of a JSON object in order. Nested
// values are kept as compact JSON text.
func parseEvent(line []byte) (ts, id, level, msg string, fields [][2]string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return "", "", "", "", nil, false
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return "", "", "", "", nil, false
		}
		key, _ := kt.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", "", "", "", nil, false
		}
		val := rawText(raw)
		switch key {
		case "time":
			ts = val
		case "event_id":
			id = val
		case "level":
			level = val
		case "msg":
			msg = val
		default:
			if len(fields) < 64 {
				fields = append(fields, [2]string{key, val})
			}
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return "", "", "", "", nil, false
	}
	return ts, id, level, msg, fields, true
}

// rawText is a JSON string's value, or any other value's compact text.
func rawText(raw json.RawMessage) string {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.String()
	}
	return string(raw)
}
