package spool

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/link"
	"github.com/storegate/storegate/gateway/spool/queue"
)

type fixture struct {
	t    *testing.T
	sp   *Spool
	srv  *httptest.Server // the spool's handler, as on the proxy listener
	rcv  *receiver
	ev   *eventLog
	link *link.Tracker
	stop context.CancelFunc
	ran  chan struct{}
}

func testOptions(dir string) Options {
	return Options{
		Dir:            dir,
		MinBackoff:     5 * time.Millisecond,
		MaxBackoff:     50 * time.Millisecond,
		AttemptTimeout: 2 * time.Second,
		RetryAfter:     50 * time.Millisecond,
	}
}

// newFixture starts a receiver, a spool in a temp dir (options adjusted by
// tweak), and an HTTP server for the spool's handler. run says whether
// delivery runs from the start.
func newFixture(t *testing.T, run bool, tweak func(*Options)) *fixture {
	t.Helper()
	cert, certPEM := testCert(t)
	f := &fixture{t: t, rcv: newReceiver(t, cert), ev: &eventLog{}}
	f.link = link.New(link.Options{Events: f.ev, FailuresToDown: 2, Hold: -1})
	opts := testOptions(t.TempDir())
	opts.Roots = rootsOf(poolFromPEM(t, certPEM))
	opts.Events = f.ev
	opts.Link = f.link
	if tweak != nil {
		tweak(&opts)
	}
	sp, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.sp = sp
	f.srv = httptest.NewServer(sp)
	t.Cleanup(func() {
		f.srv.Close()
		f.stopRun()
		sp.Close()
	})
	if run {
		f.startRun()
	}
	return f
}

func (f *fixture) startRun() {
	ctx, cancel := context.WithCancel(context.Background())
	f.stop, f.ran = cancel, make(chan struct{})
	go func() {
		f.sp.Run(ctx)
		close(f.ran)
	}()
}

func (f *fixture) stopRun() {
	if f.stop != nil {
		f.stop()
		<-f.ran
		f.stop = nil
	}
}

// runSpool opens a spool on opts (a restart, when opts.Dir was used before)
// and runs its delivery until the test ends.
func runSpool(t *testing.T, opts Options) *Spool {
	t.Helper()
	sp, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sp.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; sp.Close() })
	return sp
}

func (f *fixture) dest(path string) string { return "https://" + f.rcv.addr + path }

// submit posts a message through the real HTTP handler and returns the
// status, the id (for 202) and the response headers.
func (f *fixture) submit(dest string, body []byte, hdr map[string]string) (int, string, http.Header) {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+PathMessages, bytes.NewReader(body))
	if dest != "" {
		req.Header.Set(HeaderDestination, dest)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatalf("submit: %v", err)
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.ID, resp.Header
}

func (f *fixture) getJSON(path string, v any) int {
	f.t.Helper()
	resp, err := f.srv.Client().Get(f.srv.URL + path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(v)
	return resp.StatusCode
}

func TestSubmitAndDeliver(t *testing.T) {
	f := newFixture(t, false, nil)
	var ids []string
	for i := range 3 {
		code, id, _ := f.submit(f.dest("/ingest?x=1"), []byte("msg-"+strconv.Itoa(i)), map[string]string{
			"Content-Type":        "application/json",
			"X-Custom":            "kept",
			"Connection":          "X-Hop",
			"X-Hop":               "dropped",
			"Proxy-Authorization": "Basic c2VjcmV0",
		})
		if code != http.StatusAccepted || id == "" {
			t.Fatalf("submit %d: %d %q", i, code, id)
		}
		ids = append(ids, id)
	}
	var st MessageState
	if f.getJSON(PathMessages+"/"+ids[0], &st); st.State != "queued" {
		t.Fatalf("state before delivery = %+v", st)
	}
	if strings.Contains(st.Destination, "x=1") {
		t.Fatalf("the query (often a token) is shown back: %q", st.Destination)
	}
	f.startRun()
	waitFor(t, "delivery", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 3 })
	for i, r := range f.rcv.receipts() {
		if r.Body != "msg-"+strconv.Itoa(i) || r.Key != ids[i] || r.Path != "/ingest" {
			t.Fatalf("receipt %d = %+v", i, r)
		}
		if r.Header.Get("X-Custom") != "kept" || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("headers not delivered: %v", r.Header)
		}
		if r.Header.Get("X-Hop") != "" || r.Header.Get("Proxy-Authorization") != "" || r.Header.Get(HeaderDestination) != "" {
			t.Fatalf("hop-by-hop or spool headers delivered: %v", r.Header)
		}
	}
	waitFor(t, "delivered state", 5*time.Second, func() bool {
		f.getJSON(PathMessages+"/"+ids[2], &st)
		return st.State == "delivered"
	})
	var s Status
	f.getJSON(PathStatus, &s)
	if s.Depth != 0 || s.Delivered != 3 || s.Submitted != 3 {
		t.Fatalf("status %+v", s)
	}
	if f.link.State() != link.Up {
		t.Fatalf("link = %v after deliveries", f.link.State())
	}
}

