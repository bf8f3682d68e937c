package main

import (
	"context"
	"time"

	"github.com/storegate/storegate/gateway"
	"github.com/storegate/storegate/gateway/events"
	"github.com/storegate/storegate/gateway/policy"
)

// startWatcher reloads the policy file at path into srv whenever it changes,
// until ctx ends. It returns once the file is watched; the watching runs in
// the background. A refused file leaves the policy in force (event 401, and
// /readyz and the metrics say the file on disk is not the one in force).
func startWatcher(ctx context.Context, path string, srv *gateway.Server, log events.Emitter) {
	_, _ = watchPolicy(ctx, path, srv, log, 0)
}

// watchPolicy is startWatcher with the watcher returned (tests wait on its
// Done) and the periodic re-read interval chosen (0: the default).
func watchPolicy(ctx context.Context, path string, srv *gateway.Server, log events.Emitter, interval time.Duration) (*policy.Watcher, error) {
	r := &policy.Reloader{
		Path:      path,
		Apply:     srv.Apply,
		Current:   srv.Policy,
		Failed:    srv.ReloadFailed,
		Succeeded: srv.ReloadSucceeded,
		Emit:      log,
	}
	w := &policy.Watcher{
		Path:     path,
		OnChange: func(data []byte, sum string) { _ = r.Reload(data, sum) },
		OnError:  r.ReadFailed,
		Related:  r.Related,
		Interval: interval,
	}
	if snap := srv.Policy(); snap != nil && snap.Source == path {
		w.Initial = snap.Hash
	}
	if err := w.Start(ctx); err != nil {
		log.Emit(events.OtherError, "cannot watch the policy file; changes need a restart: "+err.Error(), events.Str(events.KeyFile, path))
		return nil, err
	}
	return w, nil
}
