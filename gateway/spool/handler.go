package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/link"
	"github.com/storegate/storegate/gateway/spool/queue"
)

// Paths served by the spool's handler, on the proxy listener.
const (
	PathPrefix   = "/spool/v1/"
	PathMessages = "/spool/v1/messages"
	PathStatus   = "/spool/v1/status"
	PathDead     = "/spool/v1/dead"
)

// HeaderDestination names where a submitted message is to be delivered.
const HeaderDestination = "Storegate-Destination"

// HeaderMethod optionally names the delivery method (POST, PUT, PATCH).
const HeaderMethod = "Storegate-Method"

// ServeHTTP serves the spool API:
//
//	POST /spool/v1/messages       submit (Storegate-Destination, body, headers) -> 202 {"id"}
//	GET  /spool/v1/messages/{id}  one message's state
//	GET  /spool/v1/status         depth, bytes, oldest age, dead letters, counters
//	GET  /spool/v1/dead           the dead letters
func (s *Spool) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == PathMessages:
		if r.Method != http.MethodPost {
			s.writeError(w, errMethod("POST"))
			return
		}
		s.serveSubmit(w, r)
	case strings.HasPrefix(p, PathMessages+"/"):
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.writeError(w, errMethod("GET"))
			return
		}
		st, ok := s.MessageState(strings.TrimPrefix(p, PathMessages+"/"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown id (never submitted, or finished long ago)"})
			return
		}
		writeJSON(w, http.StatusOK, st)
	case p == PathStatus:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.writeError(w, errMethod("GET"))
			return
		}
		writeJSON(w, http.StatusOK, s.Status())
	case p == PathDead:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.writeError(w, errMethod("GET"))
			return
		}
		d, err := s.DeadLetters()
		if err != nil {
			s.writeError(w, fmt.Errorf("%w: %v", ErrUnavailable, err))
			return
		}
		if d == nil {
			d = []DeadLetter{}
		}
		for i := range d {
			d[i].Destination = redact(d[i].Destination)
		}
		writeJSON(w, http.StatusOK, map[string]any{"dead_letters": d})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such spool endpoint"})
	}
}

type errMethod string

func (e errMethod) Error() string { return "method not allowed; use " + string(e) }

// refuse answers a refused submission and, for the refusals Submit does not
// report itself, emits event 400 naming the client and the reason.
func (s *Spool) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ErrBadDestination) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrFull) {
		s.emit(events.OtherError, "spool submission refused", events.Str(events.KeyClient, r.RemoteAddr),
			events.Str(events.KeyReason, err.Error()))
	}
	s.writeError(w, err)
}

func (s *Spool) serveSubmit(w http.ResponseWriter, r *http.Request) {
	dest := r.Header.Get(HeaderDestination)
	if dest == "" {
		s.c.refusedBad.Add(1)
		s.refuse(w, r, fmt.Errorf("%w: header %s is required", ErrBadDestination, HeaderDestination))
		return
	}
	lim := s.limits.Load()
	if r.ContentLength > lim.MaxMessageBytes {
		s.c.refusedLarge.Add(1)
		s.refuse(w, r, fmt.Errorf("%w: %d bytes, the limit is %d (spool.max_message_bytes)", ErrTooLarge, r.ContentLength, lim.MaxMessageBytes))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, lim.MaxMessageBytes+1))
	if err != nil {
		s.c.refusedBad.Add(1)
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "reading the body: " + err.Error()})
		return
	}
	if int64(len(body)) > lim.MaxMessageBytes {
		s.c.refusedLarge.Add(1)
		s.refuse(w, r, fmt.Errorf("%w: more than %d bytes (spool.max_message_bytes)", ErrTooLarge, lim.MaxMessageBytes))
		return
	}
	id, err := s.Submit(r.Context(), Submission{
		Destination: dest,
		Method:      r.Header.Get(HeaderMethod),
		Header:      r.Header,
		Body:        body,
	})
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	w.Header().Set("Location", PathMessages+"/"+id)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
}

