// Package spool is storegate's store-and-forward spool: it accepts requests
// for allowed destinations, keeps them durably on disk (package queue) and
// delivers them in order per destination when the uplink works.
package spool

import (
	"context"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/link"
	"github.com/storegate/storegate/gateway/spool/queue"
)

// Overflow says what a full spool does with a new message.
type Overflow string

// Overflow rules (policy key spool.overflow).
const (
	OverflowRefuse     Overflow = "refuse"      // answer 507 with Retry-After
	OverflowDropOldest Overflow = "drop-oldest" // drop the oldest messages, with event and counter
)

// Limits are the policy's bounds; they can change at run time (SetLimits).
type Limits struct {
	// MaxBytes bounds the payload bytes waiting for delivery (spool.max_bytes).
	// Zero means 256 MiB.
	MaxBytes int64
	// MaxAge drops messages not delivered within it (spool.max_age). Zero
	// means 72h.
	MaxAge time.Duration
	// MaxMessageBytes bounds one message's body (spool.max_message_bytes);
	// larger ones get 413. Zero means 1 MiB.
	MaxMessageBytes int64
	// Overflow is the rule when MaxBytes is reached. Empty means refuse.
	Overflow Overflow
	// DeadLetterBytes bounds the bytes kept in dead/ (spool.
	// dead_letter_max_bytes): past it the oldest dead letters are deleted,
	// so a receiver that refuses everything cannot fill the disk the queue
	// needs. Zero means 32 MiB.
	DeadLetterBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 256 << 20
	}
	if l.MaxAge <= 0 {
		l.MaxAge = 72 * time.Hour
	}
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = 1 << 20
	}
	if l.Overflow == "" {
		l.Overflow = OverflowRefuse
	}
	if l.DeadLetterBytes <= 0 {
		l.DeadLetterBytes = 32 << 20
	}
	return l
}

// Options configure a Spool. Every field's comment says what its zero value
// means; the gateway fills them from the policy.
type Options struct {
	// Dir is the spool directory (spool.dir). Required. Changing it needs a
	// restart.
	Dir string
	// Limits are the initial bounds.
	Limits Limits
	// SegmentBytes is the segment file size. Zero means 8 MiB.
	SegmentBytes int64
	// Allow checks a destination like a CONNECT target (allowlist, ports,
	// address safety); a non-nil error refuses it with 403 and event 105.
	// Nil allows every destination: only tests should leave it nil.
	Allow func(host string, port int) error
	// Dial opens upstream connections for delivery (direct or through the
	// relay, with the gateway's address checks). Nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Roots gives the pool that verifies receivers' certificates (system
	// roots plus tls.ca_file). It is called when a delivery first needs a
	// client, not before: a gateway whose spool has nothing to deliver does
	// not hold the system roots (about 1.5 MB on a small box). Nil means the
	// system roots.
	Roots func() (*x509.CertPool, error)
	// Events receives the spool's events; nil drops them.
	Events events.Emitter
	// Link is told the outcome of every delivery attempt and wakes delivery
	// when the uplink comes back. Nil means no link tracking.
	Link *link.Tracker
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Jitter returns a number in [0, 1) for backoff jitter; nil means math/rand.
	Jitter func() float64
	// MinBackoff and MaxBackoff bound the retry delay. Zero means 1s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps a receiver's Retry-After. Zero means 1h.
	MaxRetryAfter time.Duration
	// AttemptTimeout bounds one delivery attempt. Zero means 30s.
	AttemptTimeout time.Duration
	// MaxConcurrent bounds delivery attempts in flight. Zero means 8.
	MaxConcurrent int
	// RetryAfter is what 503 and 507 answers tell the client, and how often
	// an unusable directory is tried again. Zero means 5s.
	RetryAfter time.Duration
	// Remember is how many finished messages' states GET can report. Zero
	// means 4096.
	Remember int
}

