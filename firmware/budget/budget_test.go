package budget

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s", root)
	}
	return root
}

func goTool(t *testing.T, root string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return string(out)
}

func platformEnv(p string) []string {
	goos, goarch, _ := strings.Cut(p, "/")
	return []string{"CGO_ENABLED=0", "GOOS=" + goos, "GOARCH=" + goarch, "GOARM=7"}
}

// TestNoDeniedDependencies fails when a release binary depends on a denied
// package on any platform, naming who imports it.
func TestNoDeniedDependencies(t *testing.T) {
	root := repoRoot(t)
	denied := Denied()
	for _, p := range sortedKeys(Size()) {
		t.Run(strings.ReplaceAll(p, "/", "-"), func(t *testing.T) {
			out := goTool(t, root, platformEnv(p), "list", "-deps", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "./cmd/storegate")
			check(t, out, denied)
		})
	}
	t.Run("init", func(t *testing.T) {
		out := goTool(t, root, platformEnv("linux/amd64"), "list", "-deps", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "./firmware/init")
		check(t, out, denied)
	})
}

// check reports each denied package present in a "pkg: imports..." listing.
func check(t *testing.T, listing string, denied map[string]string) {
	t.Helper()
	for _, msg := range findDenied(listing, denied) {
		t.Error(msg)
	}
}

// findDenied returns one message per denied package in the listing, naming
// the packages that import it.
func findDenied(listing string, denied map[string]string) []string {
	importers := map[string][]string{}
	var found []string
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		for _, imp := range strings.Fields(imports) {
			importers[imp] = append(importers[imp], pkg)
		}
		if _, bad := denied[pkg]; bad {
			found = append(found, pkg)
		}
	}
	sort.Strings(found)
	var msgs []string
	for _, pkg := range found {
		msgs = append(msgs, fmt.Sprintf("depends on %s (imported by %v): %s", pkg, importers[pkg], denied[pkg]))
	}
	return msgs
}

// TestGatewayImports fails when the proxy's own packages import a package
// they must not.
func TestGatewayImports(t *testing.T) {
	root := repoRoot(t)
	out := goTool(t, root, nil, "list", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", "./gateway/...")
	denied := DeniedInGateway()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		for _, imp := range strings.Fields(imports) {
			for d, why := range denied {
				if imp == d || strings.HasPrefix(imp, d+"/") {
					t.Errorf("%s imports %s: %s", pkg, imp, why)
				}
			}
		}
	}
}

// TestSizeBudget checks the cross-built binaries in STOREGATE_CROSS_DIR
// (make cross-test), or else builds linux/amd64 and the init as a release
// does and checks those.
func TestSizeBudget(t *testing.T) {
	root := repoRoot(t)
	budgets := Size()
	dir := os.Getenv("STOREGATE_CROSS_DIR")
	version := os.Getenv("STOREGATE_VERSION")
	if dir == "" {
		dir, version = t.TempDir(), "budget"
		build(t, root, "linux/amd64", "./cmd/storegate", filepath.Join(dir, "storegate-budget-linux-amd64"))
		budgets = map[string]int64{"linux/amd64": budgets["linux/amd64"]}
	}
	for _, p := range sortedKeys(budgets) {
		goos, goarch, _ := strings.Cut(p, "/")
		name := fmt.Sprintf("storegate-%s-%s-%s", version, goos, goarch)
		if goos == "windows" {
			name += ".exe"
		}
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		t.Logf("%-14s %10d bytes (budget %d, %.0f%%)", p, st.Size(), budgets[p], 100*float64(st.Size())/float64(budgets[p]))
		if st.Size() > budgets[p] {
			t.Errorf("%s: %d bytes is over the budget of %d", name, st.Size(), budgets[p])
		}
	}
	initBin := filepath.Join(t.TempDir(), "init")
	build(t, root, "linux/amd64", "./firmware/init", initBin)
	st, err := os.Stat(initBin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%-14s %10d bytes (budget %d)", "firmware init", st.Size(), int64(InitSize))
	if st.Size() > InitSize {
		t.Errorf("firmware init: %d bytes is over the budget of %d", st.Size(), InitSize)
	}
}

func build(t *testing.T, root, platform, pkg, out string) {
	t.Helper()
	goTool(t, root, platformEnv(platform), "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=", "-o", out, pkg)
}

func sortedKeys(m map[string]int64) []string {
	var k []string
	for p := range m {
		k = append(k, p)
	}
	sort.Strings(k)
	return k
}

// TestFindDeniedNamesTheImporter runs the check on a made-up listing, so a
// broken check cannot pass silently.
func TestFindDeniedNamesTheImporter(t *testing.T) {
	listing := "example/cmd: example/lib fmt\nexample/lib: net/http/pprof\nnet/http/pprof: net/http\nfmt: \n"
	got := findDenied(listing, Denied())
	if len(got) != 1 || !strings.Contains(got[0], "net/http/pprof (imported by [example/lib])") {
		t.Fatalf("findDenied = %q", got)
	}
	if got := findDenied("fmt: io\nio: \n", Denied()); len(got) != 0 {
		t.Fatalf("clean listing: %q", got)
	}
}
