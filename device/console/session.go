package console

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/storegate/storegate/device/netcheck"
)

// Options configure a console session. Provider is required; every other
// zero value picks the default named on the field.
type Options struct {
	Provider Provider
	// Version is shown by "version" and the banner.
	Version string
	// Device names the line in the banner ("/dev/ttyUSB0 115200 baud").
	Device string
	// Now is the clock for "N ago" fields; nil means time.Now.
	Now func() time.Time
	// MaxLine is the longest command line accepted; zero means 256. Longer
	// lines are refused whole, never buffered.
	MaxLine int
	// OutputBuffer bounds queued output in bytes; zero means 64 KiB.
	OutputBuffer int
	// Prompt is printed before each command; empty means "storegate> ".
	Prompt string
	// CheckTimeout bounds one "check"; zero means 30 seconds.
	CheckTimeout time.Duration
}

const (
	defaultMaxLine = 256
	defaultOutput  = 64 << 10
	eol            = "\r\n"
	maxEvents      = 1000
	defaultEvents  = 20
	followBuffer   = 256
	readChunk      = 512
)

// Control bytes the line editor understands.
const (
	keyNUL       = 0x00 // BREAK on a serial line reads as NUL
	keyCtrlC     = 0x03
	keyBackspace = 0x08
	keyLF        = 0x0a
	keyCR        = 0x0d
	keyCtrlU     = 0x15
	keyEsc       = 0x1b
	keyDelete    = 0x7f
	bell         = "\a"
)

// session is one conversation on one device.
type session struct {
	opts Options
	out  *output
	p    *printer
	ed   editor
	in   <-chan []byte
	errc <-chan error
}

// ErrClosed is returned by Serve when the peer closed the stream.
var ErrClosed = errors.New("console: stream closed")

// Serve runs a console session on rw until ctx ends (it returns ctx.Err())
// or rw fails (it returns that error). It prints the banner first. Reading
// and writing happen in goroutines of their own, so a terminal that stops
// reading only loses output. The caller closes rw after Serve returns; that
// ends a reader blocked in rw.Read.
func Serve(ctx context.Context, rw io.ReadWriter, opts Options) error {
	if opts.Provider == nil {
		return errors.New("console: Options.Provider is nil")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = defaultMaxLine
	}
	if opts.OutputBuffer <= 0 {
		opts.OutputBuffer = defaultOutput
	}
	if opts.Prompt == "" {
		opts.Prompt = "storegate> "
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	out := newOutput(rw, opts.OutputBuffer, eol)
	defer out.close()
	in := make(chan []byte, 1)
	errc := make(chan error, 1)
	go readLoop(ctx, rw, in, errc)

	s := &session{
		opts: opts,
		out:  out,
		p:    &printer{w: out, eol: eol},
		ed:   editor{max: opts.MaxLine},
		in:   in,
		errc: errc,
	}
	s.banner()
	s.prompt()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case err := <-out.errc:
			return err
		case chunk := <-in:
			if err := s.feed(ctx, chunk); err != nil {
				return err
			}
		}
	}
}