// Event field keys the spool adds to those of package events.
const (
	keySegment   = "segment"
	keyOffset    = "offset"
	keyDepth     = "depth"
	keyBytes     = "bytes"
	keyDropped   = "dropped"
	keyRetryInMS = "retry_in_ms"
	keyWaiting   = "waiting"
)

// Errors from Submit; the handler maps them to statuses in one place.
var (
	ErrBadDestination = errors.New("spool: bad destination")
	ErrTooLarge       = errors.New("spool: message too large")
	ErrFull           = errors.New("spool: full")
	ErrUnavailable    = errors.New("spool: storage unavailable")
	ErrNotAllowed     = errors.New("spool: destination not allowed")
)

// msgID is a message id: 16 random bytes, shown as 32 hex digits.
type msgID [16]byte

func (id msgID) String() string { return hex.EncodeToString(id[:]) }

func parseID(s string) (msgID, bool) {
	var id msgID
	if len(s) != 2*len(id) {
		return id, false
	}
	_, err := hex.Decode(id[:], []byte(s))
	return id, err == nil
}

// entry is a queued message's in-memory index: kept small (about 150 bytes),
// since a full spool of small messages holds hundreds of thousands. The
// destination, headers and body stay on disk until delivery.
type entry struct {
	id        msgID
	origin    string // shared with its originQueue
	pos       queue.Pos
	size      int64
	submitted int64 // Unix nanoseconds
	attempts  int
	lastErr   string
	next      time.Time
	done      bool
}

type originQueue struct {
	origin  string
	q       []*entry
	running bool
	failing bool // delivery is failing; an event said so
}

// finished is the remembered outcome of a message no longer queued.
type finished struct {
	state  string
	dest   string
	status int
	reason string
	at     time.Time
}

type counters struct {
	submitted, delivered, retries, deadLettered  atomic.Uint64
	droppedAge, droppedOverflow                  atomic.Uint64
	deadDeleted                                  atomic.Uint64
	refusedFull, refusedLarge, refusedNotAllowed atomic.Uint64
	refusedUnavailable, refusedBad               atomic.Uint64
	quarantined, missingSegments                 atomic.Uint64
}

// Spool is the store-and-forward spool. Create it with New, serve its
// Handler on the proxy listener, and call Run to deliver.
type Spool struct {
	opts   Options
	limits atomic.Pointer[Limits]
	client atomic.Pointer[http.Client]    // nil until a delivery needs it, and after SetRoots
	mkMu   sync.Mutex                     // one client is made at a time
	roots  func() (*x509.CertPool, error) // guarded by mkMu
	sem    chan struct{}
	wake   chan struct{}
	c      counters

	mu        sync.Mutex
	log       *queue.Log // nil while the directory is unusable
	openErr   error
	reserved  int64 // bytes of submissions being written
	bytes     int64 // payload bytes queued
	depth     int
	byID      map[msgID]*entry
	origins   map[string]*originQueue
	order     []*entry // queued entries, oldest first (done ones skipped lazily)
	finished  map[msgID]finished
	finOrder  []msgID
	deadCount int
	deadBytes int64 // bytes of the files in dead/
	runCtx    context.Context
	workers   sync.WaitGroup
	closed    bool

	deadMu  sync.Mutex // serialises writing and trimming dead/; taken before mu
	trimErr string     // the last error trimming dead/ reported (deadMu)
}

// New opens the spool in opts.Dir, recovering what it finds there. It fails
// only for invalid options: an unusable directory or damaged files never stop
// the gateway (submissions get 503 until the directory works again).
func New(opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool: no directory (spool.dir)")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.MaxRetryAfter <= 0 {
		opts.MaxRetryAfter = time.Hour
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 30 * time.Second
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 8
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 5 * time.Second
	}
	if opts.Remember <= 0 {
		opts.Remember = 4096
	}
	if opts.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		opts.Dial = d.DialContext
	}
	if ov := opts.Limits.Overflow; ov != "" && ov != OverflowRefuse && ov != OverflowDropOldest {
		return nil, fmt.Errorf("spool: overflow %q: use %q or %q", ov, OverflowRefuse, OverflowDropOldest)
	}
	s := &Spool{
		opts:     opts,
		sem:      make(chan struct{}, opts.MaxConcurrent),
		wake:     make(chan struct{}, 1),
		byID:     map[msgID]*entry{},
		origins:  map[string]*originQueue{},
		finished: map[msgID]finished{},
	}
	s.roots = opts.Roots
	l := opts.Limits.withDefaults()
	s.limits.Store(&l)
	s.open()
	return s, nil
}

