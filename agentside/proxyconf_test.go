package agentside

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// fakeRoot is a terminal's file system with an OMS agent installed (its
// directory and its omsagent:omiusers accounts) when oms is set.
func fakeRoot(t *testing.T, oms bool) string {
	t.Helper()
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nomsagent:x:998:997:OMS agent:/var/opt/microsoft/omsagent/run:/bin/bash\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\nomiusers:x:997:omsagent\n"), 0o644))
	if oms {
		must(t, os.MkdirAll(filepath.Join(root, OMSDir), 0o755))
	}
	// pos-agent is installed (by its package); other services are not.
	must(t, os.MkdirAll(filepath.Join(root, "lib", "systemd", "system"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "lib", "systemd", "system", "pos-agent.service"), []byte("[Service]\nExecStart=/bin/true\n"), 0o644))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tree renders every file under root except the fixture's accounts: path,
// mode, content.
func tree(t *testing.T, root string) string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := "/" + filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
		if rel == "/etc/passwd" || rel == "/etc/group" || strings.HasPrefix(rel, "/lib/") {
			return nil
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("== %s %04o\n%s\n", rel, st.Mode().Perm(), b))
		return nil
	})
	must(t, err)
	sort.Strings(out)
	return strings.Join(out, "")
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	must(t, err)
	if got != string(want) {
		t.Errorf("%s differs (go test -run %s -update rewrites it)\n--- got\n%s--- want\n%s", path, t.Name(), got, want)
	}
}

func lines(changes []Change, dry bool) string {
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.Line(dry) + "\n")
	}
	return b.String()
}

func TestProxySetGolden(t *testing.T) {
	cases := []struct {
		name string
		oms  bool
		s    ProxySettings
	}{
		{"plain", true, ProxySettings{Gateway: "http://store-gw.local:8080", Services: []string{"pos-agent", "inventory.service"},
			NoProxy: []string{"10.0.0.0/8,printer.local"}, OMS: true, Profile: true}},
		{"credentials", true, ProxySettings{Gateway: "http://agent:s3cret%25x@10.1.2.3:8080", Services: []string{"pos-agent"}, OMS: true, Profile: true}},
		{"no-oms-agent", false, ProxySettings{Gateway: "https://[fd00::1]:8443", OMS: true, Profile: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.oms)
			pf := ProxyFiles{Root: root}

			dry, err := ProxyFiles{Root: root, DryRun: true}.Set(tc.s)
			must(t, err)
			if got := tree(t, root); got != "" {
				t.Fatalf("dry run wrote files:\n%s", got)
			}
			changes, err := pf.Set(tc.s)
			must(t, err)
			if lines(dry, false) != lines(changes, false) {
				t.Errorf("dry run said\n%s\nbut set did\n%s", lines(dry, false), lines(changes, false))
			}
			got := "$ set\n" + lines(changes, false) + tree(t, root)

			again, err := pf.Set(tc.s)
			must(t, err)
			for _, c := range again {
				if c.Action != Unchanged && c.Action != Skipped {
					t.Errorf("second set: %s", c.Line(false))
				}
			}
			shown, err := pf.Show()
			must(t, err)
			got += "$ show\n"
			for _, f := range shown {
				got += "== " + f.Path + "\n" + f.Content + "\n"
			}
			golden(t, "set-"+tc.name+".txt", got)

			if st, err := os.Stat(filepath.Join(root, OMSProxyFile)); err == nil && os.Geteuid() == 0 {
				if uid, gid, _ := fileOwner(st); uid != 998 || gid != 997 {
					t.Errorf("new proxy.conf owned by %d:%d, want omsagent:omiusers 998:997", uid, gid)
				}
			}

			if _, show, _ := strings.Cut(got, "$ show\n"); strings.Contains(show, "s3cret") {
				t.Errorf("show printed the password")
			}
			if strings.Contains(lines(changes, true)+lines(again, true), "s3cret") {
				t.Error("the change list printed the password")
			}
			leftovers, _ := filepath.Glob(filepath.Join(root, "etc", "*", "*.tmp-*"))
			if len(leftovers) > 0 {
				t.Errorf("temp files left: %v", leftovers)
			}
		})
	}
}

