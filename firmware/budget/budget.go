// Package budget holds what the release binaries may weigh and import: size
// budgets per platform and a denylist of packages the gateway must not pull
// in. Its test enforces them; RELEASING.md explains them.
package budget

// MiB is 2^20 bytes.
const MiB = 1 << 20

// Size is the most a stripped release binary may weigh, by GOOS/GOARCH.
// Raise a budget only with a reason in the commit message.
func Size() map[string]int64 {
	return map[string]int64{
		"linux/amd64":   12 * MiB,
		"linux/arm64":   12 * MiB,
		"linux/arm":     12 * MiB,
		"windows/amd64": 12 * MiB,
	}
}

// InitSize is the budget of the firmware's init (PID 1).
const InitSize = 4 * MiB

// Denied lists packages no release binary may depend on, with the reason.
func Denied() map[string]string {
	return map[string]string{
		"net/http/pprof":             "exposes profiling endpoints and internals; profile in benchmarks instead",
		"expvar":                     "registers /debug/vars on the default mux",
		"database/sql":               "the gateway keeps no database; the spool is files",
		"plugin":                     "binaries are static and self-contained",
		"runtime/cgo":                "CGO is off: static binaries that run on any store box",
		"net/rpc":                    "no RPC surface beside the documented ones",
		"net/smtp":                   "the gateway sends no mail",
		"html/template":              "no HTML rendering in a gateway",
		"testing":                    "test code must not reach a release binary",
		"github.com/creack/pty":      "pseudo-terminals are for the console's tests",
		"golang.org/x/net/trace":     "registers /debug/requests on the default mux",
		"golang.org/x/net/websocket": "no WebSocket surface",
	}
}

// DeniedInGateway lists packages the proxy's own code (gateway/...) must not
// import directly, with the reason.
func DeniedInGateway() map[string]string {
	return map[string]string{
		"os/exec":                                  "the proxy runs no programs; service and firmware code may",
		"github.com/storegate/storegate/device":    "gateway never imports device (imports point inwards)",
		"github.com/storegate/storegate/agentside": "gateway never imports agentside",
	}
}
