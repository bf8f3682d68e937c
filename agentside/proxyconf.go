package agentside

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/storegate/storegate/internal/durable"
)

// Where the proxy setting is written on a terminal (paths as on the target
// system; ProxyFiles.Root is put in front of them).
const (
	DropInName     = "storegate-proxy.conf"
	SystemdDir     = "/etc/systemd/system"
	OMSDir         = "/etc/opt/microsoft/omsagent"
	OMSProxyFile   = OMSDir + "/proxy.conf"
	ProfileSnippet = "/etc/profile.d/storegate-proxy.sh"
	// DefaultNoProxy is what never goes through the gateway.
	DefaultNoProxy = "localhost,127.0.0.1,::1"
	// The OMS agent runs as this user and group and reads its proxy.conf as
	// them; omsadmin.sh makes the file 0600 omsagent:omiusers.
	omsUser  = "omsagent"
	omsGroup = "omiusers"
	marker   = "# Written by storegate-agent proxy set: the store gateway is the proxy."
)

// ProxySettings say which gateway terminals use and for what.
type ProxySettings struct {
	// Gateway is the gateway's proxy listener, http://host:port (https:// for
	// its TLS listener). It may carry user:password, which is then written
	// into the files (and masked whenever printed). Required.
	Gateway string
	// NoProxy are extra hosts that never go through the gateway, besides
	// DefaultNoProxy.
	NoProxy []string
	// Services are systemd services ("name" or "name.service") that get a
	// drop-in with the proxy environment.
	Services []string
	// OMS writes the Log Analytics (OMS) Linux agent's proxy.conf when that
	// agent is installed (its directory exists); false leaves it alone.
	OMS bool
	// Profile writes the login-shell snippet in /etc/profile.d.
	Profile bool
}

// ProxyFiles reads and writes the proxy setting under Root.
type ProxyFiles struct {
	// Root is prepended to every path; "" means "/". Tests use a temp dir.
	Root string
	// DryRun reports what would change and writes nothing.
	DryRun bool
}

// Action is what happened (or would happen) to one file.
type Action string

// Actions reported in a Change.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
	Removed   Action = "removed"
	Skipped   Action = "skipped"
)

// Change is one file's outcome. Path is as on the target system.
type Change struct {
	Path   string
	Action Action
	Note   string // why it was skipped, or a warning; never a credential
}

// Line is the change as printed; dry says it did not happen ("would create").
func (c Change) Line(dry bool) string {
	verb := string(c.Action)
	if dry {
		switch c.Action {
		case Created:
			verb = "would create"
		case Updated:
			verb = "would update"
		case Removed:
			verb = "would remove"
		}
	}
	s := verb + " " + c.Path
	if c.Note != "" {
		s += " (" + c.Note + ")"
	}
	return s
}

// ProxyURL checks a gateway URL and returns it in the one form written to
// files: scheme, optional credentials, host and port, nothing else.
func ProxyURL(gateway string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(gateway))
	if err != nil {
		return nil, fmt.Errorf("--gateway: %v", MaskCredentials(err.Error()))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("--gateway %s: want http://host:port or https://host:port", MaskCredentials(gateway))
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("--gateway %s: no host", MaskCredentials(gateway))
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("--gateway %s: a proxy address has no path or query; want http://host:port", MaskCredentials(gateway))
	}
	port := u.Port()
	if port == "" {
		return nil, fmt.Errorf("--gateway %s: give the port, e.g. http://%s:8080", MaskCredentials(gateway), u.Hostname())
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("--gateway %s: port %q: want 1-65535", MaskCredentials(gateway), port)
	}
	if err := checkHostName(u.Hostname()); err != nil {
		return nil, fmt.Errorf("--gateway %s: %v", MaskCredentials(gateway), err)
	}
	out := &url.URL{Scheme: u.Scheme, Host: u.Host, User: u.User}
	if s := out.String(); !safeForFiles(s) {
		return nil, fmt.Errorf("--gateway %s: characters that cannot be written safely", MaskCredentials(gateway))
	}
	return out, nil
}

func checkHostName(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	if len(h) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("bad host name %q", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("bad host name %q", h)
			}
		}
	}
	return nil
}

// safeForFiles accepts what url.URL.String produces for a clean proxy URL:
// printable ASCII without quotes, backslashes or spaces, so the value needs
// no escaping beyond systemd's %% in any of the files.
func safeForFiles(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\'' || c == '\\' || c == '`' {
			return false
		}
	}
	return true
}