// SetLimits applies new bounds (a policy reload). Messages already queued are
// kept; a lower MaxAge drops old ones at the next sweep.
func (s *Spool) SetLimits(l Limits) error {
	if ov := l.Overflow; ov != "" && ov != OverflowRefuse && ov != OverflowDropOldest {
		return fmt.Errorf("spool: overflow %q: use %q or %q", ov, OverflowRefuse, OverflowDropOldest)
	}
	l = l.withDefaults()
	s.limits.Store(&l)
	return nil
}

// SetRoots changes the roots that verify receivers' certificates (a policy
// reload that changed tls.ca_file): the next delivery makes a client with
// them. One already in flight finishes with the old client. Its idle
// connections are closed now; a busy one goes back to its pool when its
// delivery ends, at the latest after AttemptTimeout, so the pool is emptied
// once more after that (nothing else uses the old client).
func (s *Spool) SetRoots(roots func() (*x509.CertPool, error)) {
	s.mkMu.Lock()
	s.roots = roots
	old := s.client.Swap(nil)
	s.mkMu.Unlock()
	if old == nil {
		return
	}
	old.CloseIdleConnections()
	time.AfterFunc(s.opts.AttemptTimeout+time.Second, old.CloseIdleConnections)
}

// httpClient is the delivery client, made on first use with the roots in
// force. An error (tls.ca_file unreadable since the policy was checked)
// leaves it unmade, and the delivery is retried.
func (s *Spool) httpClient() (*http.Client, error) {
	if c := s.client.Load(); c != nil {
		return c, nil
	}
	s.mkMu.Lock()
	defer s.mkMu.Unlock()
	if c := s.client.Load(); c != nil {
		return c, nil
	}
	var pool *x509.CertPool
	if s.roots != nil {
		p, err := s.roots()
		if err != nil {
			return nil, err
		}
		pool = p
	}
	c := newClient(s.opts, pool)
	s.client.Store(c)
	return c, nil
}

func (s *Spool) emit(id events.ID, msg string, f ...events.Field) {
	if s.opts.Events != nil {
		s.opts.Events.Emit(id, msg, f...)
	}
}

