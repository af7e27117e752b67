package manager_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
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

// keepOpen is a store whose Close leaves it open: a manager that shares
// it with the next one.
type keepOpen struct{ store.Store }

func (keepOpen) Close() error { return nil }

// TestIssue10FollowerEndsWithClose: a request repeated on a manager that
// does not hold its task (another manager on the same store stored it)
// follows the task by reading the store. That reader belongs to the
// dispatcher: when the manager closes, the waiting call ends Unavailable
// naming the task (not after shutdown_timeout), and after Close nothing
// reads the store or runs. Not parallel, for goleak.
func TestIssue10FollowerEndsWithClose(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	long := func(c *manager.Config) {
		c.ShutdownTimeout = config.Duration(30 * time.Second)
		c.Dispatch.QueueTimeout = config.Duration(time.Minute)
		c.Dispatch.TaskDeadline = config.Duration(time.Minute)
		c.HTTPListen = "127.0.0.1:0"
	}
	// The first manager stores the task (no delegate takes it) and stops.
	var id string
	t.Run("first", func(t *testing.T) {
		a := mustManagerWith(t, long, testLogger(t), keepOpen{db})
		c, ctx := operator(t, a.Addr())
		issue10Connector(t, c, ctx)
		req := issue10Create("followed", "follow-1")
		req.Async = true
		info, err := c.Secret(ctx, req)
		if err != nil {
			t.Fatalf("Secret(create, async) on the first manager: %v", err)
		}
		id = info.GetId()
	})
	before := goleak.IgnoreCurrent()
	t.Run("second", func(t *testing.T) {
		b := mustManagerWith(t, long, testLogger(t), db)
		c, ctx := operator(t, b.Addr())
		ended := make(chan error, 1)
		go func() {
			_, err := c.Secret(ctx, issue10Create("followed", "follow-1")) // waits
			ended <- err
		}()
		// The repeat found the stored task (counted) and follows it.
		metrics := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		waitFor(t, 5*time.Second, func() bool {
			resp, err := metrics.Get("http://" + b.HTTPAddr() + "/metrics")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return strings.Contains(string(body), `smd_tasks_deduplicated_total{kind="secret.create"} 1`)
		}, "the repeated create to find the stored task")
		if err := b.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		wantReleasedAtShutdown(t, <-ended, id)
	})
	goleak.VerifyNone(t, before)
}
