package sysservice

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestProgramStopDrains(t *testing.T) {
	drained := make(chan struct{})
	p := &Program{Run: func(ctx context.Context) int {
		<-ctx.Done()
		close(drained) // the gateway's shutdown runs here
		return 0
	}, Exit: func(int) { t.Error("Exit called for a requested stop") }}
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-drained:
	default:
		t.Fatal("Stop returned before the gateway finished")
	}
}

func TestProgramExitOnFailure(t *testing.T) {
	exited := make(chan int, 1)
	p := &Program{Run: func(context.Context) int { return 3 }, Exit: func(code int) { exited <- code }}
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exited:
		if code != 3 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a gateway that failed on its own did not exit the service process")
	}
	if err := p.Stop(nil); err == nil || !strings.Contains(err.Error(), "status 3") {
		t.Fatalf("Stop after failure: %v", err)
	}
}

func TestConfig(t *testing.T) {
	c, err := Config(Options{PolicyPath: "policy.yaml", StopTimeout: 95 * time.Second, RestartDelay: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != DefaultName || len(c.Arguments) != 3 || c.Arguments[0] != "run" || c.Arguments[1] != "--policy" || !strings.HasSuffix(c.Arguments[2], "/policy.yaml") || !strings.HasPrefix(c.Arguments[2], "/") {
		t.Fatalf("arguments %q", c.Arguments)
	}
	script, _ := c.Option["SystemdScript"].(string)
	if !strings.Contains(script, "RestartSec=5\nTimeoutStopSec=95\n") {
		t.Fatalf("unit template:\n%s", script)
	}
	if c.Option["OnFailure"] != "restart" || c.Option["OnFailureDelayDuration"] != "5s" {
		t.Fatalf("windows recovery options %v", c.Option)
	}
	if _, err := Control(Options{}, "explode"); err == nil {
		t.Fatal("unknown action accepted")
	}
}