// noProxyList joins the default and extra NO_PROXY entries, checked.
func noProxyList(extra []string) (string, error) {
	list := strings.Split(DefaultNoProxy, ",")
	seen := map[string]bool{}
	for _, e := range list {
		seen[e] = true
	}
	for _, raw := range extra {
		for _, e := range strings.Split(raw, ",") {
			e = strings.TrimSpace(e)
			if e == "" || seen[e] {
				continue
			}
			for i := 0; i < len(e); i++ {
				c := e[i]
				if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._:*/[]", c) >= 0) {
					return "", fmt.Errorf("--no-proxy %q: character %q not allowed", e, c)
				}
			}
			seen[e] = true
			list = append(list, e)
		}
	}
	return strings.Join(list, ","), nil
}

// ServiceUnit checks a systemd service name and returns "name.service".
func ServiceUnit(name string) (string, error) {
	n := strings.TrimSuffix(strings.TrimSpace(name), ".service")
	if n == "" || len(n) > 240 || n == "." || n == ".." {
		return "", fmt.Errorf("--service %q: want a systemd service name, e.g. myagent", name)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":-_.@\\", c) >= 0) {
			return "", fmt.Errorf("--service %q: character %q is not allowed in a unit name", name, c)
		}
	}
	return n + ".service", nil
}

func dropInPath(unit string) string {
	return SystemdDir + "/" + unit + ".d/" + DropInName
}

// envPairs are the variables written everywhere: upper case for most
// programs, lower case for curl and wget (curl ignores HTTP_PROXY).
func envPairs(proxy, noProxy string) [][2]string {
	return [][2]string{
		{"HTTPS_PROXY", proxy}, {"https_proxy", proxy},
		{"HTTP_PROXY", proxy}, {"http_proxy", proxy},
		{"NO_PROXY", noProxy}, {"no_proxy", noProxy},
	}
}

func dropInContent(unit, proxy, noProxy string) []byte {
	var b strings.Builder
	b.WriteString(marker + "\n")
	b.WriteString("# Remove with: storegate-agent proxy clear --service " + strings.TrimSuffix(unit, ".service") + "\n")
	b.WriteString("[Service]\n")
	for _, kv := range envPairs(proxy, noProxy) {
		// systemd expands %-specifiers in Environment=; %% is a literal %.
		fmt.Fprintf(&b, "Environment=\"%s=%s\"\n", kv[0], strings.ReplaceAll(kv[1], "%", "%%"))
	}
	return []byte(b.String())
}

func profileContent(proxy, noProxy string) []byte {
	var b strings.Builder
	b.WriteString(marker + "\n")
	b.WriteString("# Remove with: storegate-agent proxy clear\n")
	for _, kv := range envPairs(proxy, noProxy) {
		fmt.Fprintf(&b, "export %s='%s'\n", kv[0], kv[1]) // safeForFiles: no ' inside
	}
	return []byte(b.String())
}

// plannedFile is one file Set would write.
type plannedFile struct {
	path    string // as on the target
	content []byte
	mode    fs.FileMode
	owner   func(root string) (uid, gid int, ok bool) // for a new file; nil: root's default
	note    string
	skip    string // not written, and why
}

func (f ProxyFiles) abs(p string) string {
	root := f.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, filepath.FromSlash(p))
}

// Set writes the proxy setting. Everything is checked before anything is
// written; files already right are left alone (and reported unchanged).
func (f ProxyFiles) Set(s ProxySettings) ([]Change, error) {
	u, err := ProxyURL(s.Gateway)
	if err != nil {
		return nil, err
	}
	noProxy, err := noProxyList(s.NoProxy)
	if err != nil {
		return nil, err
	}
	proxy := u.String()
	secret := u.User != nil
	var plan []plannedFile
	var changes []Change
	units := map[string]bool{}
	for _, name := range s.Services {
		unit, err := ServiceUnit(name)
		if err != nil {
			return nil, err
		}
		if units[unit] {
			continue
		}
		units[unit] = true
		mode := fs.FileMode(0o644)
		if secret {
			mode = 0o600 // systemd reads it as root
		}
		p := plannedFile{path: dropInPath(unit), content: dropInContent(unit, proxy, noProxy), mode: mode}
		if !f.unitExists(unit) {
			p.note = "no unit file " + unit + " yet; the drop-in applies once it exists"
		}
		plan = append(plan, p)
	}
	if s.OMS {
		if st, err := os.Stat(f.abs(OMSDir)); err == nil && st.IsDir() {
			p := plannedFile{path: OMSProxyFile, content: []byte(proxy), mode: 0o600}
			p.owner = func(root string) (int, int, bool) { return lookupIDs(root, omsUser, omsGroup) }
			if _, _, ok := p.owner(f.Root); !ok {
				p.note = "no " + omsUser + ":" + omsGroup + " account: the file stays root's and the agent may not read it"
			}
			plan = append(plan, p)
		} else {
			plan = append(plan, plannedFile{path: OMSProxyFile, skip: "the Log Analytics agent is not installed"})
		}
	}
	if s.Profile {
		p := plannedFile{path: ProfileSnippet, content: profileContent(proxy, noProxy), mode: 0o644}
		if secret {
			p.note = "contains the proxy credentials and is readable by every local user"
		}
		plan = append(plan, p)
	}
	for _, p := range plan {
		if p.skip != "" {
			changes = append(changes, Change{Path: p.path, Action: Skipped, Note: p.skip})
			continue
		}
		c, err := f.write(p)
		changes = append(changes, c)
		if err != nil {
			return changes, err
		}
	}
	return changes, nil
}

