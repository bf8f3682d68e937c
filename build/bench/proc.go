package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat. Linux fixes it at 100
// for user space on every architecture storegate targets.
const userHZ = 100

// statFields are the parts of /proc/PID/stat the harness reads.
type statFields struct {
	pid, ppid                    int
	utime, stime, cutime, cstime int64 // clock ticks
	rssPages                     int64
}

// parseStat parses one /proc/PID/stat line. The command name sits in
// parentheses and may itself hold spaces and parentheses, so the fields are
// counted from the last ')'.
func parseStat(b []byte) (statFields, error) {
	var f statFields
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return f, errors.New("stat: no command name in parentheses")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return f, fmt.Errorf("stat: pid: %w", err)
	}
	f.pid = pid
	// Fields after the name start at field 3 (state).
	rest := bytes.Fields(b[end+1:])
	const first = 3
	need := []struct {
		field int
		dst   *int64
	}{{14, &f.utime}, {15, &f.stime}, {16, &f.cutime}, {17, &f.cstime}, {24, &f.rssPages}}
	if len(rest) < 24-first+1 {
		return f, fmt.Errorf("stat: %d fields after the name, want at least %d", len(rest), 24-first+1)
	}
	ppid, err := strconv.Atoi(string(rest[4-first]))
	if err != nil {
		return f, fmt.Errorf("stat: ppid: %w", err)
	}
	f.ppid = ppid
	for _, n := range need {
		v, err := strconv.ParseInt(string(rest[n.field-first]), 10, 64)
		if err != nil {
			return f, fmt.Errorf("stat: field %d: %w", n.field, err)
		}
		*n.dst = v
	}
	return f, nil
}

// procSample is the CPU and memory of a process and all its descendants.
type procSample struct {
	cpu    time.Duration // user+system, including reaped children
	rssKiB int64         // resident set, summed (shared pages count once per process)
	procs  int
}

// sampleTree reads procRoot (normally /proc) and sums the process pid and every
// live descendant. Threads are included in their process's figures.
func sampleTree(procRoot string, pid int) (procSample, error) {
	var s procSample
	rootStat, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return s, err
	}
	root, err := parseStat(rootStat)
	if err != nil {
		return s, err
	}
	all := map[int]statFields{pid: root}
	children := map[int][]int{}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return s, err
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		f, err := parseStat(b)
		if err != nil {
			continue
		}
		all[p] = f
		children[f.ppid] = append(children[f.ppid], p)
	}
	page := int64(os.Getpagesize())
	queue := []int{pid}
	seen := map[int]bool{}
	for len(queue) > 0 && len(seen) < len(all) {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		f := all[p]
		ticks := f.utime + f.stime + f.cutime + f.cstime
		s.cpu += time.Duration(ticks) * time.Second / userHZ
		s.rssKiB += f.rssPages * page / 1024
		s.procs++
		queue = append(queue, children[p]...)
	}
	return s, nil
}

// openFDs counts the file descriptors the process pid holds.
func openFDs(procRoot string, pid int) (int, error) {
	ents, err := os.ReadDir(filepath.Join(procRoot, strconv.Itoa(pid), "fd"))
	return len(ents), err
}

// rssSplit reads RssAnon and RssFile (KiB) from /proc/PID/status: how much of
// a process's resident memory is its own heap and stacks and how much is
// mapped files, mostly its executable's text.
func rssSplit(procRoot string, pid int) (anonKiB, fileKiB int64, err error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(k) {
		case "RssAnon":
			dst = &anonKiB
		case "RssFile":
			dst = &fileKiB
		default:
			continue
		}
		f := bytes.Fields(v)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, 0, fmt.Errorf("status: %s: unexpected %q", k, v)
		}
		if *dst, err = strconv.ParseInt(string(f[0]), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("status: %s: %w", k, err)
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("status: no RssAnon/RssFile lines")
	}
	return anonKiB, fileKiB, nil
}