// open (re)opens the queue and rebuilds the index from what recovery finds.
func (s *Spool) open() {
	var undecodable []queue.Pos
	var recovered []*entry
	lg, rep, err := queue.Open(s.opts.Dir, queue.Options{SegmentBytes: s.opts.SegmentBytes},
		func(pos queue.Pos, payload []byte) {
			m, err := queue.DecodeMessage(payload)
			if err != nil {
				undecodable = append(undecodable, pos)
				return
			}
			origin, _, _, err := parseDestination(m.Destination)
			id, ok := parseID(m.ID)
			if err != nil || !ok {
				undecodable = append(undecodable, pos)
				return
			}
			recovered = append(recovered, &entry{
				id: id, origin: origin, pos: pos, size: int64(len(payload)), submitted: m.Submitted.UnixNano(),
			})
		})
	// It writes dead letters for undecodable records: deadMu first, as
	// deadLetter takes them, so a trim never sees one half written.
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.openErr == nil || s.openErr.Error() != err.Error() {
			s.emit(events.OtherError, "spool directory unusable; submissions get 503 until it works",
				events.Str(events.KeyPath, s.opts.Dir), events.Str(events.KeyError, err.Error()))
		}
		s.openErr = err
		return
	}
	s.log, s.openErr = lg, nil
	for _, e := range recovered {
		s.insertLocked(e)
	}
	n, _ := rep.QuarantinedRegions()
	s.c.quarantined.Add(uint64(n))
	s.c.missingSegments.Add(uint64(len(rep.Missing)))
	for _, p := range rep.Problems() {
		s.emit(events.OtherError, "spool recovery: "+p, events.Str(events.KeyPath, s.opts.Dir))
	}
	for _, pos := range undecodable {
		raw, err := lg.ReadAt(pos)
		if err == nil {
			id := fmt.Sprintf("undecodable-%d-%d", pos.Seg, pos.Off)
			_, err = s.writeDead(id, "", 0, 0, "record could not be decoded", raw)
		}
		if err != nil {
			// Not acknowledged: the record stays in its segment, and the
			// next open tries again to set it aside.
			s.emit(events.OtherError, "spool recovery: a record could not be decoded nor kept as a dead letter; left in place",
				events.Int(keySegment, int64(pos.Seg)), events.Int(keyOffset, pos.Off), events.Str(events.KeyError, err.Error()))
			continue
		}
		lg.Ack(pos)
		s.emit(events.OtherError, "spool recovery: a record could not be decoded; kept as a dead letter",
			events.Int(keySegment, int64(pos.Seg)), events.Int(keyOffset, pos.Off))
	}
	s.deadCount, s.deadBytes = s.countDead() // with the ones just written
	s.emit(events.Info, fmt.Sprintf("spool open: %d messages waiting", s.depth),
		events.Str(events.KeyPath, s.opts.Dir), events.Int(keyDepth, int64(s.depth)), events.Int(keyBytes, s.bytes))
}

// insertLocked adds a queued entry, keeping each origin's queue in log order.
func (s *Spool) insertLocked(e *entry) {
	s.byID[e.id] = e
	s.depth++
	s.bytes += e.size
	s.order = append(s.order, e)
	oq := s.origins[e.origin]
	if oq == nil {
		oq = &originQueue{origin: e.origin}
		s.origins[e.origin] = oq
	}
	e.origin = oq.origin
	i := len(oq.q)
	for i > 0 && posLess(e.pos, oq.q[i-1].pos) {
		i--
	}
	oq.q = append(oq.q, nil)
	copy(oq.q[i+1:], oq.q[i:])
	oq.q[i] = e
	if s.runCtx != nil && !oq.running {
		s.startWorkerLocked(e.origin, oq)
	}
}

func posLess(a, b queue.Pos) bool {
	if a.Seg != b.Seg {
		return a.Seg < b.Seg
	}
	return a.Off < b.Off
}

// removeLocked takes a finished entry out of the queue and acknowledges its
// record. It reports false if the entry was already finished.
func (s *Spool) removeLocked(e *entry, f finished) bool {
	if e.done {
		return false
	}
	e.done = true
	delete(s.byID, e.id)
	s.depth--
	s.bytes -= e.size
	if oq := s.origins[e.origin]; oq != nil {
		if len(oq.q) > 0 && oq.q[0] == e {
			oq.q = oq.q[1:] // the usual case: O(1), the array is dropped at the next growth
		} else {
			for i, x := range oq.q {
				if x == e {
					oq.q = append(oq.q[:i], oq.q[i+1:]...)
					break
				}
			}
		}
	}
	if s.log != nil {
		s.log.Ack(e.pos)
	}
	if f.dest == "" {
		f.dest = e.origin
	}
	s.rememberLocked(e.id, f)
	// Trim finished entries off the front of the global order.
	i := 0
	for i < len(s.order) && s.order[i].done {
		i++
	}
	if i > 0 && (i > 64 || i == len(s.order)) {
		s.order = append(s.order[:0:0], s.order[i:]...)
	}
	return true
}

func (s *Spool) rememberLocked(id msgID, f finished) {
	if _, ok := s.finished[id]; !ok {
		s.finOrder = append(s.finOrder, id)
	}
	s.finished[id] = f
	for len(s.finOrder) > s.opts.Remember {
		delete(s.finished, s.finOrder[0])
		s.finOrder = s.finOrder[1:]
	}
}