func TestSubmitRefusals(t *testing.T) {
	f := newFixture(t, false, func(o *Options) {
		o.Allow = func(host string, port int) error {
			if host == "blocked.example" {
				return errors.New("host not in allowed_hosts")
			}
			return nil
		}
		o.Limits = Limits{MaxMessageBytes: 100, MaxBytes: 400}
	})
	for _, tc := range []struct {
		name string
		dest string
		body []byte
		hdr  map[string]string
		want int
	}{
		{"no destination", "", []byte("x"), nil, 400},
		{"plain http", "http://127.0.0.1/x", []byte("x"), nil, 400},
		{"credentials in URL", "https://u:p@127.0.0.1/x", []byte("x"), nil, 400},
		{"bad port", "https://127.0.0.1:99999/x", []byte("x"), nil, 400},
		{"bad method", f.dest("/"), []byte("x"), map[string]string{HeaderMethod: "DELETE"}, 400},
		{"not allowed", "https://blocked.example/x", []byte("x"), nil, 403},
		{"too large", f.dest("/"), bytes.Repeat([]byte("a"), 101), nil, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, _ := f.submit(tc.dest, tc.body, tc.hdr)
			if code != tc.want {
				t.Fatalf("status %d, want %d", code, tc.want)
			}
		})
	}
	if f.ev.count(events.NotAllowed) != 1 {
		t.Fatalf("event 105 count = %d", f.ev.count(events.NotAllowed))
	}
	if n := f.ev.count(events.OtherError); n != 6 {
		t.Fatalf("event 400 count = %d, want one per bad or too large submission", n)
	}
	// Chunked body over the limit (no Content-Length): 413 too.
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+PathMessages, io.MultiReader(bytes.NewReader(make([]byte, 150))))
	req.Header.Set(HeaderDestination, f.dest("/"))
	req.ContentLength = -1
	resp, err := f.srv.Client().Do(req)
	if err != nil || resp.StatusCode != 413 {
		t.Fatalf("chunked too large: %v %v", resp, err)
	}
	resp.Body.Close()
	// Fill to max_bytes: then 507 with Retry-After.
	var last int
	var hdr http.Header
	for range 20 {
		last, _, hdr = f.submit(f.dest("/"), make([]byte, 90), nil)
		if last != http.StatusAccepted {
			break
		}
	}
	if last != http.StatusInsufficientStorage || hdr.Get("Retry-After") == "" {
		t.Fatalf("full spool: %d Retry-After %q", last, hdr.Get("Retry-After"))
	}
	resp, _ = f.srv.Client().Get(f.srv.URL + PathMessages)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET messages = %d", resp.StatusCode)
	}
	resp.Body.Close()
	var st MessageState
	if code := f.getJSON(PathMessages+"/nope", &st); code != 404 {
		t.Fatalf("unknown id = %d", code)
	}
}

