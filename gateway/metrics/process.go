package metrics

import "runtime"

// Process writes the standard process and Go runtime series that fleet
// monitoring expects of any exporter: go_goroutines everywhere, and on Linux
// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds and process_max_fds (read
// from /proc/self). A series the system cannot give is left out.
func (m *Writer) Process() {
	m.Gauge("go_goroutines", "Goroutines that currently exist.", float64(runtime.NumGoroutine()))
	processStats(m)
}
