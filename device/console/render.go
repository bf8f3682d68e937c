package console

import (
	"cmp"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/storegate/storegate/device/netcheck"
)

// Width is the terminal width the console writes for. Lines are wrapped one
// column short of it so terminals that wrap at the last column do not add
// blank lines.
const Width = 80

// printer writes sanitized, wrapped lines. Everything the console prints goes
// through it, so a hostile host name or event field cannot send escape
// sequences to the technician's terminal.
type printer struct {
	w   io.Writer
	eol string
	buf []byte
}

func (p *printer) line(s string) {
	s = sanitize(s)
	first := true
	for {
		max := Width - 1
		prefix := ""
		if !first {
			prefix = "    "
			max -= len(prefix)
		}
		cut := len(s)
		if cut > max {
			cut = max
			// Prefer a break at a space in the last third of the line.
			if i := strings.LastIndexByte(s[:max], ' '); i > max*2/3 {
				cut = i + 1
			}
		}
		p.buf = append(p.buf[:0], prefix...)
		p.buf = append(p.buf, strings.TrimRight(s[:cut], " ")...)
		p.buf = append(p.buf, p.eol...)
		_, _ = p.w.Write(p.buf)
		s = s[cut:]
		first = false
		if s == "" {
			return
		}
	}
}

func (p *printer) linef(format string, args ...any) { p.line(fmt.Sprintf(format, args...)) }

// kv prints "key         value" with the value column at 14.
func (p *printer) kv(key, value string) { p.linef("%-13s %s", key, value) }

// sanitize keeps printable ASCII; a tab becomes a space and every other
// byte or UTF-8 sequence becomes one '?'.
func sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\t':
			b = append(b, ' ')
		case c >= 0x20 && c <= 0x7e:
			b = append(b, c)
		case c >= utf8.RuneSelf:
			_, size := utf8.DecodeRuneInString(s[i:])
			b = append(b, '?')
			i += size
			continue
		default:
			b = append(b, '?')
		}
		i++
	}
	return string(b)
}

// MaskURL removes any password from a proxy URL ("http://u:p@h" becomes
// "http://u:***@h"); text that does not parse is cut at its last '@'.
func MaskURL(s string) string {
	if s == "" {
		return s
	}
	u, err := url.Parse(s)
	if err == nil && u.Host != "" {
		user := u.User
		u.User = nil
		u.RawQuery = maskQuery(u.RawQuery)
		out := u.String()
		if user != nil {
			info := user.Username()
			if _, has := user.Password(); has {
				info += ":***"
			}
			if i := strings.Index(out, "://"); i >= 0 {
				out = out[:i+3] + info + "@" + out[i+3:]
			}
		}
		return out
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return "***@" + s[i+1:]
	}
	return s
}

// maskQuery hides query values whose names suggest secrets.
func maskQuery(q string) string {
	if q == "" {
		return q
	}
	parts := strings.Split(q, "&")
	for i, kv := range parts {
		k, _, found := strings.Cut(kv, "=")
		lk := strings.ToLower(k)
		if found && (strings.Contains(lk, "pass") || strings.Contains(lk, "secret") || strings.Contains(lk, "token") || strings.Contains(lk, "key")) {
			parts[i] = k + "=***"
		}
	}
	return strings.Join(parts, "&")
}

func relayLine(r string) string {
	if r == "" || r == "direct" {
		return "direct (no relay)"
	}
	return MaskURL(r)
}

// Duration formats d for a narrow column: 45s, 12m03s, 5h02m, 3d04h.
func Duration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
	}
}

