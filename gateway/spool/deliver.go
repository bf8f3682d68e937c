package spool

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/link"
	"github.com/storegate/storegate/gateway/spool/queue"
)

// receiverSessions is how many TLS sessions with receivers are kept, so a
// connection made again (after the idle timeout, an outage, a reset) resumes
// rather than verifying the receiver's chain anew.
const receiverSessions = 32

func newClient(opts Options, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{
		Proxy:       nil, // never from the environment: Dial is the gateway's path
		DialContext: opts.Dial,
		// The session cache belongs to this client, which a change of
		// roots replaces: no session verified under old roots resumes.
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
			ClientSessionCache: tls.NewLRUClientSessionCache(receiverSessions)},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   min(10*time.Second, opts.AttemptTimeout),
		ResponseHeaderTimeout: opts.AttemptTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Run delivers queued messages until ctx ends, one worker per destination
// origin (scheme, host, port) so each origin gets its messages in submission
// order. It also drops expired messages, syncs acknowledgements, and retries
// opening an unusable directory. It returns after its workers stopped.
func (s *Spool) Run(ctx context.Context) error {
	s.mu.Lock()
	s.runCtx = ctx
	for origin, oq := range s.origins {
		if len(oq.q) > 0 && !oq.running {
			s.startWorkerLocked(origin, oq)
		}
	}
	s.mu.Unlock()
	tick := time.NewTicker(s.opts.RetryAfter)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.runCtx = nil
			s.mu.Unlock()
			s.workers.Wait()
			return nil
		case <-tick.C:
		}
		s.mu.Lock()
		lg, closed := s.log, s.closed
		s.mu.Unlock()
		if lg == nil && !closed {
			s.open() // its inserts start the workers, since runCtx is set
			continue
		}
		s.expire()
		s.trimDead()
		if lg != nil {
			lg.SyncAcks()
		}
	}
}

func (s *Spool) startWorkerLocked(origin string, oq *originQueue) {
	oq.running = true
	s.workers.Add(1)
	go s.work(s.runCtx, origin, oq)
}

func (s *Spool) work(ctx context.Context, origin string, oq *originQueue) {
	defer s.workers.Done()
	for {
		s.mu.Lock()
		if ctx.Err() != nil || len(oq.q) == 0 || s.log == nil {
			oq.running = false
			if len(oq.q) == 0 && s.origins[origin] == oq {
				delete(s.origins, origin)
			}
			s.mu.Unlock()
			return
		}
		e := oq.q[0]
		wait := e.next.Sub(s.opts.Now())
		s.mu.Unlock()
		if wait > 0 {
			s.sleep(ctx, wait)
			continue
		}
		s.deliver(ctx, e, oq)
	}
}

// sleep waits d, or less if ctx ends or the uplink comes back up.
func (s *Spool) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	var changed <-chan struct{}
	if s.opts.Link != nil {
		changed = s.opts.Link.Changed()
	}
	for {
		select {
		case <-t.C:
			return
		case <-ctx.Done():
			return
		case <-changed:
			if s.opts.Link.State() == link.Up {
				return
			}
			changed = s.opts.Link.Changed()
		}
	}
}

// backoff is the delay before retry number attempt (1-based): exponential
// from min, capped at max, with jitter j in [0,1) spreading it over [d/2, d).
func backoff(attempt int, minD, maxD time.Duration, j float64) time.Duration {
	d := minD
	for i := 1; i < attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	return d/2 + time.Duration(j*float64(d/2))
}

// parseRetryAfter reads a Retry-After value: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

func (s *Spool) deliver(ctx context.Context, e *entry, oq *originQueue) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-s.sem }()
	s.mu.Lock()
	lg, done := s.log, e.done
	s.mu.Unlock()
	if lg == nil || done {
		return
	}
	raw, err := lg.ReadAt(e.pos)
	if err != nil {
		s.deadLetter(e, oq, nil, "", 0, "cannot read the stored message: "+err.Error())
		return
	}
	m, err := queue.DecodeMessage(raw)
	if err != nil {
		s.deadLetter(e, oq, raw, "", 0, "stored message cannot be decoded: "+err.Error())
		return
	}
	_, host, port, err := parseDestination(m.Destination)
	if err == nil && s.opts.Allow != nil {
		if aerr := s.opts.Allow(host, port); aerr != nil {
			s.retry(e, oq, "destination no longer allowed: "+aerr.Error(), 0)
			return
		}
	}
	if err != nil {
		s.deadLetter(e, oq, raw, m.Destination, 0, err.Error())
		return
	}
	actx, cancel := context.WithTimeout(ctx, s.opts.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, m.Method, m.Destination, bytes.NewReader(m.Body))
	if err != nil {
		s.deadLetter(e, oq, raw, m.Destination, 0, "cannot build the request: "+err.Error())
		return
	}
	for k, vs := range m.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Idempotency-Key", m.Key)
	client, err := s.httpClient()
	if err != nil {
		s.retry(e, oq, "no roots to verify the receiver: "+err.Error(), 0)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		if s.opts.Link != nil {
			s.opts.Link.Observe(err) // an untrusted certificate or a refusal counts as an answer there
		}
		s.retry(e, oq, err.Error(), 0)
		return
	}
	if s.opts.Link != nil {
		s.opts.Link.Observe(nil)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		s.delivered(e, oq, m.Destination, code)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		s.retry(e, oq, "HTTP "+strconv.Itoa(code), parseRetryAfter(resp.Header.Get("Retry-After"), s.opts.Now()))
	default:
		s.deadLetter(e, oq, raw, m.Destination, code, "HTTP "+strconv.Itoa(code))
	}
}