// writeError is the one place where spool errors become statuses.
func (s *Spool) writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var em errMethod
	switch {
	case errors.As(err, &em):
		code = http.StatusMethodNotAllowed
	case errors.Is(err, ErrBadDestination):
		code = http.StatusBadRequest
	case errors.Is(err, ErrNotAllowed):
		code = http.StatusForbidden
	case errors.Is(err, ErrTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrFull):
		code = http.StatusInsufficientStorage
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	if code == http.StatusInsufficientStorage || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(max(int(s.opts.RetryAfter/time.Second), 1)))
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// MessageState is what GET /spool/v1/messages/{id} reports.
type MessageState struct {
	ID          string    `json:"id"`
	State       string    `json:"state"` // queued, delivered, dead, dropped
	Destination string    `json:"destination"`
	Submitted   time.Time `json:"submitted,omitzero"`
	Attempts    int       `json:"attempts,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Status      int       `json:"status,omitempty"` // the receiver's final HTTP status
	Reason      string    `json:"reason,omitempty"`
	Finished    time.Time `json:"finished,omitzero"`
}

// MessageState reports a message's state: queued ones always, finished ones
// while they are among the last Options.Remember, dead letters always.
func (s *Spool) MessageState(id string) (MessageState, bool) {
	key, ok := parseID(id)
	if !ok {
		return MessageState{}, false
	}
	s.mu.Lock()
	if e, ok := s.byID[key]; ok {
		st := MessageState{ID: id, State: "queued", Destination: e.origin, Submitted: time.Unix(0, e.submitted),
			Attempts: e.attempts, LastError: e.lastErr, NextAttempt: e.next}
		lg := s.log
		s.mu.Unlock()
		if lg != nil { // the destination is on disk, not in memory
			if raw, err := lg.ReadAt(e.pos); err == nil {
				if m, err := queue.DecodeMessage(raw); err == nil {
					st.Destination = redact(m.Destination)
				}
			}
		}
		return st, true
	}
	if f, ok := s.finished[key]; ok {
		defer s.mu.Unlock()
		return MessageState{ID: id, State: f.state, Destination: f.dest, Status: f.status, Reason: f.reason, Finished: f.at}, true
	}
	s.mu.Unlock()
	// A dead letter's listing entry is named after its id: read that one file,
	// not the whole dead-letter area, for each unknown id asked about.
	var x DeadLetter
	if b, err := os.ReadFile(filepath.Join(s.deadDir(), id+".json")); err == nil && json.Unmarshal(b, &x) == nil && x.ID == id {
		return MessageState{ID: id, State: "dead", Destination: redact(x.Destination), Status: x.Status, Reason: x.Reason, Finished: x.At}, true
	}
	return MessageState{}, false
}

// Status is what GET /spool/v1/status reports.
type Status struct {
	Available        bool           `json:"available"`
	Error            string         `json:"error,omitempty"` // why submissions get 503
	Depth            int            `json:"depth"`
	Bytes            int64          `json:"bytes"`
	MaxBytes         int64          `json:"max_bytes"`
	OldestAgeSeconds float64        `json:"oldest_age_seconds"`
	DeadLetters      int            `json:"dead_letters"`
	DeadLetterBytes  int64          `json:"dead_letter_bytes"`
	DeadDeleted      uint64         `json:"dead_letters_deleted"` // by spool.dead_letter_max_bytes
	Submitted        uint64         `json:"submitted"`
	Delivered        uint64         `json:"delivered"`
	Retries          uint64         `json:"retries"`
	Dropped          uint64         `json:"dropped"`
	Segments         int            `json:"segments"`
	DiskBytes        int64          `json:"disk_bytes"`
	Destinations     []OriginStatus `json:"destinations,omitempty"`
	Link             *link.Status   `json:"link,omitempty"`
	Storage          *queue.Stats   `json:"storage,omitempty"`
	Quarantined      uint64         `json:"quarantined"`
	Missing          uint64         `json:"missing_segments"`
	Limits           map[string]any `json:"limits"`
}

// OriginStatus is one destination origin's queue.
type OriginStatus struct {
	Origin      string    `json:"origin"`
	Depth       int       `json:"depth"`
	Attempts    int       `json:"attempts"` // of the message at the head
	LastError   string    `json:"last_error,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// Status returns a snapshot of the spool.
func (s *Spool) Status() Status {
	lim := s.limits.Load()
	now := s.opts.Now()
	s.mu.Lock()
	st := Status{
		Available:       s.log != nil,
		Depth:           s.depth,
		Bytes:           s.bytes,
		MaxBytes:        lim.MaxBytes,
		DeadLetters:     s.deadCount,
		DeadLetterBytes: s.deadBytes,
	}
	if s.openErr != nil {
		st.Error = s.openErr.Error()
	}
	for _, e := range s.order {
		if !e.done {
			st.OldestAgeSeconds = max(now.Sub(time.Unix(0, e.submitted)).Seconds(), 0)
			break
		}
	}
	for o, oq := range s.origins {
		if len(oq.q) == 0 {
			continue
		}
		h := oq.q[0]
		st.Destinations = append(st.Destinations, OriginStatus{Origin: o, Depth: len(oq.q), Attempts: h.attempts, LastError: h.lastErr, NextAttempt: h.next})
	}
	lg := s.log
	s.mu.Unlock()
	if lg != nil {
		qs := lg.Stats()
		st.Storage = &qs
		st.Segments, st.DiskBytes = qs.Segments, qs.DiskBytes
	}
	st.Submitted = s.c.submitted.Load()
	st.Delivered = s.c.delivered.Load()
	st.Retries = s.c.retries.Load()
	st.Dropped = s.c.droppedAge.Load() + s.c.droppedOverflow.Load()
	st.Quarantined = s.c.quarantined.Load()
	st.Missing = s.c.missingSegments.Load()
	st.DeadDeleted = s.c.deadDeleted.Load()
	st.Limits = map[string]any{"max_bytes": lim.MaxBytes, "max_age": lim.MaxAge.String(),
		"max_message_bytes": lim.MaxMessageBytes, "overflow": string(lim.Overflow), "dead_letter_max_bytes": lim.DeadLetterBytes}
	if s.opts.Link != nil {
		ls := s.opts.Link.Status()
		st.Link = &ls
	}
	return st
}

// redact hides a destination's query in API answers: queries often carry
// tokens (SAS signatures, API keys) that any terminal on the store network
// could otherwise read back. The stored message keeps the full URL.
func redact(dest string) string {
	if i := strings.IndexByte(dest, '?'); i >= 0 {
		return dest[:i] + "?REDACTED"
	}
	return dest
}