// parseDestination checks a Storegate-Destination value and returns its
// origin (the unit of ordering), host and port.
func parseDestination(raw string) (origin, host string, port int, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", 0, fmt.Errorf("%w: %v", ErrBadDestination, err)
	}
	switch {
	case u.Scheme != "https":
		return "", "", 0, fmt.Errorf("%w: scheme must be https", ErrBadDestination)
	case u.User != nil:
		return "", "", 0, fmt.Errorf("%w: credentials in the URL are not accepted", ErrBadDestination)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", "", 0, fmt.Errorf("%w: fragment not allowed", ErrBadDestination)
	case u.Hostname() == "":
		return "", "", 0, fmt.Errorf("%w: no host", ErrBadDestination)
	}
	host = strings.ToLower(u.Hostname())
	port = 443
	if p := u.Port(); p != "" {
		port, err = strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 {
			return "", "", 0, fmt.Errorf("%w: bad port %q", ErrBadDestination, p)
		}
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(port)), host, port, nil
}

// Hop-by-hop headers (RFC 9110 section 7.6.1) and the spool's own are not
// delivered; the rest of the submitter's headers are.
var dropHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Host": true, "Content-Length": true, "Idempotency-Key": true,
	// The receiver's answer goes nowhere but the spool, which reads it plain.
	"Accept-Encoding": true,
}

func deliverableHeader(h http.Header) map[string][]string {
	out := make(map[string][]string, len(h))
	conn := map[string]bool{}
	for _, v := range h.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			conn[http.CanonicalHeaderKey(strings.TrimSpace(f))] = true
		}
	}
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if dropHeaders[ck] || conn[ck] || strings.HasPrefix(ck, "Storegate-") {
			continue
		}
		out[ck] = append([]string(nil), vs...)
	}
	return out
}

func newID() msgID {
	var id msgID
	crand.Read(id[:])
	return id
}

// Submission is one message handed to the spool.
type Submission struct {
	Destination string      // https://host[:port]/path?query
	Method      string      // POST, PUT or PATCH; empty means POST
	Header      http.Header // headers to deliver; hop-by-hop ones are dropped
	Body        []byte
}