// unitExists looks for the unit where systemd loads units from.
func (f ProxyFiles) unitExists(unit string) bool {
	for _, dir := range []string{SystemdDir, "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(f.abs(dir + "/" + unit)); err == nil {
			return true
		}
	}
	return false
}

// write puts one planned file in place unless it is already right.
func (f ProxyFiles) write(p plannedFile) (Change, error) {
	c := Change{Path: p.path, Note: p.note}
	full := f.abs(p.path)
	old, err := os.ReadFile(full)
	st, serr := os.Lstat(full)
	switch {
	case err == nil && serr == nil && string(old) == string(p.content) && st.Mode().Perm() == p.mode:
		c.Action = Unchanged
		return c, nil
	case err == nil:
		c.Action = Updated
	case errors.Is(err, fs.ErrNotExist):
		c.Action = Created
	default:
		return c, fmt.Errorf("%s: %w", p.path, err)
	}
	if f.DryRun {
		return c, nil
	}
	uid, gid, own := -1, -1, false
	if serr == nil && st.Mode().IsRegular() {
		uid, gid, own = fileOwner(st) // keep who owns it (omsagent, say)
	}
	if !own && p.owner != nil {
		uid, gid, own = p.owner(f.Root)
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return c, fmt.Errorf("%s: %w", p.path, err)
	}
	if err := writeFileAtomic(full, p.content, p.mode, uid, gid, own); err != nil {
		return c, fmt.Errorf("%s: %w", p.path, err)
	}
	return c, nil
}

// writeFileAtomic writes a temp file beside path, fsyncs it, renames it over
// path and fsyncs the directory: a power cut leaves the old file or the new
// one, never a torn one.
func writeFileAtomic(path string, data []byte, mode fs.FileMode, uid, gid int, chown bool) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if chown && os.Geteuid() == 0 {
		if err = tmp.Chown(uid, gid); err != nil {
			return err
		}
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}

// ProxyFile is one proxy setting file as found, credentials masked.
type ProxyFile struct {
	Path    string
	Content string
}

// Show returns the proxy setting files that exist, credentials masked.
func (f ProxyFiles) Show() ([]ProxyFile, error) {
	paths, err := f.dropIns()
	if err != nil {
		return nil, err
	}
	paths = append(paths, OMSProxyFile, ProfileSnippet)
	var out []ProxyFile
	for _, p := range paths {
		b, err := os.ReadFile(f.abs(p))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, ProxyFile{Path: p, Content: MaskCredentials(string(b))})
	}
	return out, nil
}

// dropIns lists the storegate drop-ins of every systemd service, sorted.
func (f ProxyFiles) dropIns() ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(f.abs(SystemdDir), "*.service.d", DropInName))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		unitDir := filepath.Base(filepath.Dir(m))
		out = append(out, dropInPath(strings.TrimSuffix(unitDir, ".d")))
	}
	sort.Strings(out)
	return out, nil
}

