package gateway

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The pipe cache keeps empty pipes while chunks keep taking them and closes
// them all once none has been taken for a rest, so a gateway that has gone
// quiet holds no pipe descriptors.
func TestPipeCacheLetsGoWhenQuiet(t *testing.T) {
	var held []*pipe
	for range 3 {
		p, err := getPipe()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
	}
	for _, p := range held {
		putPipe(p)
	}
	if n := cachedPipes(); n < 3 {
		t.Fatalf("cache holds %d pipes right after 3 were returned, want >= 3", n)
	}
	// A pipe taken from the cache is a working pipe.
	p, err := getPipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(p.w, []byte("x")); err != nil {
		t.Fatalf("cached pipe: %v", err)
	}
	var b [1]byte
	if n, err := unix.Read(p.r, b[:]); n != 1 || err != nil {
		t.Fatalf("cached pipe read: %d, %v", n, err)
	}
	putPipe(p)

	deadline := time.Now().Add(10*pipeRest + 10*time.Second)
	for cachedPipes() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("cache still holds %d pipes long after the last use", cachedPipes())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And it works again afterwards.
	p, err = getPipe()
	if err != nil {
		t.Fatal(err)
	}
	putPipe(p)
	if cachedPipes() < 1 {
		t.Fatalf("cache holds %d pipes after one was returned, want 1", cachedPipes())
	}
}