func TestProxySetBadInputChangesNothing(t *testing.T) {
	cases := []struct {
		name, want string
		s          ProxySettings
	}{
		{"no port", "give the port", ProxySettings{Gateway: "http://box"}},
		{"path", "no path", ProxySettings{Gateway: "http://box:8080/x"}},
		{"scheme", "want http://", ProxySettings{Gateway: "socks5://box:1080"}},
		{"port range", "1-65535", ProxySettings{Gateway: "http://box:70000"}},
		{"quote in host", "bad host", ProxySettings{Gateway: "http://bo'x:8080"}},
		{"service path", "--service", ProxySettings{Gateway: "http://box:8080", Services: []string{"ok", "../../etc/passwd"}}},
		{"service empty", "--service", ProxySettings{Gateway: "http://box:8080", Services: []string{".service"}}},
		{"no-proxy space", "--no-proxy", ProxySettings{Gateway: "http://box:8080", NoProxy: []string{"a b"}}},
		{"password in error", "no path", ProxySettings{Gateway: "http://u:hunter2@box:8080/p"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, true)
			tc.s.OMS, tc.s.Profile = true, true
			_, err := ProxyFiles{Root: root}.Set(tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %v", err)
			}
			if got := tree(t, root); got != "" {
				t.Errorf("bad input wrote:\n%s", got)
			}
		})
	}
}

func TestProxySetKeepsOwnerOfExistingOMSFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file another owner")
	}
	root := fakeRoot(t, true)
	p := filepath.Join(root, OMSProxyFile)
	must(t, os.WriteFile(p, []byte("http://old-proxy:3128"), 0o600))
	must(t, os.Chown(p, 1234, 4321))
	changes, err := ProxyFiles{Root: root}.Set(ProxySettings{Gateway: "http://gw:8080", OMS: true})
	must(t, err)
	if len(changes) != 1 || changes[0].Action != Updated {
		t.Fatalf("changes: %v", changes)
	}
	st, _ := os.Stat(p)
	uid, gid, _ := fileOwner(st)
	b, _ := os.ReadFile(p)
	if uid != 1234 || gid != 4321 || st.Mode().Perm() != 0o600 || string(b) != "http://gw:8080" {
		t.Errorf("owner %d:%d mode %o content %q", uid, gid, st.Mode().Perm(), b)
	}
}