// readLoop copies input into chunks. It blocks on the channel while a command
// runs, which leaves further input in the kernel's bounded tty buffer.
func readLoop(ctx context.Context, r io.Reader, in chan<- []byte, errc chan<- error) {
	for {
		buf := make([]byte, readChunk)
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case in <- buf[:n]:
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrClosed
			}
			errc <- err
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (s *session) banner() {
	st := s.opts.Provider.Status()
	v := s.opts.Version
	if v == "" {
		v = st.Version
	}
	s.p.line("")
	s.p.linef("storegate %s serial console%s", v, ifNotEmpty(" on ", s.opts.Device))
	s.p.linef("listen %s  admin %s", st.Listen, st.Admin)
	s.p.linef("policy %s %s", st.PolicyFile, shortHash(st.PolicyHash))
	if st.LastReloadError != "" {
		s.p.line("policy reload FAILED: " + st.LastReloadError)
	}
	s.p.line("read-only; type help for commands")
}

func ifNotEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

func (s *session) prompt() { _, _ = io.WriteString(s.out, s.opts.Prompt) }

// feed runs the editor over a chunk and executes each completed line.
func (s *session) feed(ctx context.Context, chunk []byte) error {
	for i := 0; i < len(chunk); i++ {
		act := s.ed.key(chunk[i])
		if act.echo != "" {
			_, _ = io.WriteString(s.out, act.echo)
		}
		switch {
		case act.cancel:
			_, _ = io.WriteString(s.out, "^C"+eol)
			s.prompt()
		case act.tooLong > 0:
			_, _ = io.WriteString(s.out, eol)
			s.p.linef("line refused: longer than %d characters", s.opts.MaxLine)
			s.prompt()
		case act.done:
			_, _ = io.WriteString(s.out, eol)
			if err := s.run(ctx, act.line); err != nil {
				return err
			}
			s.prompt()
		}
	}
	return nil
}

// run executes one command line.
func (s *session) run(ctx context.Context, line string) error {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return nil
	}
	cmd, args := strings.ToLower(fields[0]), fields[1:]
	now := s.opts.Now()
	pv := s.opts.Provider
	switch cmd {
	case "help", "?":
		s.help()
	case "version":
		v := s.opts.Version
		if v == "" {
			v = pv.Status().Version
		}
		s.p.line("storegate " + v)
	case "status":
		WriteStatus(s.out, eol, pv.Status(), now)
	case "counters":
		WriteCounters(s.out, eol, pv.Counters())
	case "policy":
		WritePolicy(s.out, eol, pv.Policy(), now)
	case "spool":
		WriteSpool(s.out, eol, pv.Spool())
	case "link":
		WriteLink(s.out, eol, pv.Link(), now)
	case "events":
		n := defaultEvents
		if len(args) > 1 {
			s.p.line("usage: events [N]")
			return nil
		}
		if len(args) == 1 {
			v, err := strconv.Atoi(args[0])
			if err != nil || v < 1 || v > maxEvents {
				s.p.linef("events: N must be a number from 1 to %d", maxEvents)
				return nil
			}
			n = v
		}
		lines := pv.Recent(n)
		if len(lines) == 0 {
			s.p.line("no events yet")
		}
		for _, l := range lines {
			s.p.line(FormatEvent([]byte(l)))
		}
	case "follow":
		return s.follow(ctx)
	case "check":
		if len(args) != 1 {
			s.p.line("usage: check HOST[:PORT]   (port 443 unless given)")
			return nil
		}
		host, port, err := netcheck.ParseTarget(args[0])
		if err != nil {
			s.p.line("check: " + err.Error())
			return nil
		}
		return s.check(ctx, host, port)
	default:
		s.p.linef("unknown command %q; type help", truncate(cmd, 32))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (s *session) help() {
	for _, l := range []string{
		"commands (the console is read-only):",
		"  status             version, uptime, addresses, policy, relay, link",
		"  counters           connections, tunnels, bytes, errors, refusals",
		"  policy             allowed hosts by origin, ports, networks",
		"  spool              store-and-forward queue depth and age",
		"  link               WAN link state and last probe",
		"  events [N]         the last N events (default 20)",
		"  follow             live events until a key is pressed",
		"  check HOST[:PORT]  resolve, connect, TLS handshake, step by step",
		"  version            gateway version",
		"  help               this list",
		"keys: Backspace or Delete erases, Ctrl-U clears the line, Ctrl-C cancels",
	} {
		s.p.line(l)
	}
}

// follow prints live events until any key (or the device goes away).
func (s *session) follow(ctx context.Context) error {
	lines, cancel := s.opts.Provider.Follow(followBuffer)
	defer cancel()
	s.p.line("following events; press any key to stop")
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.errc:
			return err
		case err := <-s.out.errc:
			return err
		case l, ok := <-lines:
			if !ok {
				s.p.line("event stream ended")
				return nil
			}
			s.p.line(FormatEvent(l))
		case chunk := <-s.in:
			if s.ed.isKeypress(chunk) {
				s.p.line("stopped following")
				return nil
			}
		}
	}
}

