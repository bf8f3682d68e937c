// Package agentside is what runs on the terminals: a client that hands
// messages to the store gateway's spool and keeps them in a local on-disk
// spool while the gateway cannot be reached, the proxy setting written for
// systemd services, login shells and the Log Analytics agent, and a check of
// the path through the gateway. It never imports the gateway's server code,
// so the terminal binary stays small.
package agentside

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/storegate/storegate/gateway/spool/queue"
)

// Protocol names shared with the gateway (SPEC.md, Interface contract).
const (
	submitPath        = "/spool/v1/messages"
	headerDestination = "Storegate-Destination"
	headerMethod      = "Storegate-Method"
	headerKey         = "Idempotency-Key"
	// LocalIDPrefix starts the id of a message kept on the terminal; the
	// gateway gives it its own id when it takes it over. The Idempotency-Key
	// stays the same throughout.
	LocalIDPrefix = "local-"
)

// Options configure a Client.
type Options struct {
	// Gateway is the gateway's proxy listener as a URL, e.g. http://box:8080.
	// Required.
	Gateway string
	// SpoolDir is the local spool directory. Empty means no local spool: Send
	// then fails while the gateway cannot take a message.
	SpoolDir string
	// HTTPClient talks to the gateway. Nil means a client with a 30s timeout
	// that never uses a proxy (the gateway is the proxy).
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// LockWait is how long New waits while another process (a running
	// `storegate-agent flush --watch`, say) has the local spool open. Zero
	// means 10s.
	LockWait time.Duration
}

// GatewayError is a refusal that retrying will not fix (400, 403, 413):
// the message was not taken.
type GatewayError struct {
	Status  int
	Message string
}

func (e *GatewayError) Error() string {
	return fmt.Sprintf("gateway refused the message: %d %s", e.Status, e.Message)
}

// ErrNoLocalSpool is wrapped by Send's error when the gateway could not take
// a message and there is no local spool to keep it in.
var ErrNoLocalSpool = errors.New("agentside: gateway unavailable and no local spool")

// Client submits messages to the gateway's spool. It is safe for concurrent use.
type Client struct {
	opts     Options
	endpoint string

	mu      sync.Mutex
	log     *queue.Log
	pending []queue.Pos // local messages, oldest first

	flushMu sync.Mutex
}

// New opens the client and, if SpoolDir is set, its local spool (recovering
// whatever a crash left there).
func New(opts Options) (*Client, error) {
	u, err := url.Parse(opts.Gateway)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("agentside: gateway %q: want a URL like http://box:8080", opts.Gateway)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Client{opts: opts, endpoint: strings.TrimSuffix(opts.Gateway, "/") + submitPath}
	if opts.LockWait <= 0 {
		opts.LockWait = 10 * time.Second
	}
	if opts.SpoolDir == "" {
		return c, nil
	}
	deadline := time.Now().Add(opts.LockWait)
	for {
		c.pending = nil
		lg, _, err := queue.Open(opts.SpoolDir, queue.Options{SegmentBytes: 4 << 20}, func(p queue.Pos, _ []byte) {
			c.pending = append(c.pending, p)
		})
		if err == nil {
			c.log = lg
			return c, nil
		}
		if !errors.Is(err, queue.ErrLocked) || time.Now().After(deadline) {
			return nil, fmt.Errorf("agentside: local spool: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // the other process holds the lock briefly
	}
}

// Close closes the local spool; messages in it stay for the next run.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.log != nil {
		err := c.log.Close()
		c.log = nil
		return err
	}
	return nil
}