func TestProxyClear(t *testing.T) {
	root := fakeRoot(t, true)
	pf := ProxyFiles{Root: root}
	_, err := pf.Set(ProxySettings{Gateway: "http://gw:8080", Services: []string{"a", "b"}, OMS: true, Profile: true})
	must(t, err)
	// Someone else's drop-in beside ours, and one that only looks like ours.
	other := filepath.Join(root, SystemdDir, "a.service.d", "other.conf")
	must(t, os.WriteFile(other, []byte("[Service]\nNice=5\n"), 0o644))
	foreign := filepath.Join(root, SystemdDir, "c.service.d", DropInName)
	must(t, os.MkdirAll(filepath.Dir(foreign), 0o755))
	must(t, os.WriteFile(foreign, []byte("[Service]\nEnvironment=X=1\n"), 0o644))

	changes, err := pf.Clear([]string{"b"}, "")
	must(t, err)
	if lines(changes, false) != "removed /etc/systemd/system/b.service.d/storegate-proxy.conf\n" {
		t.Errorf("clear b:\n%s", lines(changes, false))
	}
	if _, err := os.Stat(filepath.Join(root, SystemdDir, "b.service.d")); !os.IsNotExist(err) {
		t.Errorf("empty drop-in directory kept: %v", err)
	}

	dry, err := ProxyFiles{Root: root, DryRun: true}.Clear(nil, "")
	must(t, err)
	before := tree(t, root)
	changes, err = pf.Clear(nil, "")
	must(t, err)
	want := `removed /etc/systemd/system/a.service.d/storegate-proxy.conf
skipped /etc/systemd/system/c.service.d/storegate-proxy.conf (not written by storegate-agent)
removed /etc/profile.d/storegate-proxy.sh
removed /etc/opt/microsoft/omsagent/proxy.conf
`
	if got := lines(changes, false); got != want {
		t.Errorf("clear:\n%s\nwant\n%s", got, want)
	}
	if strings.ReplaceAll(lines(dry, true), "would remove", "removed") != want {
		t.Errorf("dry clear said:\n%s", lines(dry, true))
	}
	if !strings.Contains(before, "/etc/profile.d/storegate-proxy.sh") {
		t.Error("dry clear removed files")
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("someone else's drop-in went: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a drop-in without our marker went: %v", err)
	}

	// A proxy.conf pointing at the site's own proxy stays.
	must(t, os.WriteFile(filepath.Join(root, OMSProxyFile), []byte("user:pw@corp-proxy:3128"), 0o600))
	changes, err = pf.Clear(nil, "http://gw:8080")
	must(t, err)
	if got := lines(changes, false); !strings.Contains(got, "skipped /etc/opt/microsoft/omsagent/proxy.conf (points at another proxy") {
		t.Errorf("clear with a foreign proxy.conf:\n%s", got)
	}
	// ... unless it is the gateway named on the command line.
	must(t, os.WriteFile(filepath.Join(root, OMSProxyFile), []byte("http://gw:8080"), 0o600))
	changes, err = pf.Clear(nil, "http://gw:8080")
	must(t, err)
	if got := lines(changes, false); !strings.Contains(got, "removed /etc/opt/microsoft/omsagent/proxy.conf") {
		t.Errorf("clear --gateway:\n%s", got)
	}
}

// TestProfileSnippetInShell sources the snippet in a real shell and reads
// the environment back, password and all.
func TestProfileSnippetInShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	root := fakeRoot(t, false)
	_, err = ProxyFiles{Root: root}.Set(ProxySettings{Gateway: "http://u:p$x%25;&@gw:8080", Profile: true})
	must(t, err)
	out, err := exec.Command(sh, "-c", `. "$1" && printf '%s\n' "$HTTPS_PROXY" "$http_proxy" "$no_proxy"`, "sh",
		filepath.Join(root, ProfileSnippet)).CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	want := "http://u:p$x%25;&@gw:8080\nhttp://u:p$x%25;&@gw:8080\nlocalhost,127.0.0.1,::1\n"
	if string(out) != want {
		t.Errorf("sh read:\n%s\nwant\n%s", out, want)
	}
}