func TestDropOldest(t *testing.T) {
	f := newFixture(t, false, func(o *Options) {
		o.Limits = Limits{MaxBytes: 2000, Overflow: OverflowDropOldest}
	})
	var ids []string
	for i := range 30 {
		code, id, _ := f.submit(f.dest("/d"), []byte(fmt.Sprintf("%03d", i)+strings.Repeat("x", 200)), nil)
		if code != http.StatusAccepted {
			t.Fatalf("submit %d: %d", i, code)
		}
		ids = append(ids, id)
	}
	var st MessageState
	f.getJSON(PathMessages+"/"+ids[0], &st)
	if st.State != "dropped" {
		t.Fatalf("oldest = %+v", st)
	}
	var s Status
	f.getJSON(PathStatus, &s)
	if s.Bytes > 2000 || s.Dropped == 0 || s.Depth+int(s.Dropped) != 30 {
		t.Fatalf("status %+v", s)
	}
	f.startRun()
	waitFor(t, "delivery of the survivors", 10*time.Second, func() bool { return len(f.rcv.receipts()) == s.Depth })
	got := f.rcv.receipts()
	if got[len(got)-1].Key != ids[29] {
		t.Fatal("newest message not delivered")
	}
	if f.ev.count(events.OtherError) == 0 {
		t.Fatal("no event for the dropped messages")
	}
}

func TestMaxAge(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newFixture(t, false, func(o *Options) {
		o.Now = clock
		o.Limits = Limits{MaxAge: time.Hour}
	})
	_, old, _ := f.submit(f.dest("/a"), []byte("old"), nil)
	mu.Lock()
	now = now.Add(50 * time.Minute)
	mu.Unlock()
	_, young, _ := f.submit(f.dest("/a"), []byte("young"), nil)
	mu.Lock()
	now = now.Add(20 * time.Minute)
	mu.Unlock()
	f.sp.expire()
	var st MessageState
	if f.getJSON(PathMessages+"/"+old, &st); st.State != "dropped" {
		t.Fatalf("old message: %+v", st)
	}
	if f.getJSON(PathMessages+"/"+young, &st); st.State != "queued" {
		t.Fatalf("young message: %+v", st)
	}
	var s Status
	f.getJSON(PathStatus, &s)
	if s.OldestAgeSeconds != 20*60 {
		t.Fatalf("oldest age %v", s.OldestAgeSeconds)
	}
}

func TestRetryAndDeadLetter(t *testing.T) {
	f := newFixture(t, false, nil)
	f.rcv.setRespond(func(r *http.Request, n int) (int, http.Header) {
		switch r.URL.Path {
		case "/flaky":
			codes := []int{503, 429, 408, 500}
			if n <= len(codes) {
				return codes[n-1], http.Header{"Retry-After": {"0"}}
			}
		case "/bad":
			return 400, nil
		case "/gone":
			return 410, nil
		}
		return 200, nil
	})
	_, flaky, _ := f.submit(f.dest("/flaky"), []byte("f"), nil)
	_, bad, _ := f.submit(f.dest("/bad"), []byte("b"), nil)
	_, after, _ := f.submit(f.dest("/ok"), []byte("after"), nil)
	f.startRun()
	waitFor(t, "deliveries", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 2 })
	got := f.rcv.receipts()
	if got[0].Key != flaky || got[1].Key != after {
		t.Fatalf("order: %+v", got)
	}
	var st MessageState
	waitFor(t, "dead state", 5*time.Second, func() bool {
		f.getJSON(PathMessages+"/"+bad, &st)
		return st.State == "dead"
	})
	if st.Status != 400 {
		t.Fatalf("dead letter %+v", st)
	}
	var dl struct {
		DeadLetters []DeadLetter `json:"dead_letters"`
	}
	f.getJSON(PathDead, &dl)
	if len(dl.DeadLetters) != 1 || dl.DeadLetters[0].ID != bad {
		t.Fatalf("dead letters %+v", dl)
	}
	if dl.DeadLetters[0].Attempts != 1 { // refused on its first try
		t.Fatalf("dead letter attempts %d, want 1", dl.DeadLetters[0].Attempts)
	}
	if _, err := os.Stat(filepath.Join(f.sp.opts.Dir, "dead", bad+".msg")); err != nil {
		t.Fatal("dead letter payload not kept:", err)
	}
	var s Status
	f.getJSON(PathStatus, &s)
	if s.Retries != 4 || s.DeadLetters != 1 {
		t.Fatalf("status %+v", s)
	}
	// Dead letters survive a restart and are still listed.
	f.stopRun()
	f.sp.Close()
	sp2, _ := New(f.sp.opts)
	defer sp2.Close()
	if st, ok := sp2.MessageState(bad); !ok || st.State != "dead" {
		t.Fatalf("after restart: %+v", st)
	}
	if sp2.Status().DeadLetters != 1 {
		t.Fatal("dead letter count lost")
	}
}