func (s *Spool) delivered(e *entry, oq *originQueue, dest string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removeLocked(e, finished{state: "delivered", dest: redact(dest), status: code, at: s.opts.Now()}) {
		s.c.delivered.Add(1)
	}
	if oq.failing {
		oq.failing = false
		s.emit(events.Info, "spool delivery works again", events.Str(events.KeyTarget, e.origin),
			events.Int(keyWaiting, int64(len(oq.q))))
	}
}

func (s *Spool) retry(e *entry, oq *originQueue, reason string, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.done {
		return
	}
	e.attempts++
	e.lastErr = reason
	d := backoff(e.attempts, s.opts.MinBackoff, s.opts.MaxBackoff, s.opts.Jitter())
	if retryAfter > 0 {
		d = max(d, min(retryAfter, s.opts.MaxRetryAfter))
	}
	e.next = s.opts.Now().Add(d)
	s.c.retries.Add(1)
	if !oq.failing {
		oq.failing = true
		s.emit(events.NetworkError, "spool delivery failing; retrying with backoff", events.Str(events.KeyTarget, e.origin),
			events.Str(events.KeyReason, reason), events.Int(keyRetryInMS, d.Milliseconds()))
	}
}

// DeadLetter is the listing entry kept beside a dead letter's payload.
type DeadLetter struct {
	ID          string    `json:"id"`
	Destination string    `json:"destination"`
	Status      int       `json:"status,omitempty"`
	Reason      string    `json:"reason"`
	Attempts    int       `json:"attempts"`
	At          time.Time `json:"at"`
}

// deadLetter keeps a message that can never be delivered in dead/ (payload
// first, then its listing entry, each written durably), then removes it from
// the queue. If the disk refuses, the message stays queued and is retried.
func (s *Spool) deadLetter(e *entry, oq *originQueue, raw []byte, dest string, status int, reason string) {
	if dest == "" {
		dest = e.origin
	}
	attempts := e.attempts // the failed tries before this one
	if status != 0 {
		attempts++ // this one reached the receiver, which refused it
	}
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	size, err := s.writeDead(e.id.String(), dest, status, attempts, reason, raw)
	if err != nil {
		s.retry(e, oq, "cannot write dead letter: "+err.Error(), 0)
		return
	}
	s.mu.Lock()
	s.deadBytes += size
	if s.removeLocked(e, finished{state: "dead", dest: redact(dest), status: status, reason: reason, at: s.opts.Now()}) {
		s.deadCount++
		s.c.deadLettered.Add(1)
		s.emit(events.OtherError, "spool dead letter: the receiver refused the message for good", events.Str(events.KeyID, e.id.String()),
			events.Str(events.KeyTarget, e.origin), events.Int(events.KeyStatus, int64(status)), events.Str(events.KeyReason, reason))
	}
	s.mu.Unlock()
	s.trimDeadLocked()
}

// writeDead writes a dead letter's payload, then its listing entry, and
// returns the bytes written. The caller holds deadMu.
func (s *Spool) writeDead(id, dest string, status, attempts int, reason string, raw []byte) (int64, error) {
	dir := s.deadDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	if raw != nil {
		if err := queue.WriteFileDurable(dir, id+".msg", raw); err != nil {
			return 0, err
		}
	}
	rec, _ := json.Marshal(DeadLetter{ID: id, Destination: dest, Status: status, Reason: reason, Attempts: attempts, At: s.opts.Now()})
	if err := queue.WriteFileDurable(dir, id+".json", rec); err != nil {
		return int64(len(raw)), err
	}
	return int64(len(raw) + len(rec)), nil
}

// DeadLetters lists the dead letters kept in the spool directory.
func (s *Spool) DeadLetters() ([]DeadLetter, error) {
	es, err := os.ReadDir(s.deadDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for _, e := range es {
		name := e.Name()
		if len(name) < 6 || name[len(name)-5:] != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.deadDir(), name))
		if err != nil {
			continue
		}
		var d DeadLetter
		if json.Unmarshal(b, &d) == nil {
			out = append(out, d)
		}
	}
	return out, nil
}
