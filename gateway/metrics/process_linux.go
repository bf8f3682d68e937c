package metrics

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

func processStats(m *Writer) {
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		if st, ok := parseStat(b); ok {
			m.Counter("process_cpu_seconds_total", "User and system CPU time spent, in seconds.", float64(st.utime+st.stime)/clockTicks)
		}
	}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if size, resident, ok := parseStatm(b); ok {
			page := float64(os.Getpagesize())
			m.Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", float64(size)*page)
			m.Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", float64(resident)*page)
		}
	}
	if n, err := countFDs(); err == nil {
		m.Gauge("process_open_fds", "Open file descriptors.", float64(n))
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		m.Gauge("process_max_fds", "The limit on open file descriptors (soft).", float64(lim.Cur))
	}
}

type procStat struct {
	utime, stime int64 // clock ticks
}

// parseStat reads the fields this file needs from /proc/PID/stat. The
// command name (field 2) is in parentheses and may hold spaces and ')', so
// the fields are counted from the last ')'.
func parseStat(b []byte) (procStat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime 15.
	if len(f) < 13 {
		return procStat{}, false
	}
	var st procStat
	var err error
	for _, x := range []struct {
		dst *int64
		idx int
	}{{&st.utime, 11}, {&st.stime, 12}} {
		if *x.dst, err = strconv.ParseInt(string(f[x.idx]), 10, 64); err != nil {
			return procStat{}, false
		}
	}
	return st, true
}

// parseStatm reads the first two fields of /proc/PID/statm: the total and
// the resident size, in pages.
func parseStatm(b []byte) (size, resident int64, ok bool) {
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, 0, false
	}
	size, err1 := strconv.ParseInt(string(f[0]), 10, 64)
	resident, err2 := strconv.ParseInt(string(f[1]), 10, 64)
	if err1 != nil || err2 != nil || size < 0 || resident < 0 {
		return 0, 0, false
	}
	return size, resident, true
}

// countFDs counts the entries of /proc/self/fd, less the one reading it.
func countFDs() (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(512)
		n += len(names)
		if err != nil || len(names) == 0 {
			break
		}
	}
	return n - 1, nil
}