func TestRestartKeepsMessages(t *testing.T) {
	f := newFixture(t, false, nil)
	var ids []string
	for i := range 5 {
		_, id, _ := f.submit(f.dest("/r"), []byte{byte('0' + i)}, map[string]string{"Idempotency-Key": fmt.Sprintf("client-%d", i)})
		ids = append(ids, id)
	}
	f.sp.Close()
	runSpool(t, f.sp.opts)
	waitFor(t, "delivery after restart", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 5 })
	for i, r := range f.rcv.receipts() {
		if r.Key != fmt.Sprintf("client-%d", i) || r.Body != string(rune('0'+i)) {
			t.Fatalf("receipt %d %+v", i, r)
		}
	}
	waitFor(t, "segments deleted", 5*time.Second, func() bool {
		segs, _ := filepath.Glob(filepath.Join(f.sp.opts.Dir, "seg-*.log"))
		return len(segs) <= 1 // at most the active segment
	})
}

func TestUnusableDirectoryRecovers(t *testing.T) {
	base := t.TempDir()
	blocker := filepath.Join(base, "spool")
	os.WriteFile(blocker, []byte("not a directory"), 0o600)
	ev := &eventLog{}
	opts := testOptions(blocker)
	opts.Events = ev
	sp := runSpool(t, opts) // New must not fail on a bad directory
	srv := httptest.NewServer(sp)
	defer srv.Close()
	post := func() *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+PathMessages, strings.NewReader("x"))
		req.Header.Set(HeaderDestination, "https://127.0.0.1:1/x")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post(); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("unusable dir: %d", resp.StatusCode)
	}
	if ev.count(events.OtherError) == 0 {
		t.Fatal("no event for the unusable directory")
	}
	os.Remove(blocker)
	waitFor(t, "spool to recover", 10*time.Second, func() bool { return post().StatusCode == http.StatusAccepted })
}

func TestBackoff(t *testing.T) {
	minD, maxD := 100*time.Millisecond, 3*time.Second
	for _, tc := range []struct {
		attempt int
		j       float64
		want    time.Duration
	}{
		{1, 0, 50 * time.Millisecond},
		{1, 0.999999, 100 * time.Millisecond},
		{2, 0, 100 * time.Millisecond},
		{3, 0.5, 300 * time.Millisecond},
		{10, 0, 1500 * time.Millisecond},
		{1000, 0.999999, 3 * time.Second},
	} {
		got := backoff(tc.attempt, minD, maxD, tc.j)
		if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("backoff(%d, %v) = %v, want %v", tc.attempt, tc.j, got, tc.want)
		}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if d := parseRetryAfter("7", now); d != 7*time.Second {
		t.Errorf("Retry-After 7 = %v", d)
	}
	if d := parseRetryAfter(now.Add(90*time.Second).Format(http.TimeFormat), now); d != 90*time.Second {
		t.Errorf("Retry-After date = %v", d)
	}
	if d := parseRetryAfter("soon", now); d != 0 {
		t.Errorf("Retry-After junk = %v", d)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := fixed
	f := newFixture(t, true, func(o *Options) {
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	f.rcv.setRespond(func(r *http.Request, n int) (int, http.Header) {
		if n == 1 {
			return 503, http.Header{"Retry-After": {"1"}}
		}
		return 200, nil
	})
	_, id, _ := f.submit(f.dest("/ra"), []byte("x"), nil)
	var st MessageState
	waitFor(t, "first attempt", 10*time.Second, func() bool {
		f.getJSON(PathMessages+"/"+id, &st)
		return st.Attempts == 1 || st.State == "delivered"
	})
	// Backoff alone would be at most MaxBackoff (50ms); Retry-After: 1 wins.
	if st.State != "queued" || !st.NextAttempt.Equal(fixed.Add(time.Second)) {
		t.Fatalf("after a 503 with Retry-After: 1: %+v", st)
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	waitFor(t, "delivery", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 1 })
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, false, nil)
	f.submit(f.dest("/m"), []byte("x"), nil)
	var b bytes.Buffer
	if err := f.sp.WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"storegate_spool_depth 1\n", "storegate_spool_submitted_total 1\n",
		"storegate_spool_commit_batches_total ", "storegate_spool_fsyncs_total ", `storegate_spool_dropped_total{reason="max_age"} 0`,
		"storegate_spool_oldest_age_seconds ", "storegate_spool_dead_letters 0\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, ln := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if strings.HasPrefix(ln, "#") {
			continue
		}
		f := strings.Fields(ln)
		if len(f) != 2 {
			t.Fatalf("bad metric line %q", ln)
		}
		if _, err := strconv.ParseFloat(f[1], 64); err != nil {
			t.Fatalf("bad value in %q", ln)
		}
	}
}

