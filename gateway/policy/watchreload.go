package policy

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/storegate/storegate/gateway/events"
)

// Reloader turns new content of a watched policy file into a Snapshot and
// puts it in force, or refuses it and keeps the policy in force. It is the
// glue between a Watcher and the gateway: Reload is a Watcher's OnChange,
// ReadFailed its OnError and Related its Related.
//
// A refused file (bad YAML, a bad value, a listener that cannot open) emits
// event 401 for each problem, naming the file, line and key, and calls
// Failed with the hash of the bytes on disk. A file put in force emits event
// 100 with a one-line summary of what changed and calls Succeeded.
type Reloader struct {
	// Path is the policy file, as named in events and in the snapshot.
	Path string
	// Apply puts a snapshot in force, e.g. (*gateway.Server).Apply. Required.
	Apply func(*Snapshot) error
	// Current returns the snapshot in force, e.g. (*gateway.Server).Policy. Required.
	Current func() *Snapshot
	// Failed records a refused file, e.g. (*gateway.Server).ReloadFailed. Nil: not recorded.
	Failed func(err error, diskHash string)
	// Succeeded clears a recorded refusal, e.g. (*gateway.Server).ReloadSucceeded. Nil: nothing.
	Succeeded func()
	// Emit receives events 100 and 401. Nil: discarded.
	Emit events.Emitter
	// Now stamps snapshots. Nil: time.Now.
	Now func() time.Time
}

// maxErrorEvents bounds the events one refused file produces.
const maxErrorEvents = 10

// Reload parses, validates and compiles data and applies the result. It
// returns the refusal, if any, after reporting it.
func (r *Reloader) Reload(data []byte, sum string) error {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	f, err := Parse(data, r.Path)
	if err != nil {
		return r.refuse(err, sum)
	}
	snap, err := Compile(f, data, r.Path, now())
	if err != nil {
		return r.refuse(err, sum)
	}
	cur := r.Current()
	if err := r.Apply(snap); err != nil {
		return r.refuse(&Error{File: r.Path, Key: keyOfApplyError(err), Msg: err.Error()}, sum)
	}
	summary := "first policy"
	if cur != nil {
		summary = Summary(cur, snap)
	}
	// The state (/readyz, metrics) first, then the event: whoever acts on
	// the event finds the state it announces.
	if r.Succeeded != nil {
		r.Succeeded()
	}
	r.emit(events.Info, "policy reloaded: "+summary,
		events.Str(events.KeyPolicy, r.Path), events.Str(events.KeyHash, snap.Hash), events.Str(events.KeyChanges, summary))
	return nil
}

// ReadFailed reports a policy file that cannot be read (removed, unreadable).
// The policy in force stays.
func (r *Reloader) ReadFailed(err error) {
	var ne *NotifyError
	if errors.As(err, &ne) {
		r.emit(events.OtherError, err.Error(), events.Str(events.KeyFile, r.Path))
		return
	}
	_ = r.refuse(err, "")
}

// Related lists the files the policy in force reads besides itself (the
// relay password file, certificates and CAs), so that a change to one of them
// reloads the policy.
func (r *Reloader) Related() []string {
	s := r.Current()
	if s == nil {
		return nil
	}
	return RelatedFiles(s.File)
}