// Submit stores a message durably and returns its id once it is on disk.
func (s *Spool) Submit(ctx context.Context, sub Submission) (string, error) {
	origin, host, port, err := parseDestination(sub.Destination)
	if err != nil {
		s.c.refusedBad.Add(1)
		return "", err
	}
	if s.opts.Allow != nil {
		if err := s.opts.Allow(host, port); err != nil {
			s.c.refusedNotAllowed.Add(1)
			s.emit(events.NotAllowed, "spool destination not allowed",
				events.Str(events.KeyTarget, net.JoinHostPort(host, strconv.Itoa(port))), events.Str(events.KeyReason, err.Error()))
			return "", fmt.Errorf("%w: %v", ErrNotAllowed, err)
		}
	}
	method := sub.Method
	switch method {
	case "":
		method = http.MethodPost
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		s.c.refusedBad.Add(1)
		return "", fmt.Errorf("%w: method %q (use POST, PUT or PATCH)", ErrBadDestination, method)
	}
	lim := s.limits.Load()
	if int64(len(sub.Body)) > lim.MaxMessageBytes {
		s.c.refusedLarge.Add(1)
		return "", fmt.Errorf("%w: %d bytes, the limit is %d (spool.max_message_bytes)", ErrTooLarge, len(sub.Body), lim.MaxMessageBytes)
	}
	id := newID()
	m := &queue.Message{
		ID:          id.String(),
		Destination: sub.Destination,
		Method:      method,
		Submitted:   s.opts.Now(),
		Header:      deliverableHeader(sub.Header),
		Body:        sub.Body,
	}
	m.Key = sub.Header.Get("Idempotency-Key")
	if m.Key == "" {
		m.Key = m.ID
	}
	payload := queue.AppendMessage(nil, m)
	size := int64(len(payload))

	s.mu.Lock()
	if s.log == nil {
		err := s.openErr
		s.mu.Unlock()
		s.c.refusedUnavailable.Add(1)
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if s.bytes+s.reserved+size > lim.MaxBytes {
		if lim.Overflow != OverflowDropOldest {
			s.mu.Unlock()
			s.c.refusedFull.Add(1)
			return "", fmt.Errorf("%w: %d bytes waiting, the limit is %d (spool.max_bytes)", ErrFull, s.bytes, lim.MaxBytes)
		}
		s.dropOldestLocked(s.bytes + s.reserved + size - lim.MaxBytes)
		if s.bytes+s.reserved+size > lim.MaxBytes {
			s.mu.Unlock()
			s.c.refusedFull.Add(1)
			return "", fmt.Errorf("%w: message larger than spool.max_bytes allows", ErrFull)
		}
	}
	s.reserved += size
	lg := s.log
	s.mu.Unlock()

	pos, err := lg.Append(ctx, payload)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved -= size
	if err != nil {
		s.c.refusedUnavailable.Add(1)
		if ctx.Err() == nil {
			s.emit(events.OtherError, "spool write failed; answering 503 until the disk accepts writes",
				events.Str(events.KeyPath, s.opts.Dir), events.Str(events.KeyError, err.Error()))
		}
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	s.c.submitted.Add(1)
	s.insertLocked(&entry{id: id, origin: origin, pos: pos, size: size, submitted: m.Submitted.UnixNano()})
	return m.ID, nil
}

// dropOldestLocked drops the oldest queued messages until need bytes are free.
func (s *Spool) dropOldestLocked(need int64) {
	var freed int64
	var n int
	for _, e := range s.order {
		if freed >= need {
			break
		}
		if e.done {
			continue
		}
		freed += e.size
		if s.removeLocked(e, finished{state: "dropped", reason: "spool full (drop-oldest)", at: s.opts.Now()}) {
			n++
		}
	}
	if n > 0 {
		s.c.droppedOverflow.Add(uint64(n))
		s.emit(events.OtherError, fmt.Sprintf("spool full: dropped the %d oldest messages (spool.overflow: drop-oldest)", n),
			events.Int(keyDropped, int64(n)), events.Int(keyBytes, freed), events.Str(events.KeyReason, "overflow"))
	}
}

// expire drops messages older than MaxAge.
func (s *Spool) expire() {
	lim := s.limits.Load()
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int
	var oldest string
	for _, e := range s.order {
		if e.done || now.Sub(time.Unix(0, e.submitted)) <= lim.MaxAge {
			continue
		}
		if oldest == "" {
			oldest = e.id.String()
		}
		if s.removeLocked(e, finished{state: "dropped", reason: "older than spool.max_age", at: now}) {
			n++
		}
	}
	if n > 0 {
		s.c.droppedAge.Add(uint64(n))
		s.emit(events.OtherError, fmt.Sprintf("spool: dropped %d messages older than %s (spool.max_age)", n, lim.MaxAge),
			events.Int(keyDropped, int64(n)), events.Str(events.KeyID, oldest), events.Str(events.KeyReason, "max_age"))
	}
}

// Close stops accepting and closes the files; call it after Run returned.
func (s *Spool) Close() error {
	s.mu.Lock()
	lg := s.log
	s.log = nil
	s.openErr = errors.New("spool closed")
	s.closed = true
	s.mu.Unlock()
	s.workers.Wait()
	if lg != nil {
		return lg.Close()
	}
	return nil
}

func (s *Spool) deadDir() string { return filepath.Join(s.opts.Dir, "dead") }

func (s *Spool) countDead() (n int, bytes int64) {
	es, err := os.ReadDir(s.deadDir())
	if err != nil {
		return 0, 0
	}
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".json") {
			n++
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			bytes += fi.Size()
		}
	}
	return n, bytes
}