// Pending is the number of messages kept locally.
func (c *Client) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func newKey() string {
	var b [16]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Send hands a message for destination (https://host[:port]/path?query) to
// the gateway. It returns the gateway's id once the gateway has the message
// on disk. If the gateway cannot be reached or is full, the message is kept
// in the local spool and the id starts with LocalIDPrefix; Flush or Run hands
// it over later. Messages kept locally go out before newer ones. Header may
// carry an Idempotency-Key; otherwise one is made, and it stays with the
// message all the way to the receiver.
func (c *Client) Send(ctx context.Context, destination string, header http.Header, body []byte) (string, error) {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if h.Get(headerKey) == "" {
		h.Set(headerKey, newKey())
	}
	if c.Pending() > 0 {
		c.Flush(ctx)
	}
	if c.Pending() == 0 {
		id, err := c.post(ctx, destination, h, body)
		var ge *GatewayError
		if err == nil || errors.As(err, &ge) || ctx.Err() != nil {
			return id, err
		}
		if c.log == nil {
			return "", fmt.Errorf("%w: %v", ErrNoLocalSpool, err)
		}
	}
	return c.keep(ctx, destination, h, body)
}

// keep stores a message in the local spool.
func (c *Client) keep(ctx context.Context, destination string, h http.Header, body []byte) (string, error) {
	c.mu.Lock()
	lg := c.log
	c.mu.Unlock()
	if lg == nil {
		return "", ErrNoLocalSpool
	}
	m := &queue.Message{
		ID:          LocalIDPrefix + h.Get(headerKey),
		Key:         h.Get(headerKey),
		Destination: destination,
		Method:      h.Get(headerMethod),
		Submitted:   c.opts.Now(),
		Header:      h,
		Body:        body,
	}
	pos, err := lg.Append(ctx, queue.AppendMessage(nil, m))
	if err != nil {
		return "", fmt.Errorf("agentside: local spool: %w", err)
	}
	c.mu.Lock()
	c.pending = append(c.pending, pos)
	c.mu.Unlock()
	return m.ID, nil
}

// post submits one message; a *GatewayError means a permanent refusal, any
// other error a temporary failure.
func (c *Client) post(ctx context.Context, destination string, h http.Header, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	req.Header.Set(headerDestination, destination)
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var out struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	}
	json.Unmarshal(raw, &out)
	switch {
	case resp.StatusCode == http.StatusAccepted && out.ID != "":
		return out.ID, nil
	case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusForbidden,
		resp.StatusCode == http.StatusRequestEntityTooLarge:
		return "", &GatewayError{Status: resp.StatusCode, Message: out.Error}
	default:
		return "", fmt.Errorf("agentside: gateway answered %d %s", resp.StatusCode, out.Error)
	}
}

// Flush hands locally kept messages to the gateway, oldest first, until the
// local spool is empty or the gateway cannot take one. A message the gateway
// refuses for good is moved to SpoolDir/rejected/ and counted in rejected.
func (c *Client) Flush(ctx context.Context) (handed, rejected int, err error) {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	for {
		c.mu.Lock()
		if len(c.pending) == 0 || c.log == nil {
			c.mu.Unlock()
			return handed, rejected, nil
		}
		pos, lg := c.pending[0], c.log
		c.mu.Unlock()
		raw, rerr := lg.ReadAt(pos)
		var m *queue.Message
		if rerr == nil {
			m, rerr = queue.DecodeMessage(raw)
		}
		if rerr == nil {
			_, err = c.post(ctx, m.Destination, m.Header, m.Body)
		}
		var ge *GatewayError
		switch {
		case rerr != nil:
			c.reject(raw, "", 0, rerr.Error())
			rejected++
		case err == nil:
			handed++
		case errors.As(err, &ge):
			c.reject(raw, m.Key, ge.Status, ge.Message)
			rejected++
			err = nil
		default:
			return handed, rejected, err
		}
		c.mu.Lock()
		c.pending = c.pending[1:]
		lg.Ack(pos)
		c.mu.Unlock()
	}
}

// reject keeps a message the gateway will never take, with the reason.
func (c *Client) reject(raw []byte, key string, status int, reason string) {
	dir := filepath.Join(c.opts.SpoolDir, "rejected")
	if key == "" {
		key = "undecodable-" + strconv.FormatInt(c.opts.Now().UnixNano(), 10)
	}
	if strings.Trim(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" || len(key) > 100 {
		key = hex.EncodeToString([]byte(key))[:min(64, 2*len(key))] // the key came from the caller: no paths
	}
	if err := mkdir(dir); err != nil {
		return
	}
	if raw != nil {
		queue.WriteFileDurable(dir, key+".msg", raw)
	}
	info, _ := json.Marshal(map[string]any{"key": key, "status": status, "reason": reason, "at": c.opts.Now()})
	queue.WriteFileDurable(dir, key+".json", info)
}

// Run hands locally kept messages over every interval until ctx ends. It
// keeps the local spool open (locked) throughout; a separate process that
// should share the spool uses Flush with a short-lived Client instead.
func (c *Client) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if c.Pending() > 0 {
			c.Flush(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