// RelatedFiles lists the files a policy names, in a stable order.
func RelatedFiles(f *File) []string {
	var out []string
	for _, p := range []string{
		f.RelayProxy.PasswordFile, f.RelayProxy.ClientCertFile, f.RelayProxy.ClientKeyFile, f.RelayProxy.CAFile,
		f.TLS.CAFile, f.TLSListener.CertFile, f.TLSListener.KeyFile, f.TLSListener.ClientCAFile,
	} {
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func (r *Reloader) refuse(err error, sum string) error {
	var es Errors
	var pe *Error
	switch {
	case errors.As(err, &es) && len(es) > 0:
	case errors.As(err, &pe):
		es = Errors{pe}
	default:
		es = Errors{{File: r.Path, Msg: err.Error()}}
	}
	if r.Failed != nil {
		r.Failed(err, sum) // the state first, as in Reload
	}
	for i, e := range es {
		if i == maxErrorEvents {
			r.emit(events.BadConfig, fmt.Sprintf("policy refused: %d more problems not shown", len(es)-i), events.Str(events.KeyFile, r.Path))
			break
		}
		file := e.File
		if file == "" {
			file = r.Path
		}
		r.emit(events.BadConfig, "policy refused, the last good policy stays in force: "+e.Error(),
			events.Str(events.KeyFile, file), events.Int(events.KeyLine, int64(e.Line)), events.Str(events.KeyKey, e.Key),
			events.Str(events.KeyHash, sum))
	}
	return err
}

func (r *Reloader) emit(id events.ID, msg string, fields ...events.Field) {
	if r.Emit != nil {
		r.Emit.Emit(id, msg, fields...)
	}
}

// keyOfApplyError finds the policy key an Apply error starts with
// ("listen_port: cannot listen on ...").
func keyOfApplyError(err error) string {
	k, _, ok := strings.Cut(err.Error(), ":")
	if !ok || strings.ContainsAny(k, " /") {
		return ""
	}
	return k
}

// maxSummary bounds the one-line summary of a reload.
const maxSummary = 480

const restartNote = " (applies after a restart)"

// needsRestart reports whether a change (its first word is the key) is to a
// key read once, when the gateway starts (network.*: when the box boots). A
// reload puts the rest of the policy in force and names these changes with
// restartNote, so nobody waits for them to happen.
func needsRestart(change string) bool {
	key, _, _ := strings.Cut(change, " ")
	switch key {
	case "spool.dir", "spool.disabled", "console.device", "console.baud":
		return true
	}
	return strings.HasPrefix(key, "network.")
}

// Summary says in one line what changed from old to new: hosts added and
// removed, ports, listeners, any other key with its old and new value.
// Secrets are named, never shown.
func Summary(old, new *Snapshot) string {
	changes := Diff(old.File, new.File)
	if old.RelayPassword() != new.RelayPassword() && !slices.Contains(changes, "relay_proxy.password changed") {
		changes = append(changes, "relay password changed")
	}
	if len(changes) == 0 {
		return "no effective change"
	}
	var b strings.Builder
	for i, c := range changes {
		if needsRestart(c) {
			c += restartNote
		}
		if b.Len()+len(c) > maxSummary {
			fmt.Fprintf(&b, "; and %d more", len(changes)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(c)
	}
	return b.String()
}

// secretKeys are shown as "changed", never with their values.
var secretKeys = map[string]bool{"relay_proxy.password": true}

// Diff lists the differences between two policies, one entry per key:
// "allowed_hosts +a.example -b.example", "listen_port 8080 -> 9090".
func Diff(old, new *File) []string {
	var out []string
	diffValue("", reflect.ValueOf(*old), reflect.ValueOf(*new), &out)
	return out
}

func diffValue(key string, a, b reflect.Value, out *[]string) {
	switch a.Kind() {
	case reflect.Struct:
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			if key != "" {
				name = key + "." + name
			}
			diffValue(name, a.Field(i), b.Field(i), out)
		}
	case reflect.Slice:
		as, bs := sliceStrings(a), sliceStrings(b)
		var parts []string
		for _, x := range bs {
			if !slices.Contains(as, x) {
				parts = append(parts, "+"+x)
			}
		}
		for _, x := range as {
			if !slices.Contains(bs, x) {
				parts = append(parts, "-"+x)
			}
		}
		if len(parts) == 0 && !slices.Equal(as, bs) {
			parts = append(parts, "reordered")
		}
		if len(parts) > 0 {
			*out = append(*out, key+" "+strings.Join(parts, " "))
		}
	default:
		x, y := scalarString(a), scalarString(b)
		if x == y {
			return
		}
		if secretKeys[key] {
			*out = append(*out, key+" changed")
			return
		}
		*out = append(*out, key+" "+x+" -> "+y)
	}
}

func sliceStrings(v reflect.Value) []string {
	out := make([]string, v.Len())
	for i := range out {
		out[i] = scalarString(v.Index(i))
	}
	return out
}

func scalarString(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case *bool:
		if x == nil {
			return "(default)"
		}
		return strconv.FormatBool(*x)
	case Duration:
		return x.String()
	case ByteSize:
		return x.String()
	case string:
		if x == "" {
			return `""`
		}
		return x
	}
	return fmt.Sprint(v.Interface())
}