// check runs a connectivity check; Ctrl-C stops it, other keys are ignored.
func (s *session) check(ctx context.Context, host string, port int) error {
	cctx, cancel := context.WithTimeout(ctx, s.opts.CheckTimeout)
	defer cancel()
	s.p.linef("checking %s port %d (Ctrl-C stops)...", host, port)
	done := make(chan netcheck.Report, 1)
	go func() { done <- s.opts.Provider.Check(cctx, host, port) }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.errc:
			return err
		case err := <-s.out.errc:
			return err
		case r := <-done:
			WriteCheck(s.out, eol, r)
			return nil
		case chunk := <-s.in:
			for _, c := range chunk {
				if c == keyCtrlC {
					cancel()
					s.p.line("^C stopping check")
				}
			}
		}
	}
}

// editor is a dumb-terminal line editor. It holds at most max bytes.
type editor struct {
	max     int
	buf     []byte
	over    bool // the line exceeded max: swallow it until its end
	lastCR  bool // the previous byte was CR, so a following LF is not a new line
	esc     int  // >0 while inside an escape sequence (bytes seen)
	bracket bool // ESC [ seen: a CSI sequence ends with a byte in 0x40-0x7e
	ss3     bool // ESC O seen: one more byte belongs to the sequence
}

// action is what one key asks the session to do.
type action struct {
	echo    string
	done    bool
	line    string
	cancel  bool
	tooLong int
}

const maxEscape = 16

func (e *editor) key(c byte) action {
	wasCR := e.lastCR
	e.lastCR = false
	if e.esc > 0 {
		// Swallow ESC x, ESC O x (SS3: F1-F4, keypad) and ESC [ ... final (CSI:
		// arrows, function keys), bounded so noise cannot hold the editor.
		e.esc++
		switch {
		case e.esc == 2 && c == '[':
			e.bracket = true
			return action{}
		case e.esc == 2 && c == 'O':
			e.ss3 = true
			return action{}
		case e.bracket && (c < 0x40 || c > 0x7e) && e.esc < maxEscape:
			return action{}
		}
		e.esc, e.bracket, e.ss3 = 0, false, false
		return action{}
	}
	switch c {
	case keyCR, keyLF:
		if c == keyLF && wasCR {
			return action{}
		}
		e.lastCR = c == keyCR
		line := string(e.buf)
		e.buf = e.buf[:0]
		if e.over {
			e.over = false
			return action{tooLong: len(line)}
		}
		return action{done: true, line: line}
	case keyBackspace, keyDelete:
		if e.over || len(e.buf) == 0 {
			return action{}
		}
		e.buf = e.buf[:len(e.buf)-1]
		return action{echo: "\b \b"}
	case keyCtrlU:
		if e.over {
			e.over = false
			e.buf = e.buf[:0]
			return action{cancel: true}
		}
		echo := strings.Repeat("\b \b", len(e.buf))
		e.buf = e.buf[:0]
		return action{echo: echo}
	case keyCtrlC:
		e.buf = e.buf[:0]
		e.over = false
		return action{cancel: true}
	case keyEsc:
		e.esc = 1
		return action{}
	}
	if c < 0x20 || c > 0x7e {
		return action{} // NUL (BREAK), other controls, 8-bit noise: ignored
	}
	if e.over {
		return action{}
	}
	if len(e.buf) >= e.max {
		e.over = true
		return action{echo: bell}
	}
	e.buf = append(e.buf, c)
	return action{echo: string(c)}
}

// isKeypress says whether input during "follow" should stop it: anything but
// the LF that completes the CRLF which started the command, or NULs.
func (e *editor) isKeypress(chunk []byte) bool {
	for _, c := range chunk {
		if c == keyLF && e.lastCR {
			e.lastCR = false
			continue
		}
		e.lastCR = false
		if c != keyNUL {
			return true
		}
	}
	return false
}
