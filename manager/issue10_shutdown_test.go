package manager_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue10WatchTaskEndsAtShutdown: a WatchTask open on a task that is
// not final (an async ping no delegate can take) ends Unavailable when
// the manager closes, and Close returns without waiting for
// shutdown_timeout (30 s here). The bounds below are far under it: a
// liveness check, not a speed measurement.
func TestIssue10WatchTaskEndsAtShutdown(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 30 * time.Second
	const within = 10 * time.Second
	srv := mustManager(t, func(c *manager.Config) {
		c.ShutdownTimeout = config.Duration(shutdownTimeout)
		c.Dispatch.QueueTimeout = config.Duration(time.Minute)
		c.Dispatch.TaskDeadline = config.Duration(time.Minute)
	})
	c, ctx := operator(t, srv.Addr())
	info, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true, Selectors: []string{"nobody"}})
	if err != nil {
		t.Fatalf("Ping(async) error: %v", err)
	}
	watch, err := c.WatchTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
	if err != nil {
		t.Fatalf("WatchTask(%s): %v", info.GetId(), err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("WatchTask(%s) first Recv: %v", info.GetId(), err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()

	closed := make(chan error, 1)
	go func() { closed <- srv.Close(context.Background()) }()
	select {
	case err := <-ended:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("WatchTask at shutdown ended with %v, want Unavailable", err)
		}
	case <-time.After(within):
		t.Fatalf("WatchTask still open %s after Close began (shutdown_timeout %s)", within, shutdownTimeout)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(within):
		t.Fatalf("Close has not returned %s after it began (shutdown_timeout %s)", within, shutdownTimeout)
	}
}