func FuzzParseDestination(f *testing.F) {
	for _, s := range []string{"https://example.com/x?y=1", "https://[::1]:8443/", "http://a", "https://u:p@h/", "https://h:0/", "https://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		origin, host, port, err := parseDestination(s)
		if err != nil {
			if !errors.Is(err, ErrBadDestination) {
				t.Fatalf("error %v is not ErrBadDestination", err)
			}
			return
		}
		if host == "" || port < 1 || port > 65535 || !strings.HasPrefix(origin, "https://") {
			t.Fatalf("accepted %q as %q %q %d", s, origin, host, port)
		}
	})
}

// TestDeliveryPath: delivery dials through the injected Dial (the gateway's
// own upstream path) and verifies the receiver's certificate against Roots.
func TestDeliveryPath(t *testing.T) {
	var mu sync.Mutex
	var dialed []string
	f := newFixture(t, true, func(o *Options) {
		d := &net.Dialer{}
		o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, addr)
			mu.Unlock()
			return d.DialContext(ctx, network, addr)
		}
	})
	f.submit(f.dest("/p"), []byte("x"), nil)
	waitFor(t, "delivery", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 1 })
	mu.Lock()
	if len(dialed) == 0 || dialed[0] != f.rcv.addr {
		t.Fatalf("dialed %v, want %s through the injected Dial", dialed, f.rcv.addr)
	}
	mu.Unlock()

	// A receiver whose certificate the pool does not trust gets nothing, the
	// message stays queued, and the link is not blamed.
	g := newFixture(t, true, func(o *Options) { o.Roots = rootsOf(x509.NewCertPool()) })
	_, id, _ := g.submit(g.dest("/untrusted"), []byte("x"), nil)
	var st MessageState
	waitFor(t, "failed attempts", 10*time.Second, func() bool {
		g.getJSON(PathMessages+"/"+id, &st)
		return st.Attempts >= 3
	})
	if st.State != "queued" || !strings.Contains(st.LastError, "certificate") || len(g.rcv.receipts()) != 0 {
		t.Fatalf("untrusted receiver: %+v", st)
	}
	if g.link.State() == link.Down {
		t.Fatal("a certificate failure marked the link down")
	}
}

func TestSetLimits(t *testing.T) {
	f := newFixture(t, false, nil)
	if code, _, _ := f.submit(f.dest("/l"), make([]byte, 2000), nil); code != http.StatusAccepted {
		t.Fatalf("before: %d", code)
	}
	if err := f.sp.SetLimits(Limits{MaxMessageBytes: 1000}); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := f.submit(f.dest("/l"), make([]byte, 2000), nil); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("after a lower limit: %d", code)
	}
	if err := f.sp.SetLimits(Limits{Overflow: "sometimes"}); err == nil {
		t.Fatal("bad overflow accepted")
	}
	if _, err := New(Options{Dir: t.TempDir(), Limits: Limits{Overflow: "x"}}); err == nil {
		t.Fatal("New accepted a bad overflow")
	}
	if _, err := New(Options{}); err == nil {
		t.Fatal("New accepted no directory")
	}
}

