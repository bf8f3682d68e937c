package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// procWriteBytes reads write_bytes from /proc/self/io: bytes this process
// caused to be sent to the storage layer. Journal writes done by the kernel
// on the filesystem's behalf are not included.
func procWriteBytes(b *testing.B) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Skip("no write_bytes in /proc/self/io")
	return 0
}

// BenchmarkSubmit measures durable submissions per second through the real
// HTTP handler with many concurrent clients (parallelism 16 per core), the
// records per fdatasync that group commit achieves, and the bytes written to
// disk per payload byte. Run it on the filesystem you care about
// (TMPDIR=/path/on/sd-card); on tmpfs write_bytes is zero.
func BenchmarkSubmit(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			sp, err := New(Options{Dir: b.TempDir(), SegmentBytes: 64 << 20,
				Limits: Limits{MaxBytes: 1 << 40, MaxMessageBytes: 1 << 20}})
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			srv := httptest.NewServer(sp)
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			body := bytes.Repeat([]byte("x"), size)
			b.SetParallelism(16)
			b.SetBytes(int64(size))
			w0, st0 := procWriteBytes(b), sp.Status().Storage
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPost, srv.URL+PathMessages, bytes.NewReader(body))
					req.Header.Set(HeaderDestination, "https://receiver.example/ingest")
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.StopTimer()
			w1, st1 := procWriteBytes(b), sp.Status().Storage
			recs, batches := st1.Records-st0.Records, st1.Batches-st0.Batches
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "subs/s")
			if batches > 0 {
				b.ReportMetric(float64(recs)/float64(batches), "records/fsync")
			}
			b.ReportMetric(float64(w1-w0)/float64(int64(b.N)*int64(size)), "disk-B/payload-B")
		})
	}
}

// BenchmarkQueuedMemory reports the heap each waiting message costs (the
// in-memory index; bodies stay on disk), which bounds how full a spool a
// 128 MiB box can hold.
func BenchmarkQueuedMemory(b *testing.B) {
	sp, err := New(Options{Dir: b.TempDir(), Limits: Limits{MaxBytes: 1 << 40}})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	const n = 20000
	body := bytes.Repeat([]byte("x"), 200)
	hdr := http.Header{"Content-Type": {"application/json"}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		dest := fmt.Sprintf("https://receiver%d.example/ingest?batch=%d", i%4, i)
		if _, err := sp.Submit(context.Background(), Submission{Destination: dest, Header: hdr, Body: body}); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/msg")
	for range b.N {
	}
}
