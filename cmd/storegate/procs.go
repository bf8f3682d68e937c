package main

import (
	"os"
	"runtime"

	"github.com/storegate/storegate/gateway/policy"
)

// applyMaxProcs sets GOMAXPROCS from limits.max_procs (0: one less than the
// CPUs, at least one). An explicit GOMAXPROCS in the environment, the Go
// runtime's own switch, wins. It returns the value in force.
func applyMaxProcs(snap *policy.Snapshot) int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := snap.File.Limits.MaxProcs
	if n == 0 {
		n = max(1, runtime.NumCPU()-1)
	}
	if runtime.GOMAXPROCS(0) != n {
		runtime.GOMAXPROCS(n)
	}
	return n
}