// TestCorruptRecordQuarantined: a damaged record in the middle of a segment
// is set aside with an event and a counter, and the records after it are
// still delivered.
func TestCorruptRecordQuarantined(t *testing.T) {
	f := newFixture(t, false, nil)
	for _, b := range []string{"first", "second-gets-damaged", "third"} {
		if code, _, _ := f.submit(f.dest("/q"), []byte(b), nil); code != http.StatusAccepted {
			t.Fatal(code)
		}
	}
	f.sp.Close()
	segs, _ := filepath.Glob(filepath.Join(f.sp.opts.Dir, "seg-*.log"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	raw, _ := os.ReadFile(segs[0])
	i := bytes.Index(raw, []byte("second-gets-damaged"))
	raw[i+3] ^= 0x20
	os.WriteFile(segs[0], raw, 0o600)

	ev := &eventLog{}
	opts := f.sp.opts
	opts.Events = ev
	sp := runSpool(t, opts)
	waitFor(t, "delivery", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 2 })
	got := f.rcv.receipts()
	if got[0].Body != "first" || got[1].Body != "third" {
		t.Fatalf("delivered %q %q", got[0].Body, got[1].Body)
	}
	if sp.Status().Quarantined != 1 || ev.count(events.OtherError) != 1 {
		t.Fatalf("quarantined %d, error events %d", sp.Status().Quarantined, ev.count(events.OtherError))
	}
	q, _ := filepath.Glob(filepath.Join(opts.Dir, "quarantine", "*.bad"))
	if len(q) != 1 {
		t.Fatalf("quarantine files %v", q)
	}
}

// TestDeadLetterBound: a receiver that refuses everything turns every
// message into a dead letter. The dead-letter area stays within its bound by
// deleting the oldest (an orphan payload from a crash first), keeps the
// newest listed and readable, and counts and reports what it deleted.
func TestDeadLetterBound(t *testing.T) {
	const bound = 16 << 10
	f := newFixture(t, false, func(o *Options) { o.Limits.DeadLetterBytes = bound })
	f.rcv.setRespond(func(*http.Request, int) (int, http.Header) { return 400, nil })
	dead := filepath.Join(f.sp.opts.Dir, "dead")
	if err := os.MkdirAll(dead, 0o700); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(dead, "orphan.msg") // a payload whose listing entry a crash lost
	if err := os.WriteFile(orphan, make([]byte, 2048), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 40
	ids := f.deadLetters(n)

	var total int64
	listed := 0
	es, _ := os.ReadDir(dead)
	for _, e := range es {
		fi, _ := e.Info()
		total += fi.Size()
		if strings.HasSuffix(e.Name(), ".json") {
			listed++
		}
	}
	if total > bound {
		t.Fatalf("dead/ holds %d bytes, bound %d", total, bound)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("orphan payload still there: %v", err)
	}
	st := f.sp.Status()
	if st.DeadLetters != listed || st.DeadLetterBytes != total {
		t.Fatalf("status says %d letters, %d bytes; dead/ has %d, %d", st.DeadLetters, st.DeadLetterBytes, listed, total)
	}
	if st.DeadDeleted == 0 || int(st.DeadDeleted)+listed != n {
		t.Fatalf("deleted %d + kept %d != %d", st.DeadDeleted, listed, n)
	}
	// The newest are the ones kept, each with its payload.
	var dl struct {
		DeadLetters []DeadLetter `json:"dead_letters"`
	}
	f.getJSON(PathDead, &dl)
	keep := map[string]bool{}
	for _, id := range ids[n-listed:] {
		keep[id] = true
	}
	for _, d := range dl.DeadLetters {
		if !keep[d.ID] {
			t.Fatalf("kept %s, which is not among the %d newest", d.ID, listed)
		}
		if _, err := os.Stat(filepath.Join(dead, d.ID+".msg")); err != nil {
			t.Fatalf("dead letter %s lost its payload: %v", d.ID, err)
		}
	}
	if len(dl.DeadLetters) != listed {
		t.Fatalf("listed %d, files %d", len(dl.DeadLetters), listed)
	}
	var m bytes.Buffer
	f.sp.WriteMetrics(&m)
	if !strings.Contains(m.String(), fmt.Sprintf("storegate_spool_dead_letters_deleted_total %d\n", st.DeadDeleted)) {
		t.Fatalf("metrics:\n%s", m.String())
	}
	if !f.ev.said(events.OtherError, "oldest dead letters (spool.dead_letter_max_bytes)") {
		t.Fatal("no event for the deleted dead letters")
	}
}

// TestUndecodableRecordCountedAsDeadLetter: recovery turns a record it cannot
// decode into a dead letter; the status counts it from the start.
// deadLetters submits n messages of 1 KiB that the receiver refuses for
// good, runs delivery and waits until all are dead letters; it returns their
// ids in submission order.
func (f *fixture) deadLetters(n int) []string {
	f.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		code, id, _ := f.submit(f.dest(fmt.Sprintf("/refused/%d", i)), bytes.Repeat([]byte{'x'}, 1024), nil)
		if code != 202 {
			f.t.Fatalf("submission %d: %d", i, code)
		}
		ids[i] = id
	}
	f.startRun()
	waitFor(f.t, "all dead-lettered", 20*time.Second, func() bool { return f.sp.c.deadLettered.Load() == uint64(n) })
	return ids
}

// undecodableSpool writes a spool directory holding one record that is not
// a message.
func undecodableSpool(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	lg, _, err := queue.Open(dir, queue.Options{}, func(queue.Pos, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lg.Append(context.Background(), []byte("not a message")); err != nil {
		t.Fatal(err)
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestUndecodableRecordCountedAsDeadLetter(t *testing.T) {
	dir := undecodableSpool(t)
	f := newFixture(t, false, func(o *Options) { o.Dir = dir })
	es, err := os.ReadDir(filepath.Join(dir, "dead"))
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range es {
		fi, _ := e.Info()
		total += fi.Size()
	}
	st := f.sp.Status()
	if total == 0 || st.DeadLetters != 1 || st.DeadLetterBytes != total {
		t.Fatalf("status says %d dead letters, %d bytes; dead/ has %d files, %d bytes", st.DeadLetters, st.DeadLetterBytes, len(es), total)
	}
}

// TestUndecodableRecordKeptWhenDeadLetterFails: recovery sets a record it
// cannot decode aside as a dead letter; when even that fails (dead/ cannot
// be made), the record stays in its segment, and the next open, with the
// disk fixed, keeps it.
func TestUndecodableRecordKeptWhenDeadLetterFails(t *testing.T) {
	dir := undecodableSpool(t)
	blocker := filepath.Join(dir, "dead")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil { // a file where dead/ should be
		t.Fatal(err)
	}
	ev := &eventLog{}
	opts := testOptions(dir)
	opts.Events = ev
	sp, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.said(events.OtherError, "nor kept as a dead letter; left in place") {
		t.Fatal("no event for the record that could not be set aside")
	}
	sp.Close()
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	sp, err = New(testOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if st := sp.Status(); st.DeadLetters != 1 {
		t.Fatalf("%d dead letters after the disk was fixed, want the record kept as 1", st.DeadLetters)
	}
}

// A delivery in flight when the roots change finishes on the old client; its
// connection must then close, not wait out the old client's idle timeout.
func TestOldClientLetsGoAfterRootSwap(t *testing.T) {
	f := newFixture(t, true, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	f.rcv.setRespond(func(_ *http.Request, n int) (int, http.Header) {
		if n == 1 {
			close(entered)
			<-release
		}
		return http.StatusOK, nil
	})
	if code, _, _ := f.submit(f.dest("/swap"), []byte("x"), nil); code != http.StatusAccepted {
		t.Fatalf("submit: %d", code)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the receiver never got the delivery")
	}
	f.sp.SetRoots(f.sp.opts.Roots) // the same roots: only the client changes
	close(release)
	waitFor(t, "the delivery", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 1 })
	waitFor(t, "the old client's connection to close", 10*time.Second, func() bool { return f.rcv.open.Load() == 0 })
}

// The spool asks for its roots when a delivery first needs them, not at
// start (loading the system roots costs a small box 1.5 MB), and again after
// SetRoots.
func TestRootsLoadedOnFirstDelivery(t *testing.T) {
	var calls atomic.Int32
	f := newFixture(t, true, func(o *Options) {
		fixed := o.Roots
		o.Roots = func() (*x509.CertPool, error) { calls.Add(1); return fixed() }
	})
	var st Status
	if code := f.getJSON(PathStatus, &st); code != http.StatusOK || calls.Load() != 0 {
		t.Fatalf("status %d; roots asked for %d times before any delivery, want 0", code, calls.Load())
	}
	for i, path := range []string{"/first", "/second"} {
		if code, _, _ := f.submit(f.dest(path), []byte("x"), nil); code != http.StatusAccepted {
			t.Fatalf("submit: %d", code)
		}
		waitFor(t, "delivery", 10*time.Second, func() bool { return len(f.rcv.receipts()) == i+1 })
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("roots asked for %d times for two deliveries, want 1", n)
	}
	f.sp.SetRoots(f.sp.opts.Roots)
	if code, _, _ := f.submit(f.dest("/third"), []byte("x"), nil); code != http.StatusAccepted {
		t.Fatalf("submit: %d", code)
	}
	waitFor(t, "delivery", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 3 })
	if n := calls.Load(); n != 2 {
		t.Fatalf("roots asked for %d times after SetRoots, want 2", n)
	}
}

// A delivery on a new connection to a receiver resumes the TLS session of
// the last one; after SetRoots (a changed tls.ca_file) it does not. The
// receiver closes every connection after its answer, so each delivery dials
// anew, and the next is submitted once the last connection is gone.
func TestDeliveryResumesTLSSession(t *testing.T) {
	f := newFixture(t, true, nil)
	f.rcv.setRespond(func(*http.Request, int) (int, http.Header) {
		return http.StatusOK, http.Header{"Connection": {"close"}}
	})
	deliver := func(path string) receipt {
		t.Helper()
		n := len(f.rcv.receipts())
		if code, _, _ := f.submit(f.dest(path), []byte("x"), nil); code != http.StatusAccepted {
			t.Fatalf("submit: %d", code)
		}
		waitFor(t, "delivery of "+path, 30*time.Second, func() bool { return len(f.rcv.receipts()) == n+1 })
		waitFor(t, "the receiver to close the connection", 30*time.Second, func() bool { return f.rcv.open.Load() == 0 })
		return f.rcv.receipts()[n]
	}
	if r := deliver("/first"); r.Resumed {
		t.Fatal("the first delivery resumed a session")
	}
	if r := deliver("/second"); !r.Resumed {
		t.Fatal("a delivery on a new connection did not resume the session")
	}
	f.sp.SetRoots(f.sp.opts.Roots)
	if r := deliver("/third"); r.Resumed {
		t.Fatal("a session from before SetRoots was resumed")
	}
}

// Roots that cannot be had (tls.ca_file gone since the policy was checked)
// hold deliveries back with the reason; they go out once roots can be had.
func TestRootsErrorRetries(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	f := newFixture(t, true, func(o *Options) {
		fixed := o.Roots
		o.Roots = func() (*x509.CertPool, error) {
			if fail.Load() {
				return nil, errors.New("tls.ca_file: gone")
			}
			return fixed()
		}
	})
	code, id, _ := f.submit(f.dest("/later"), []byte("x"), nil)
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d", code)
	}
	waitFor(t, "the reason on the message", 10*time.Second, func() bool {
		var st MessageState
		f.getJSON(PathMessages+"/"+id, &st)
		return st.State == "queued" && strings.Contains(st.LastError, "tls.ca_file: gone")
	})
	if !f.ev.said(events.NetworkError, "spool delivery failing") {
		t.Error("no NetworkError event for the held delivery")
	}
	if n := len(f.rcv.receipts()); n != 0 {
		t.Fatalf("%d deliveries without roots", n)
	}
	fail.Store(false)
	waitFor(t, "delivery", 10*time.Second, func() bool { return len(f.rcv.receipts()) == 1 })
}