// Clear removes the proxy setting: the drop-ins of services (all of them
// when services is empty), the profile snippet, and the OMS agent's
// proxy.conf, but that one only when it points at a gateway named in the
// files being removed or in gateway (it may be the site's own proxy).
func (f ProxyFiles) Clear(services []string, gateway string) ([]Change, error) {
	var targets []string
	if len(services) == 0 {
		all, err := f.dropIns()
		if err != nil {
			return nil, err
		}
		targets = all
	} else {
		for _, s := range services {
			unit, err := ServiceUnit(s)
			if err != nil {
				return nil, err
			}
			targets = append(targets, dropInPath(unit))
		}
	}
	ours := map[string]bool{}
	if gateway != "" {
		u, err := ProxyURL(gateway)
		if err != nil {
			return nil, err
		}
		ours[u.Host] = true
	}
	everything := len(services) == 0
	if everything {
		targets = append(targets, ProfileSnippet)
	}
	var changes []Change
	for _, p := range targets {
		b, err := os.ReadFile(f.abs(p))
		if errors.Is(err, fs.ErrNotExist) {
			changes = append(changes, Change{Path: p, Action: Unchanged, Note: "not there"})
			continue
		}
		if err != nil {
			return changes, fmt.Errorf("%s: %w", p, err)
		}
		if !strings.HasPrefix(string(b), marker+"\n") {
			changes = append(changes, Change{Path: p, Action: Skipped, Note: "not written by storegate-agent"})
			continue
		}
		if h := ManagedProxyHost(b); h != "" {
			ours[h] = true
		}
		if err := f.remove(p); err != nil {
			return changes, err
		}
		changes = append(changes, Change{Path: p, Action: Removed})
	}
	if everything {
		b, err := os.ReadFile(f.abs(OMSProxyFile))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return changes, fmt.Errorf("%s: %w", OMSProxyFile, err)
		case ours[omsProxyHost(b)]:
			if err := f.remove(OMSProxyFile); err != nil {
				return changes, err
			}
			changes = append(changes, Change{Path: OMSProxyFile, Action: Removed})
		default:
			changes = append(changes, Change{Path: OMSProxyFile, Action: Skipped, Note: "points at another proxy; left as is"})
		}
	}
	return changes, nil
}

func (f ProxyFiles) remove(p string) error {
	if f.DryRun {
		return nil
	}
	full := f.abs(p)
	if err := os.Remove(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", p, err)
	}
	dir := filepath.Dir(full)
	if strings.HasSuffix(dir, ".service.d") {
		_ = os.Remove(dir) // only if empty: other drop-ins stay
		dir = filepath.Dir(dir)
	}
	return durable.SyncDir(dir)
}

// ManagedProxyHost reads the gateway's host:port back from a file this
// package wrote (a drop-in or the profile snippet); "" when there is none.
func ManagedProxyHost(content []byte) string {
	const shell, unit = "export HTTPS_PROXY='", `Environment="HTTPS_PROXY=`
	for _, line := range strings.Split(string(content), "\n") {
		var v string
		switch {
		case len(line) > len(shell) && strings.HasPrefix(line, shell) && strings.HasSuffix(line, "'"):
			v = line[len(shell) : len(line)-1]
		case len(line) > len(unit) && strings.HasPrefix(line, unit) && strings.HasSuffix(line, `"`):
			v = strings.ReplaceAll(line[len(unit):len(line)-1], "%%", "%")
		default:
			continue
		}
		if u, err := url.Parse(v); err == nil && u.Host != "" {
			return u.Host
		}
		return ""
	}
	return ""
}

// omsProxyHost reads host:port from an OMS proxy.conf, which is
// [scheme://][user:password@]host[:port] on one line.
func omsProxyHost(content []byte) string {
	s := strings.TrimSpace(string(content))
	if s == "" {
		return ""
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Host
}

// MaskCredentials replaces the password of every user:password@ in s with
// ***, and a lone user@ secret likewise, so settings can be printed.
func MaskCredentials(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for len(s) > 0 {
		// Work on one token at a time: credentials never contain these.
		end := strings.IndexAny(s, " \t\r\n'\"")
		if end < 0 {
			end = len(s)
		}
		b.WriteString(maskToken(s[:end]))
		if end < len(s) {
			b.WriteByte(s[end])
			end++
		}
		s = s[end:]
	}
	return b.String()
}

func maskToken(t string) string {
	at := strings.LastIndexByte(t, '@')
	if at < 0 {
		return t
	}
	start := 0
	if i := strings.Index(t[:at], "://"); i >= 0 {
		start = i + 3
	} else if i := strings.IndexByte(t[:at], '='); i >= 0 {
		start = i + 1 // HTTPS_PROXY=user:pass@host
	}
	user := t[start:at]
	if i := strings.IndexByte(user, ':'); i >= 0 {
		user = user[:i]
		return t[:start] + user + ":***" + t[at:]
	}
	return t[:start] + "***" + t[at:]
}