// TestDropInPassesSystemdAnalyze has systemd's own parser read the drop-in.
func TestDropInPassesSystemdAnalyze(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze")
	}
	root := fakeRoot(t, false)
	env, err := exec.LookPath("env")
	must(t, err)
	must(t, os.MkdirAll(filepath.Join(root, "usr", "bin"), 0o755))
	b, err := os.ReadFile(env)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(root, "usr", "bin", "env"), b, 0o755))
	must(t, os.MkdirAll(filepath.Join(root, SystemdDir), 0o755))
	unit := "[Unit]\nDescription=test\nDefaultDependencies=no\n[Service]\nExecStart=/usr/bin/env\n"
	must(t, os.WriteFile(filepath.Join(root, SystemdDir, "pos-agent.service"), []byte(unit), 0o644))
	_, err = ProxyFiles{Root: root}.Set(ProxySettings{Gateway: "http://u:p%25q@gw:8080", Services: []string{"pos-agent"}})
	must(t, err)
	out, err := exec.Command(sa, "verify", "--root="+root, "pos-agent.service").CombinedOutput()
	if err != nil && strings.Contains(string(out), "not found") && !strings.Contains(string(out), DropInName) {
		t.Skipf("systemd-analyze cannot verify here: %v\n%s", err, out)
	}
	if err != nil || strings.Contains(string(out), DropInName) {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestMaskCredentials(t *testing.T) {
	cases := []struct{ in, want string }{
		{"http://u:secret@gw:8080", "http://u:***@gw:8080"},
		{`Environment="HTTPS_PROXY=http://u:se:cr@et@gw:8080"`, `Environment="HTTPS_PROXY=http://u:***@gw:8080"`},
		{"export https_proxy='http://token@gw:1'", "export https_proxy='http://***@gw:1'"},
		{"user:pw@corp:3128", "user:***@corp:3128"},
		{"HTTPS_PROXY=u:pw@h:1 x", "HTTPS_PROXY=u:***@h:1 x"},
		{"http://gw:8080\nno credentials", "http://gw:8080\nno credentials"},
	}
	for _, tc := range cases {
		if got := MaskCredentials(tc.in); got != tc.want {
			t.Errorf("MaskCredentials(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestAccountID(t *testing.T) {
	content := []byte("root:x:0:0::/root:/bin/sh\nomsagent:x:998:997::/:/bin/false\nbad:x:-1:0::/:/bin/false\nshort:x\n")
	cases := []struct {
		name string
		id   int
		ok   bool
	}{{"root", 0, true}, {"omsagent", 998, true}, {"bad", -1, false}, {"short", -1, false}, {"missing", -1, false}, {"", -1, false}}
	for _, tc := range cases {
		if id, ok := accountID(content, tc.name); id != tc.id || ok != tc.ok {
			t.Errorf("accountID(%q) = %d, %v; want %d, %v", tc.name, id, ok, tc.id, tc.ok)
		}
	}
}

func FuzzMaskCredentials(f *testing.F) {
	f.Add("secret")
	f.Add("p%%40")
	f.Add("pw@h@i")
	f.Add("a:b:c")
	f.Fuzz(func(t *testing.T, s string) {
		_ = MaskCredentials(s)
		// Whatever the password, a written line never prints it.
		u, err := ProxyURL("http://user:" + s + "@gw:8080")
		if err != nil || u.User == nil || u.User.Username() != "user" {
			return
		}
		if _, has := u.User.Password(); !has {
			return
		}
		got := MaskCredentials("export HTTPS_PROXY='" + u.String() + "'")
		if want := "export HTTPS_PROXY='http://user:***@gw:8080'"; got != want {
			t.Fatalf("masked %q as %q, want %q", u.String(), got, want)
		}
	})
}

func FuzzManagedProxyHost(f *testing.F) {
	f.Add([]byte(string(profileContent("http://gw:8080", DefaultNoProxy))))
	f.Add(dropInContent("a.service", "http://u:p%25@gw:8080", DefaultNoProxy))
	f.Add([]byte("export HTTPS_PROXY='%zz'\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = ManagedProxyHost(b)
		_ = omsProxyHost(b)
		_, _ = accountID(b, "omsagent")
	})
}

func FuzzProxyURL(f *testing.F) {
	for _, s := range []string{"http://gw:8080", "https://u:p@[::1]:1", "http://a b:1", "http://gw:8080/x", "http://%41:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ProxyURL(s)
		if err != nil {
			return
		}
		out := u.String()
		if !safeForFiles(out) {
			t.Fatalf("ProxyURL(%q) = %q, unsafe to write", s, out)
		}
		if again, err := ProxyURL(out); err != nil || again.String() != out {
			t.Fatalf("ProxyURL(%q) = %q, which reads back as %v, %v", s, out, again, err)
		}
		if h := ManagedProxyHost(profileContent(out, DefaultNoProxy)); h != u.Host {
			t.Fatalf("profile for %q reads back host %q, want %q", out, h, u.Host)
		}
		if h := ManagedProxyHost(dropInContent("a.service", out, DefaultNoProxy)); h != u.Host {
			t.Fatalf("drop-in for %q reads back host %q, want %q", out, h, u.Host)
		}
	})
}