// trimDead applies the dead-letter bound now (after a restart or a lowered
// limit; Run calls it on its tick).
func (s *Spool) trimDead() {
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	s.trimDeadLocked()
}

// trimDeadLocked deletes the oldest dead letters once dead/ holds more than
// Limits.DeadLetterBytes, down to nine tenths of it (so a steady stream of
// refusals does not rescan the directory for every message). Files in dead/
// without a listing entry (a crash between the two writes) go first. The
// caller holds deadMu, so no dead letter is half written meanwhile.
func (s *Spool) trimDeadLocked() {
	lim := s.limits.Load().DeadLetterBytes
	s.mu.Lock()
	over := s.deadBytes > lim
	s.mu.Unlock()
	if !over {
		return
	}
	dir := s.deadDir()
	es, err := os.ReadDir(dir)
	if err != nil {
		s.trimFailed(err)
		return
	}
	type letter struct {
		id      string
		at      time.Time // of the listing entry; zero for an orphan payload
		bytes   int64
		listing int64 // bytes of the listing entry
		gone    bool  // the listing entry was removed
	}
	byID := map[string]*letter{}
	for _, e := range es {
		name := e.Name()
		id, ext := strings.TrimSuffix(name, filepath.Ext(name)), filepath.Ext(name)
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || (ext != ".json" && ext != ".msg") {
			continue
		}
		l := byID[id]
		if l == nil {
			l = &letter{id: id}
			byID[id] = l
		}
		l.bytes += fi.Size()
		if ext == ".json" {
			l.at, l.listing = fi.ModTime(), fi.Size()
		}
	}
	letters := make([]*letter, 0, len(byID))
	var total int64
	for _, l := range byID {
		letters = append(letters, l)
		total += l.bytes
	}
	// Orphans (zero time) first, then oldest first; ids break ties.
	sort.Slice(letters, func(i, j int) bool {
		if !letters[i].at.Equal(letters[j].at) {
			return letters[i].at.Before(letters[j].at)
		}
		return letters[i].id < letters[j].id
	})
	goal := lim / 10 * 9
	n, freed := 0, int64(0)
	var fault error
	for _, l := range letters {
		if total-freed <= goal {
			break
		}
		// The listing entry first: a crash in between leaves an orphan
		// payload, which the next trim removes. A listing entry that cannot
		// be removed keeps its payload, so a listed letter never loses it;
		// only what is really gone is counted.
		if !l.at.IsZero() {
			if err := os.Remove(filepath.Join(dir, l.id+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
				fault = err
				continue
			}
			l.gone = true
			freed += l.listing
			n++
		}
		if err := os.Remove(filepath.Join(dir, l.id+".msg")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fault = err // an orphan payload now; the next trim tries again
			continue
		}
		freed += l.bytes - l.listing
	}
	kept := 0
	for _, l := range letters {
		if !l.gone && !l.at.IsZero() {
			kept++
		}
	}
	s.mu.Lock()
	s.deadCount, s.deadBytes = kept, total-freed // the scan is exact: deadMu is held
	s.mu.Unlock()
	if fault != nil {
		s.trimFailed(fault)
	} else {
		s.trimErr = ""
	}
	if n > 0 {
		s.c.deadDeleted.Add(uint64(n))
		s.emit(events.OtherError, fmt.Sprintf("spool: deleted the %d oldest dead letters (spool.dead_letter_max_bytes)", n),
			events.Int(keyDropped, int64(n)), events.Int(keyBytes, freed), events.Str(events.KeyReason, "dead_letter_max_bytes"))
	}
}

// trimFailed reports an error trimming dead/ (a read-only or failing disk)
// once, not on every tick it persists. The caller holds deadMu.
func (s *Spool) trimFailed(err error) {
	if err.Error() == s.trimErr {
		return
	}
	s.trimErr = err.Error()
	s.emit(events.OtherError, "spool: cannot delete old dead letters (spool.dead_letter_max_bytes)",
		events.Str(events.KeyPath, s.deadDir()), events.Str(events.KeyError, err.Error()))
}
