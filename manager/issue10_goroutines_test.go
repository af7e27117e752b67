package manager_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue10CloseLeavesNoGoroutine: every goroutine the manager starts
// (listeners, the dispatcher's sweeper and store writes, the platform
// runner, the OIDC key rotation, stream handlers) is owned by a component
// that Close cancels and joins. A manager that ran sync and async tasks
// for an agent, closed with its agent and client, leaves nothing running.
// Not parallel: goleak compares with the goroutines at the start, and the
// package's parallel tests only start once the sequential ones are done.
func TestIssue10CloseLeavesNoGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Run("run", func(t *testing.T) {
		srv := mustManager(t, nil)
		startAgent(t, srv.Addr(), "leaker", []string{"leak"}, 4, nil)
		c, ctx := operator(t, srv.Addr())
		waitDelegates(t, c, ctx, 1)
		for _, async := range []bool{false, true} {
			info, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"leak"}, Async: async})
			if err != nil {
				t.Fatalf("Ping(async %v) = %v", async, err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for info.GetState() != delegatev1.TaskState_SUCCEEDED && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				if info, err = c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()}); err != nil {
					t.Fatalf("GetTask = %v", err)
				}
			}
			if info.GetState() != delegatev1.TaskState_SUCCEEDED {
				t.Fatalf("ping (async %v) = %s", async, info.GetState())
			}
		}
		// The subtest's cleanups close the client, stop the agent and
		// close the manager.
	})
	goleak.VerifyNone(t, before)
}

// TestIssue11ReplicaCloseLeavesNoGoroutine is the same for a replica of a
// cluster on PostgreSQL: its membership (heartbeats, the notification
// listener), the peer link, the puller, the lease renewals and the store
// sweep all end with Close.
func TestIssue11ReplicaCloseLeavesNoGoroutine(t *testing.T) {
	dsn, _ := pgtest.Database(t)
	before := goleak.IgnoreCurrent()
	t.Run("run", func(t *testing.T) {
		srv := mustManager(t, func(c *manager.Config) {
			c.Store.Driver, c.Store.DSN = manager.StorePostgres, dsn
			c.Cluster.Name = "leak"
			c.Cluster.PeerToken = strings.Repeat("p", 40)
			c.Cluster.BeatInterval = config.Duration(50 * time.Millisecond)
			c.Cluster.DeadAfter = config.Duration(time.Second)
		})
		if srv.Replica() == "" {
			t.Fatal("the manager is not a replica of a cluster")
		}
		startAgent(t, srv.Addr(), "leaker", []string{"leak"}, 4, nil)
		c, ctx := operator(t, srv.Addr())
		waitDelegates(t, c, ctx, 1)
		for _, async := range []bool{false, true} {
			info, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"leak"}, Async: async})
			if err != nil {
				t.Fatalf("Ping(async %v) = %v", async, err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for info.GetState() != delegatev1.TaskState_SUCCEEDED && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				if info, err = c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()}); err != nil {
					t.Fatalf("GetTask = %v", err)
				}
			}
			if info.GetState() != delegatev1.TaskState_SUCCEEDED {
				t.Fatalf("ping (async %v) = %s", async, info.GetState())
			}
		}
	})
	goleak.VerifyNone(t, before)
}
