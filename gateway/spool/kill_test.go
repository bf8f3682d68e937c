package spool

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The kill test's helper: the test binary re-executed with these variables
// runs a spool and its handler on loopback until it is killed.
const (
	envHelperDir = "STOREGATE_SPOOL_TEST_HELPER_DIR"
	envHelperCA  = "STOREGATE_SPOOL_TEST_HELPER_CA"
)

func TestKillHelper(t *testing.T) {
	dir := os.Getenv(envHelperDir)
	if dir == "" {
		t.Skip("helper process for TestKillDurability")
	}
	caPEM, err := os.ReadFile(os.Getenv(envHelperCA))
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions(dir)
	opts.Roots = rootsOf(poolFromPEM(t, caPEM))
	opts.SegmentBytes = 32 << 10 // many segments: rotation and deletion get killed too
	sp, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go (&http.Server{Handler: sp, ReadHeaderTimeout: 5 * time.Second}).Serve(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // bounded even if nobody kills us
	defer cancel()
	go sp.Run(ctx)
	fmt.Printf("ADDR %s\n", ln.Addr())
	<-ctx.Done()
}

type helper struct {
	cmd  *exec.Cmd
	addr string
}

func startHelper(t *testing.T, dir, caFile string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$", "-test.v=false")
	cmd.Env = append(os.Environ(), envHelperDir+"="+dir, envHelperCA+"="+caFile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				lines <- a
			}
		}
		close(lines)
	}()
	select {
	case a, ok := <-lines:
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("helper exited before listening")
		}
		return &helper{cmd: cmd, addr: a}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("helper did not start")
	}
	return nil
}

func (h *helper) kill() {
	h.cmd.Process.Kill() // SIGKILL
	h.cmd.Wait()
}

// TestKillDurability submits messages from concurrent clients while the
// spool's process is SIGKILLed at random moments, many times; afterwards every
// message that got a 202 must reach a real HTTPS receiver, in submission order
// per client, and any duplicate must carry a key already seen for it.
func TestKillDurability(t *testing.T) {
	kills, budget := 200, 90*time.Second
	if testing.Short() {
		kills, budget = 25, 20*time.Second
	}
	cert, certPEM := testCert(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, certPEM, 0o600)
	rcvs := []*receiver{newReceiver(t, cert), newReceiver(t, cert)}
	dir := t.TempDir()

	const clients = 8
	type ack struct {
		seq int
		id  string // the key the receiver must see
	}
	var (
		addr    atomic.Pointer[string]
		stop    atomic.Bool
		wg      sync.WaitGroup
		ackMu   sync.Mutex
		acked   = make([][]ack, clients)
		refused atomic.Int64
	)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: clients}}
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			withKey := c%2 == 0 // half the clients set their own Idempotency-Key
			rcv := rcvs[c%len(rcvs)]
			for seq := 0; !stop.Load() && seq < 100000; seq++ {
				body := fmt.Sprintf("c%d-s%06d-%s", c, seq, strings.Repeat("p", rand.IntN(2000)))
				for attempt := 0; !stop.Load() && attempt < 100000; attempt++ {
					a := addr.Load()
					if a == nil {
						time.Sleep(2 * time.Millisecond)
						continue
					}
					req, _ := http.NewRequest(http.MethodPost, "http://"+*a+PathMessages, strings.NewReader(body))
					req.Header.Set(HeaderDestination, fmt.Sprintf("https://%s/c%d", rcv.addr, c))
					key := ""
					if withKey {
						key = fmt.Sprintf("key-c%d-s%d", c, seq)
						req.Header.Set("Idempotency-Key", key)
					}
					resp, err := client.Do(req)
					if err != nil {
						time.Sleep(time.Millisecond) // the helper is being restarted
						continue
					}
					var out struct{ ID string }
					json.NewDecoder(resp.Body).Decode(&out)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						refused.Add(1)
						time.Sleep(time.Millisecond)
						continue
					}
					if key == "" {
						key = out.ID
					}
					ackMu.Lock()
					acked[c] = append(acked[c], ack{seq, key})
					ackMu.Unlock()
					break
				}
			}
		}()
	}

	start := time.Now()
	n := 0
	for ; n < kills && time.Since(start) < budget; n++ {
		h := startHelper(t, dir, caFile)
		addr.Store(&h.addr)
		// Let it work for a random moment: recovery, submissions, deliveries,
		// segment rotation and deletion all get cut at arbitrary points.
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		h.kill()
		// Receivers flap too, so the backlog builds up across kills.
		if n%20 == 10 {
			rcvs[0].mode.Store(modeReset)
		} else if n%20 == 15 {
			rcvs[0].mode.Store(modeNormal)
		}
	}
	rcvs[0].mode.Store(modeNormal)
	final := startHelper(t, dir, caFile)
	addr.Store(&final.addr)
	time.Sleep(100 * time.Millisecond) // some submissions land on the final process too
	stop.Store(true)
	wg.Wait()
	defer final.kill()

	total := 0
	for _, a := range acked {
		total += len(a)
	}
	t.Logf("%d kills in %v; %d messages acknowledged; %d refusals", n, time.Since(start).Round(time.Millisecond), total, refused.Load())
	if total == 0 {
		t.Fatal("no message was acknowledged")
	}
	received := func() map[string]bool {
		seen := map[string]bool{}
		for _, r := range rcvs {
			for _, x := range r.receipts() {
				seen[x.Key] = true
			}
		}
		return seen
	}
	waitFor(t, "every acknowledged message to be delivered", 120*time.Second, func() bool {
		seen := received()
		for _, as := range acked {
			for _, a := range as {
				if !seen[a.id] {
					return false
				}
			}
		}
		return true
	})

	dups := 0
	for c := range clients {
		var got []receipt
		for _, x := range rcvs[c%len(rcvs)].receipts() {
			if x.Path == fmt.Sprintf("/c%d", c) {
				got = append(got, x)
			}
		}
		keyBody := map[string]string{}
		last := -1
		for _, x := range got {
			seq, err := strconv.Atoi(x.Body[strings.Index(x.Body, "-s")+2 : strings.Index(x.Body, "-s")+8])
			if err != nil {
				t.Fatalf("bad body %q", x.Body[:20])
			}
			if b, ok := keyBody[x.Key]; ok {
				dups++
				if b != x.Body {
					t.Fatalf("client %d: key %s delivered with two different bodies", c, x.Key)
				}
				continue
			}
			keyBody[x.Key] = x.Body
			// First delivery of each message: in submission order. A message
			// that was stored but not acknowledged before a kill may precede
			// its resubmission, so equal sequence numbers may repeat.
			if seq < last {
				t.Fatalf("client %d: seq %d delivered after seq %d", c, seq, last)
			}
			last = seq
		}
		for _, a := range acked[c] {
			b, ok := keyBody[a.id]
			if !ok || !bytes.HasPrefix([]byte(b), []byte(fmt.Sprintf("c%d-s%06d-", c, a.seq))) {
				t.Fatalf("client %d: acknowledged seq %d (key %s) not delivered intact", c, a.seq, a.id)
			}
		}
	}
	t.Logf("all %d acknowledged messages delivered in order; %d duplicate deliveries, each with a key already seen", total, dups)
}
