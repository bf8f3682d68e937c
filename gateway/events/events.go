// Package events owns storegate's event IDs (those of the OMS Gateway) and the
// sink that writes them as JSON lines without ever blocking the proxy.
package events

// ID is an event identifier. The numbers are the OMS Gateway's, so monitoring
// rules written for the original keep working.
type ID uint16

// Event IDs. 1xx are informational or decisions, 4xx are errors.
const (
	Info            ID = 100 // information (reloads, summaries)
	Started         ID = 101 // service started
	Stopped         ID = 102 // service stopped
	ConnectReceived ID = 103 // CONNECT received (and the tunnel summary)
	NotConnect      ID = 104 // a request that is not CONNECT
	NotAllowed      ID = 105 // target or client certificate not allowed
	TLSVersion      ID = 106 // unsupported TLS/SSL version
	TLSVerified     ID = 107 // TLS session verified
	OtherError      ID = 400 // any other error
	BadConfig       ID = 401 // bad configuration
	TLSParse        ID = 402 // TLS handshake parse error
	NetworkError    ID = 403 // the target could not be reached
)

// Level is the severity written with each event; it follows from the ID.
func (id ID) Level() string {
	switch {
	case id >= 400:
		return "error"
	case id == NotAllowed || id == TLSVersion || id == NotConnect:
		return "warn"
	default:
		return "info"
	}
}

// Field keys used across the gateway. Keeping them here keeps log queries stable.
const (
	KeyClient     = "client"
	KeyTarget     = "target"
	KeyDecision   = "decision"
	KeyReason     = "reason"
	KeyBytesUp    = "bytes_up"
	KeyBytesDown  = "bytes_down"
	KeyDurationMS = "duration_ms"
	KeyListen     = "listen"
	KeyAdmin      = "admin"
	KeyPolicy     = "policy"
	KeyVersion    = "version"
	KeyError      = "error"
	KeyStatus     = "status"
	KeyRelay      = "relay"
	KeyFile       = "file"
	KeyLine       = "line"
	KeyKey        = "key"
	KeyMethod     = "method"
	KeyHash       = "hash"
	KeyChanges    = "changes"
	KeySNI        = "sni"
	KeyTLSVersion = "tls_version"
	KeyCipher     = "cipher"
	KeySubject    = "subject"
	KeyPath       = "path"
	KeyID         = "id"
	KeyState      = "state"
	KeyOrigin     = "origin" // which allowlist entry allowed it: policy or preset:NAME
	KeyVia        = "via"    // direct, or the relay's host:port
	KeyIdleMS     = "idle_timeout_ms"
	KeyProcs      = "procs"
	KeyCut        = "tunnels_cut"
)

// Field is one key/value pair of an event. Only strings and integers are
// supported, so encoding needs no reflection and no allocation.
type Field struct {
	Key   string
	Str   string
	Int   int64
	isInt bool
}

// Str makes a string field.
func Str(key, value string) Field { return Field{Key: key, Str: value} }

// Int makes an integer field.
func Int(key string, value int64) Field { return Field{Key: key, Int: value, isInt: true} }

// Emitter is what the rest of the gateway needs from an event sink.
type Emitter interface {
	Emit(id ID, msg string, fields ...Field)
}
