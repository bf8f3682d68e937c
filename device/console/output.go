package console

import (
	"io"
	"strconv"
	"sync"
)

// output queues what the console prints and writes it from its own
// goroutine. Write never blocks: when the terminal does not keep up (a stuck
// line, a slow baud rate, nobody reading) whole writes are dropped, counted,
// and reported once the terminal drains.
type output struct {
	w   io.Writer
	max int
	eol string

	mu      sync.Mutex
	pending []byte
	dropped int64
	closed  bool

	wake chan struct{}
	errc chan error // receives the first write error
	done chan struct{}
	once sync.Once
}

func newOutput(w io.Writer, max int, eol string) *output {
	o := &output{
		w:    w,
		max:  max,
		eol:  eol,
		wake: make(chan struct{}, 1),
		errc: make(chan error, 1),
		done: make(chan struct{}),
	}
	go o.loop()
	return o
}

// Write queues p whole or drops it whole; it always reports success so
// printers need no error handling.
func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	switch {
	case o.closed:
	case len(o.pending)+len(p) > o.max:
		o.dropped += int64(len(p))
	default:
		o.pending = append(o.pending, p...)
	}
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// close stops the writer after its current write; pending bytes are discarded.
// A write stuck in the kernel keeps its goroutine until the device returns an
// error or drains; nothing else waits for it.
func (o *output) close() {
	o.mu.Lock()
	o.closed = true
	o.pending = nil
	o.mu.Unlock()
	o.once.Do(func() { close(o.done) })
}

func (o *output) loop() {
	var buf []byte
	var reported int64
	for {
		select {
		case <-o.done:
			return
		case <-o.wake:
		}
		for {
			o.mu.Lock()
			if o.closed {
				o.mu.Unlock()
				return
			}
			buf, o.pending = o.pending, buf[:0]
			dropped := o.dropped
			o.mu.Unlock()
			if len(buf) == 0 {
				if dropped == reported {
					break
				}
				// The terminal has drained everything we kept: say what was lost.
				buf = append(buf, o.eol+"[console: "+strconv.FormatInt(dropped-reported, 10)+
					" bytes of output dropped, terminal too slow]"+o.eol...)
				reported = dropped
			}
			if _, err := o.w.Write(buf); err != nil {
				select {
				case o.errc <- err:
				default:
				}
				return
			}
			if cap(buf) > 4*o.max {
				buf = nil
			}
		}
	}
}
