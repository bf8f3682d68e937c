package events

import (
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Options tune a Log. The zero value is usable.
type Options struct {
	// Now returns the time stamped on each event; nil means time.Now.
	Now func() time.Time
	// MaxPending is how many encoded bytes may wait for the writer before new
	// events are dropped (and counted). Zero means 1 MiB.
	MaxPending int
	// Recent is how many lines are kept for Recent and the console. Zero means 256.
	Recent int
	// Linger is how long the writer rests after each write, so that under
	// load the events of many connections go out in one write instead of one
	// write each. An event that finds the writer resting waits at most this
	// long; Close does not wait for it. Zero means 5ms; negative means none.
	Linger time.Duration
	// Language is the language of the msg field ("en", "sv"; see Languages).
	// Empty or unknown means English. A translated event keeps the English
	// text in the msg_en field, so log queries on it keep working.
	Language string
}

// Log encodes events as JSON lines and writes them to an io.Writer from its
// own goroutine. Emit only appends to a buffer under a mutex: a slow or stuck
// stderr (a serial line, a full pipe) costs dropped events, never a stalled
// tunnel. It also keeps the most recent lines and feeds followers.
type Log struct {
	w      io.Writer
	now    func() time.Time
	max    int
	linger time.Duration

	mu      sync.Mutex
	pending []byte
	spare   []byte
	closed  bool
	recent  [][]byte // ring of the last lines, written by the writer goroutine
	next    int      // next ring slot
	filled  bool
	follow  map[chan []byte]struct{}
	dropped atomic.Uint64
	catalog atomic.Pointer[Catalog] // nil: English
	wake    chan struct{}
	quit    chan struct{} // closed by Close: ends a rest early
	onRest  func()        // tests: called as the writer starts a rest
	done    chan struct{}
}

// NewLog starts a Log writing to w. Call Close to flush and stop it.
func NewLog(w io.Writer, opts Options) *Log {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 1 << 20
	}
	if opts.Recent <= 0 {
		opts.Recent = 256
	}
	if opts.Linger == 0 {
		opts.Linger = 5 * time.Millisecond
	}
	l := &Log{
		w:      w,
		now:    opts.Now,
		max:    opts.MaxPending,
		linger: opts.Linger,
		recent: make([][]byte, opts.Recent),
		follow: make(map[chan []byte]struct{}),
		wake:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	l.SetLanguage(opts.Language)
	go l.writer()
	return l
}

// SetLanguage switches the language of later events (say, after a policy
// reload changed events.language). An unknown language means English, and
// the error says so.
func (l *Log) SetLanguage(lang string) error {
	c, err := NewCatalog(lang)
	l.catalog.Store(c)
	return err
}

// Emit records one event. It never blocks on I/O.
func (l *Log) Emit(id ID, msg string, fields ...Field) {
	t := l.now()
	msgEN := ""
	if c := l.catalog.Load(); c != nil {
		if tr, ok := c.Translate(msg); ok {
			msg, msgEN = tr, msg
		}
	}
	l.mu.Lock()
	if l.closed || len(l.pending) >= l.max {
		l.mu.Unlock()
		l.dropped.Add(1)
		return
	}
	l.pending = appendEvent(l.pending, t, id, msg, msgEN, fields)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Dropped reports how many events were dropped because the writer fell behind.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Recent returns up to n of the most recent lines, oldest first, without the
// trailing newline.
func (l *Log) Recent(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	size := l.next
	if l.filled {
		size = len(l.recent)
	}
	if n <= 0 || n > size {
		n = size
	}
	out := make([]string, 0, n)
	for i := n; i > 0; i-- {
		idx := (l.next - i + len(l.recent)) % len(l.recent)
		out = append(out, string(l.recent[idx]))
	}
	return out
}

// Follow returns a channel that receives every line written from now on
// (without the newline) until cancel is called. A follower that does not keep
// up misses lines rather than slowing the log.
func (l *Log) Follow(buffer int) (lines <-chan []byte, cancel func()) {
	ch := make(chan []byte, buffer)
	l.mu.Lock()
	l.follow[ch] = struct{}{}
	l.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.follow, ch)
			l.mu.Unlock()
		})
	}
}

// Close writes what is pending and stops the writer.
func (l *Log) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	close(l.quit)
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-l.done
}

func (l *Log) writer() {
	defer close(l.done)
	var rest *time.Timer
	if l.linger > 0 {
		rest = time.NewTimer(time.Hour)
		rest.Stop()
	}
	for range l.wake {
		l.mu.Lock()
		buf := l.pending
		l.pending = l.spare[:0]
		closed := l.closed
		l.mu.Unlock()

		if len(buf) > 0 {
			_, _ = l.w.Write(buf)
			l.remember(buf)
			if rest != nil && !closed {
				// Let the next events gather (see Options.Linger).
				if l.onRest != nil {
					l.onRest()
				}
				rest.Reset(l.linger)
				select {
				case <-rest.C:
				case <-l.quit:
					rest.Stop()
				}
			}
		}

		l.mu.Lock()
		l.spare = buf[:0]
		if cap(l.spare) > 4*l.max {
			l.spare = nil // do not keep a burst's buffer forever
		}
		again := len(l.pending) > 0
		l.mu.Unlock()
		if closed && !again {
			return
		}
		if again || closed {
			select {
			case l.wake <- struct{}{}:
			default:
			}
		}
	}
}

// remember copies each line of buf into the recent ring and to followers.
func (l *Log) remember(buf []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(buf) > 0 {
		end := 0
		for end < len(buf) && buf[end] != '\n' {
			end++
		}
		line := buf[:end]
		if end < len(buf) {
			end++
		}
		buf = buf[end:]
		slot := append(l.recent[l.next][:0], line...)
		l.recent[l.next] = slot
		l.next++
		if l.next == len(l.recent) {
			l.next, l.filled = 0, true
		}
		for ch := range l.follow {
			select {
			case ch <- append([]byte(nil), line...):
			default:
			}
		}
	}
}

// appendEvent encodes one event as a JSON object followed by a newline.
// msgEN, when not empty, is the English original of a translated msg.
func appendEvent(b []byte, t time.Time, id ID, msg, msgEN string, fields []Field) []byte {
	b = append(b, `{"time":"`...)
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","level":"`...)
	b = append(b, id.Level()...)
	b = append(b, `","event_id":`...)
	b = strconv.AppendUint(b, uint64(id), 10)
	b = append(b, `,"msg":`...)
	b = AppendJSONString(b, msg)
	if msgEN != "" {
		b = append(b, `,"`+KeyMsgEN+`":`...)
		b = AppendJSONString(b, msgEN)
	}
	for _, f := range fields {
		b = append(b, ',')
		b = AppendJSONString(b, f.Key)
		b = append(b, ':')
		if f.isInt {
			b = strconv.AppendInt(b, f.Int, 10)
		} else {
			b = AppendJSONString(b, f.Str)
		}
	}
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a quoted JSON string. Invalid UTF-8 becomes
// U+FFFD, so a hostile request line cannot break the log's framing.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