// stampString formats an RFC 3339 time like stamp, or shows it as given.
func stampString(s string, now time.Time) string {
	if s == "" {
		return "never"
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return stamp(t, now)
}

func stamp(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z") + " (" + Duration(now.Sub(t)) + " ago)"
}

func shortHash(h string) string {
	if h == "" {
		return "-"
	}
	if len(h) > 16 {
		h = h[:16]
	}
	return "sha256:" + h
}

// WriteStatus prints st as the console's "status" command does, with eol as
// the line end ("\r\n" on a serial line, "\n" for `storegate status`).
func WriteStatus(w io.Writer, eol string, st Status, now time.Time) {
	p := &printer{w: w, eol: eol}
	p.kv("version", st.Version)
	p.kv("uptime", Duration(time.Duration(st.UptimeSeconds)*time.Second))
	p.kv("listen", st.Listen)
	if st.TLSListen != "" {
		p.kv("tls listen", st.TLSListen)
	}
	p.kv("admin", st.Admin)
	p.kv("policy", st.PolicyFile)
	p.kv("  hash", shortHash(st.PolicyHash))
	p.kv("  loaded", stampString(st.PolicyLoadedAt, now))
	if st.LastReloadError != "" {
		p.kv("  reload", "FAILED, previous policy in force: "+st.LastReloadError)
	} else {
		p.kv("  reload", "ok")
	}
	p.kv("relay", relayLine(st.Relay))
	p.kv("link", cmp.Or(st.Link, "unknown"))
	p.kv("tunnels", strconv.FormatInt(st.ActiveTunnels, 10)+" active")
	p.kv("spool", strconv.FormatInt(st.SpoolDepth, 10)+" messages waiting")
}

// WriteCounters prints counters sorted by name, values right-aligned.
func WriteCounters(w io.Writer, eol string, c Counters) {
	p := &printer{w: w, eol: eol}
	if len(c) == 0 {
		p.line("no counters")
		return
	}
	names := make([]string, 0, len(c))
	for k := range c {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		v := strconv.FormatFloat(c[n], 'f', -1, 64)
		label := strings.TrimPrefix(n, "storegate_")
		if len(label) >= 60 {
			p.line(label)
			p.linef("%*s", Width-1, v)
			continue
		}
		p.linef("%-*s%*s", 60, label, Width-1-60, v)
	}
}

// WritePolicy prints the policy in force: hosts grouped by origin, then ports,
// networks, client certificates, TLS minimum and the relay.
func WritePolicy(w io.Writer, eol string, v PolicyView, now time.Time) {
	p := &printer{w: w, eol: eol}
	p.kv("file", v.File)
	p.kv("hash", shortHash(v.Hash))
	p.kv("loaded", stamp(v.LoadedAt, now))
	if v.LastReloadError != "" {
		p.kv("reload", "FAILED, this policy stays in force: "+v.LastReloadError)
	}
	p.kv("ports", joinInts(v.Ports))
	p.kv("networks", joinOr(v.Networks, "none (private and loopback destinations refused)"))
	p.kv("tls minimum", cmp.Or(v.MinTLSVersion, "-"))
	p.kv("relay", relayLine(v.Relay))
	changes := "read-only"
	if v.AllowChanges {
		changes = "console.allow_changes set; no console command changes anything"
	}
	p.kv("console", changes)
	p.kv("client certs", joinOr(v.ClientCertificates, "any"))
	var origins []string
	by := map[string][]string{}
	for _, h := range v.Hosts {
		if _, ok := by[h.Origin]; !ok {
			origins = append(origins, h.Origin)
		}
		by[h.Origin] = append(by[h.Origin], h.Pattern)
	}
	if len(origins) == 0 {
		p.line("allowed hosts: none")
	}
	for _, o := range origins {
		p.linef("allowed hosts from %s (%d):", o, len(by[o]))
		for _, h := range by[o] {
			p.line("  " + h)
		}
	}
}

func joinInts(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " ")
}

func joinOr(v []string, none string) string {
	if len(v) == 0 {
		return none
	}
	return strings.Join(v, ", ")
}

// WriteSpool prints the spool's depth, bounds and outcomes.
func WriteSpool(w io.Writer, eol string, v SpoolView) {
	p := &printer{w: w, eol: eol}
	if v.Dir == "" {
		p.line("spool is off")
		return
	}
	p.kv("dir", v.Dir)
	p.kv("waiting", fmt.Sprintf("%d messages, %s of %s", v.Messages, Bytes(v.Bytes), Bytes(v.MaxBytes)))
	p.kv("oldest", Duration(v.Oldest)+" (max "+Duration(v.MaxAge)+")")
	p.kv("delivered", strconv.FormatInt(v.Delivered, 10))
	p.kv("dead letters", strconv.FormatInt(v.DeadLetters, 10))
	p.kv("dropped", strconv.FormatInt(v.Dropped, 10))
	p.kv("last error", cmp.Or(v.LastError, "-"))
}

// Bytes formats n with a binary unit.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// WriteLink prints the WAN link state.
func WriteLink(w io.Writer, eol string, v LinkView, now time.Time) {
	p := &printer{w: w, eol: eol}
	p.kv("state", cmp.Or(v.State, "unknown"))
	p.kv("via", MaskURL(cmp.Or(v.Via, "direct")))
	p.kv("since", stamp(v.Since, now))
	p.kv("last probe", stamp(v.LastProbe, now))
	p.kv("probe target", cmp.Or(v.ProbeTarget, "-"))
	p.kv("last error", cmp.Or(v.LastError, "-"))
}

// WriteCheck prints a check report one step per line, then a verdict.
func WriteCheck(w io.Writer, eol string, r netcheck.Report) {
	p := &printer{w: w, eol: eol}
	p.linef("check %s port %d via %s", r.Host, r.Port, MaskURL(r.Via))
	for _, s := range r.Steps {
		state := "ok  "
		switch {
		case s.Skipped:
			p.linef("  %-8s --   %s", s.Name, s.Detail)
			continue
		case !s.OK:
			state = "FAIL"
		}
		p.linef("  %-8s %s %7s  %s", s.Name, state, ms(s.Duration), s.Detail)
	}
	if r.OK {
		p.line("result: OK")
		return
	}
	for _, s := range r.Steps {
		if !s.OK && !s.Skipped && !(s.Name == netcheck.StepResolve && r.Via != "direct" && r.Via != "") {
			p.line("result: FAILED at " + s.Name)
			return
		}
	}
	p.line("result: FAILED")
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}
