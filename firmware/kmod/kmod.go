// Package kmod loads Linux kernel modules with their dependencies, read from a
// module tree's modules.dep as depmod writes it, using finit_module(2).
package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Index maps module names to their file and their dependencies.
type Index struct {
	path map[string]string   // name -> path relative to the module tree
	deps map[string][]string // name -> dependency names, in modules.dep order
}

// Name returns the module name of a file path or a name as a user writes it:
// the base name without .ko and its compression suffix, with '-' read as '_'.
func Name(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// ParseDep reads modules.dep: one line per module, "path: dep-path dep-path ...".
// Blank lines and lines starting with '#' are skipped.
func ParseDep(r io.Reader) (*Index, error) {
	ix := &Index{path: map[string]string{}, deps: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(text, ":")
		mod = strings.TrimSpace(mod)
		if !ok || mod == "" || !strings.Contains(filepath.Base(mod), ".ko") {
			return nil, fmt.Errorf("modules.dep line %d: want \"path.ko: deps...\", got %q", line, text)
		}
		if filepath.IsAbs(mod) || strings.Contains(mod, "..") {
			return nil, fmt.Errorf("modules.dep line %d: path %q leaves the module tree", line, mod)
		}
		name := Name(mod)
		ix.path[name] = mod
		var deps []string
		for _, d := range strings.Fields(rest) {
			if filepath.IsAbs(d) || strings.Contains(d, "..") {
				return nil, fmt.Errorf("modules.dep line %d: path %q leaves the module tree", line, d)
			}
			deps = append(deps, Name(d))
		}
		ix.deps[name] = deps
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	return ix, nil
}

// Order returns the files to load, dependencies first, for the named modules,
// each file once. Names the index does not know are returned in missing (they
// may be built into the kernel, or absent from this kernel's configuration).
func (ix *Index) Order(names ...string) (files []string, missing []string) {
	done := map[string]bool{}
	var visit func(name string, depth int)
	visit = func(name string, depth int) {
		if done[name] || depth > 64 {
			return
		}
		done[name] = true
		deps := ix.deps[name]
		// modules.dep lists a module's whole dependency closure with the
		// modules that must load first at the end, so walk it backwards.
		for i := len(deps) - 1; i >= 0; i-- {
			visit(deps[i], depth+1)
		}
		if p, ok := ix.path[name]; ok {
			files = append(files, p)
		}
	}
	for _, n := range names {
		n = Name(n)
		if _, ok := ix.path[n]; !ok {
			missing = append(missing, n)
			continue
		}
		visit(n, 0)
	}
	sort.Strings(missing)
	return files, missing
}

// Len is the number of modules in the index.
func (ix *Index) Len() int { return len(ix.path) }

// Result says what Load did with one file.
type Result struct {
	File string
	Err  error // nil: loaded or already loaded
}

// Loader loads module files from a module tree.
type Loader struct {
	// Dir is the module tree, e.g. /lib/modules/6.1.0-26-amd64.
	Dir string
	// Insert loads one module file. Nil means finit_module(2).
	Insert func(path string) error
}

// Load loads the named modules and their dependencies and reports each file.
// A module that is already loaded (EEXIST) counts as loaded.
func (l Loader) Load(names ...string) (results []Result, missing []string, err error) {
	f, err := os.Open(filepath.Join(l.Dir, "modules.dep"))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	ix, err := ParseDep(f)
	if err != nil {
		return nil, nil, err
	}
	insert := l.Insert
	if insert == nil {
		insert = finit
	}
	files, missing := ix.Order(names...)
	for _, file := range files {
		err := insert(filepath.Join(l.Dir, file))
		if errors.Is(err, unix.EEXIST) {
			err = nil
		}
		results = append(results, Result{File: file, Err: err})
	}
	return results, missing, nil
}

func finit(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(path, ".ko") { // .ko.xz, .ko.zst, .ko.gz: the kernel decompresses
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil {
		return fmt.Errorf("finit_module %s: %w", filepath.Base(path), err)
	}
	return nil
}
