package initd

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrCrashLoop is returned by Supervise when the program keeps dying.
var ErrCrashLoop = errors.New("the gateway keeps exiting")

// Supervisor restarts a program when it exits, with a doubling delay that
// resets after a healthy run, and gives up on a crash loop.
type Supervisor struct {
	// Run starts the program and waits for it to end.
	Run func(ctx context.Context) error
	// Sleep waits d or until ctx ends. Nil means a timer.
	Sleep func(ctx context.Context, d time.Duration)
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// MaxCrashes within Window is a crash loop. Zero means 5 in 2 minutes.
	MaxCrashes int
	Window     time.Duration
	// Logf reports each exit.
	Logf func(format string, args ...any)
}

// Supervise runs the program until ctx ends (nil) or a crash loop (ErrCrashLoop).
func (s *Supervisor) Supervise(ctx context.Context) error {
	now, sleep := s.Now, s.Sleep
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) { sleepCtx(ctx, d) }
	}
	maxCrashes, window := s.MaxCrashes, s.Window
	if maxCrashes <= 0 {
		maxCrashes = 5
	}
	if window <= 0 {
		window = 2 * time.Minute
	}
	var crashes []time.Time
	delay := time.Second
	for ctx.Err() == nil {
		start := now()
		err := s.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		end := now()
		if end.Sub(start) > window {
			delay = time.Second
		}
		kept := crashes[:0]
		for _, c := range crashes {
			if end.Sub(c) < window {
				kept = append(kept, c)
			}
		}
		crashes = append(kept, end)
		if s.Logf != nil {
			s.Logf("gateway exited after %s: %v; restart %d of %d in %s", end.Sub(start).Round(time.Millisecond), err, len(crashes), maxCrashes, window)
		}
		if len(crashes) >= maxCrashes {
			return fmt.Errorf("%w: %d exits in %s, last: %v", ErrCrashLoop, len(crashes), window, err)
		}
		sleep(ctx, delay)
		delay = min(delay*2, 30*time.Second)
	}
	return nil
}
