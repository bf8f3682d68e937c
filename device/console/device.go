package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"github.com/tarm/serial"

	"github.com/storegate/storegate/gateway/events"
)

// DeviceOptions say which serial line to serve and how to survive it going
// away. Path and Session.Provider are required.
type DeviceOptions struct {
	Path string
	// Baud is the line speed; zero means 115200.
	Baud int
	// Emit receives "console device opened" (event 100) and "console device
	// lost"/"not available" (event 400). Nil means no events.
	Emit events.Emitter
	// Open opens the device; nil means OpenSerial.
	Open func(path string, baud int) (io.ReadWriteCloser, error)
	// MinBackoff and MaxBackoff bound the wait between attempts to reopen a
	// missing device; zero means 200ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// After is the timer used for backoff; nil means time.After.
	After func(time.Duration) <-chan time.Time
	// Session configures each session (one per successful open).
	Session Options
}

// RunDevice serves the console on a serial device until ctx ends, reopening
// the device with backoff whenever it is missing or disappears (a USB adapter
// unplugged). It returns ctx.Err(), or at once an error if the options are
// unusable. Nothing in it can block the gateway: it only calls the Provider.
func RunDevice(ctx context.Context, o DeviceOptions) error {
	if o.Path == "" {
		return errors.New("console: no device path")
	}
	if o.Session.Provider == nil {
		return errors.New("console: no provider")
	}
	if o.Baud == 0 {
		o.Baud = 115200
	}
	if !ValidBaud(o.Baud) {
		return fmt.Errorf("console: baud %d not supported; use one of 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600", o.Baud)
	}
	if o.Open == nil {
		o.Open = OpenSerial
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 200 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = 5 * time.Second
		if o.MaxBackoff < o.MinBackoff {
			o.MaxBackoff = o.MinBackoff
		}
	}
	if o.After == nil {
		o.After = time.After
	}
	emit := func(id events.ID, msg string, f ...events.Field) {
		if o.Emit != nil {
			o.Emit.Emit(id, msg, f...)
		}
	}
	if o.Session.Device == "" {
		o.Session.Device = fmt.Sprintf("%s %d baud", o.Path, o.Baud)
	}

	backoff := o.MinBackoff
	reportedMissing := false
	for ctx.Err() == nil {
		dev, err := o.Open(o.Path, o.Baud)
		if err != nil {
			if !reportedMissing {
				emit(events.OtherError, "console device not available; retrying", events.Str(events.KeyPath, o.Path), events.Str(events.KeyError, err.Error()))
				reportedMissing = true
			}
			// Jittered exponential backoff, reset after every successful open.
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff = min(backoff*2, o.MaxBackoff)
			select {
			case <-ctx.Done():
			case <-o.After(wait):
			}
			continue
		}
		reportedMissing = false
		backoff = o.MinBackoff
		emit(events.Info, "console device opened", events.Str(events.KeyPath, o.Path), events.Int("baud", int64(o.Baud)))
		err = Serve(ctx, dev, o.Session)
		_ = dev.Close()
		if ctx.Err() != nil {
			break
		}
		emit(events.OtherError, "console device lost; waiting for it to return", events.Str(events.KeyPath, o.Path), events.Str(events.KeyError, err.Error()))
	}
	return ctx.Err()
}

// ValidBaud reports whether the console accepts baud as a line speed.
func ValidBaud(b int) bool {
	switch b {
	case 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600:
		return true
	}
	return false
}

// ErrDeviceGone is returned by a serial device's Read once the device node
// has disappeared or been replaced, or the line has been hung up.
var ErrDeviceGone = errors.New("device disappeared")

// pollInterval is how long one Read waits in the kernel before the device is
// re-checked; it is also the latency of noticing a close.
const pollInterval = 200 * time.Millisecond

// OpenSerial opens path with github.com/tarm/serial (8N1, no flow control, raw)
// and wraps it so that Read notices when the device goes away: tarm/serial
// reads return nothing on a timeout, so each empty read re-checks that the
// path still names the device that was opened.
func OpenSerial(path string, baud int) (io.ReadWriteCloser, error) {
	p, err := serial.OpenPort(&serial.Config{Name: path, Baud: baud, ReadTimeout: pollInterval})
	if err != nil {
		return nil, err
	}
	fi, _ := os.Stat(path) // nil where device nodes cannot be stat'ed (COM ports)
	return &port{p: p, path: path, fi: fi}, nil
}

type port struct {
	p      *serial.Port
	path   string
	fi     os.FileInfo
	closed atomic.Bool
}

// maxFastEmpty is how many consecutive empty reads that returned well before
// pollInterval mean a hung-up line (a hung-up tty returns EOF at once).
const maxFastEmpty = 50

func (p *port) Read(b []byte) (int, error) {
	fast := 0
	for {
		if p.closed.Load() {
			return 0, os.ErrClosed
		}
		start := time.Now()
		n, err := p.p.Read(b)
		if n > 0 {
			return n, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		// Empty read: a timeout, or a line that is gone.
		if p.gone() {
			return 0, ErrDeviceGone
		}
		if time.Since(start) < pollInterval/4 {
			fast++
			if fast >= maxFastEmpty {
				return 0, ErrDeviceGone
			}
		} else {
			fast = 0
		}
	}
}

func (p *port) gone() bool {
	if p.fi == nil {
		return false
	}
	fi, err := os.Stat(p.path)
	return err != nil || !os.SameFile(fi, p.fi)
}

func (p *port) Write(b []byte) (int, error) { return p.p.Write(b) }

func (p *port) Close() error {
	p.closed.Store(true)
	return p.p.Close()
}
