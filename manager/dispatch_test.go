package manager_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func ping(t *testing.T, c delegatev1.ManagerServiceClient, ctx context.Context, req *delegatev1.PingRequest) *delegatev1.TaskInfo {
	t.Helper()
	info, err := c.Ping(ctx, req)
	if err != nil {
		t.Fatalf("Ping(%v) error: %v", req.GetSelectors(), err)
	}
	return info
}

func TestSelectorMatching(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	startAgent(t, srv.Addr(), "ab", []string{"a", "b"}, 4, nil)
	startAgent(t, srv.Addr(), "abc", []string{"A", " b ", "c"}, 4, nil)
	startAgent(t, srv.Addr(), "only-a", []string{"a"}, 4, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 3)

	tests := []struct {
		name      string
		selectors []string
		allowed   []string
	}{
		{"both selectors", []string{"a", "b"}, []string{"ab", "abc"}},
		{"case and spaces ignored", []string{" A", "B "}, []string{"ab", "abc"}},
		{"three selectors", []string{"a", "b", "c"}, []string{"abc"}},
		{"name is an implicit tag", []string{"only-a"}, []string{"only-a"}},
		{"name in upper case", []string{"ONLY-A", "a"}, []string{"only-a"}},
		{"no selectors: any delegate", nil, []string{"ab", "abc", "only-a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]int{}
			for range 30 {
				info := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: tc.selectors})
				if got := info.GetOutcome().GetCode(); got != delegatev1.Code_OK {
					t.Fatalf("Ping(%q) code = %v (%s), want OK", tc.selectors, got, info.GetOutcome().GetMessage())
				}
				seen[info.GetOutcome().GetPing().GetDelegateName()]++
			}
			for name := range seen {
				if !contains(tc.allowed, name) {
					t.Errorf("Ping(%q) ran on %q, want only %q (seen %v)", tc.selectors, name, tc.allowed, seen)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestNoEligibleDelegate(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) { c.Dispatch.QueueTimeout = config.Duration(300 * time.Millisecond) })
	startAgent(t, srv.Addr(), "only-a", []string{"a"}, 2, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)

	start := time.Now()
	info := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: []string{"a", "Gpu"}})
	took := time.Since(start)
	o := info.GetOutcome()
	if o.GetCode() != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
		t.Fatalf("Ping([a gpu]) code = %v, want NO_ELIGIBLE_DELEGATE", o.GetCode())
	}
	for _, want := range []string{"[a, gpu]", "only-a [a, only-a"} {
		if !strings.Contains(o.GetMessage(), want) {
			t.Errorf("message %q does not contain %q", o.GetMessage(), want)
		}
	}
	if took < 300*time.Millisecond {
		t.Errorf("failed after %s, before the queue timeout of 300ms", took)
	}
}

func TestConcurrencyIsNeverExceeded(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	rec := startAgent(t, srv.Addr(), "two", []string{"x"}, 2, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)

	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"x"}, Sleep: durationpb.New(30 * time.Millisecond)})
			if err != nil || info.GetOutcome().GetCode() != delegatev1.Code_OK {
				t.Errorf("Ping = %v, %v; want OK", info.GetOutcome(), err)
			}
		}()
	}
	// Sample the manager's view while the pings run.
	stop, sampled := make(chan struct{}), make(chan struct{})
	maxRunning := 0
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r, err := c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{}); err == nil && len(r.GetDelegates()) == 1 {
				maxRunning = max(maxRunning, len(r.GetDelegates()[0].GetRunningTasks()))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	wg.Wait()
	close(stop)
	<-sampled
	if got := rec.maxSeen.Load(); got != 2 {
		t.Errorf("delegate ran at most %d tasks at once, want exactly 2 (concurrency 2, 12 tasks)", got)
	}
	if maxRunning > 2 {
		t.Errorf("manager had %d tasks leased to a delegate of concurrency 2", maxRunning)
	}
}

func TestLeastLoadedFirst(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	startAgent(t, srv.Addr(), "d1", []string{"x"}, 8, nil)
	startAgent(t, srv.Addr(), "d2", []string{"x"}, 8, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 2)
	// Eight concurrent sleeping pings spread over both delegates.
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := c.Ping(ctx, &delegatev1.PingRequest{Sleep: durationpb.New(200 * time.Millisecond)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			seen[info.GetOutcome().GetPing().GetDelegateName()]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if seen["d1"] != 4 || seen["d2"] != 4 {
		t.Errorf("8 concurrent pings ran %v, want 4 on each delegate", seen)
	}
}

// A stream that drops and comes back within the lease keeps the task: it is
// not dispatched again, and the same delegate completes it.
func TestStreamDropWithinLeaseDoesNotRedispatch(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	px := mustProxy(t, srv.Addr())
	started := make(chan string, 1)
	rec := startAgent(t, px.addr(), "flaky", nil, 2, func(ctx context.Context, task *delegatev1.Task) {
		started <- task.GetId()
	})
	startAgent(t, srv.Addr(), "steady", []string{"other"}, 2, nil) // eligible only by name
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 2)

	info := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: []string{"flaky"}, Sleep: durationpb.New(time.Second), Async: true})
	id := <-started
	px.cut() // the stream drops mid-task; the agent reconnects through the proxy
	waitFor(t, 5*time.Second, func() bool {
		r, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
		return err == nil && r.GetState() == delegatev1.TaskState_SUCCEEDED
	}, "task %s to succeed", id)
	got, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetAttempt() != 1 || got.GetDelegate() != "flaky" || rec.count(id) != 1 {
		t.Errorf("after a stream drop: attempt %d on %q, handler ran %d times; want attempt 1 on flaky, run once",
			got.GetAttempt(), got.GetDelegate(), rec.count(id))
	}
}

// A delegate that stays away past its lease loses the task to another
// delegate; its late result is discarded, and the task completes once.
func TestLeaseExpiryRedispatchesAndFencesLateResult(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) {
		c.Dispatch.LeaseDuration = config.Duration(500 * time.Millisecond)
		c.Dispatch.HeartbeatInterval = config.Duration(100 * time.Millisecond)
	})
	px := mustProxy(t, srv.Addr())
	release := make(chan struct{})
	slow := startAgent(t, px.addr(), "slow", []string{"x"}, 1, func(ctx context.Context, task *delegatev1.Task) {
		<-release
	})
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)
	info := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: []string{"x"}, Async: true})
	waitFor(t, 2*time.Second, func() bool { return slow.count(info.GetId()) == 1 }, "slow to start the task")

	px.pause(true)
	px.cut() // slow is gone; its lease runs out
	fast := startAgent(t, srv.Addr(), "fast", []string{"x"}, 1, nil)
	waitFor(t, 5*time.Second, func() bool {
		r, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
		return err == nil && r.GetState() == delegatev1.TaskState_SUCCEEDED
	}, "the task to succeed on another delegate")
	got, _ := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
	if got.GetAttempt() != 2 || got.GetDelegate() != "fast" || fast.count(info.GetId()) != 1 {
		t.Fatalf("task attempt %d on %q, want attempt 2 on fast", got.GetAttempt(), got.GetDelegate())
	}

	// slow comes back and reports its late result: it must not count.
	close(release)
	px.pause(false)
	waitFor(t, 5*time.Second, func() bool {
		r, err := c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
		return err == nil && len(r.GetDelegates()) == 2
	}, "slow to reconnect")
	time.Sleep(300 * time.Millisecond) // let its result arrive and be acked
	got2, _ := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
	if got2.GetDelegate() != "fast" || got2.GetAttempt() != 2 || got2.GetOutcome().GetPing().GetDelegateName() != "fast" {
		t.Errorf("after the late result: task on %q attempt %d outcome from %q; want fast's result kept",
			got2.GetDelegate(), got2.GetAttempt(), got2.GetOutcome().GetPing().GetDelegateName())
	}
	if n := srv.StaleResults(); n != 1 {
		t.Errorf("stale results = %d, want 1", n)
	}
}

func TestAttemptsExhaustedIsDelegateLost(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) {
		c.Dispatch.LeaseDuration = config.Duration(300 * time.Millisecond)
		c.Dispatch.HeartbeatInterval = config.Duration(100 * time.Millisecond)
		c.Dispatch.MaxAttempts = 2
	})
	c, ctx := operator(t, srv.Addr())
	// Each delegate vanishes as soon as it starts the task.
	var pxs []*proxy
	for i := range 2 {
		px := mustProxy(t, srv.Addr())
		pxs = append(pxs, px)
		startAgent(t, px.addr(), []string{"v1", "v2"}[i], []string{"x"}, 1, func(ctx context.Context, task *delegatev1.Task) {
			px.pause(true)
			px.cut()
			<-ctx.Done()
		})
	}
	waitDelegates(t, c, ctx, 2)
	info := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: []string{"x"}, Async: true})
	waitFor(t, 10*time.Second, func() bool {
		r, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
		return err == nil && r.GetState() == delegatev1.TaskState_FAILED
	}, "the task to fail")
	got, _ := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
	if got.GetOutcome().GetCode() != delegatev1.Code_DELEGATE_LOST || got.GetAttempt() != 2 {
		t.Errorf("task = %v after %d attempts, want DELEGATE_LOST after 2", got.GetOutcome().GetCode(), got.GetAttempt())
	}
}

func TestDeadlineIsTimeoutAndCancels(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) {
		c.Dispatch.TaskDeadline = config.Duration(300 * time.Millisecond)
		c.Limits.PingMaxSleep = config.Duration(100 * time.Millisecond) // at most half the deadline
	})
	cancelled := make(chan struct{})
	startAgent(t, srv.Addr(), "sleepy", nil, 1, func(ctx context.Context, task *delegatev1.Task) {
		<-ctx.Done()
		close(cancelled)
	})
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)
	// The handler outlasts the deadline whatever the sleep.
	info := ping(t, c, ctx, &delegatev1.PingRequest{Sleep: durationpb.New(100 * time.Millisecond)})
	if info.GetOutcome().GetCode() != delegatev1.Code_TIMEOUT {
		t.Errorf("code = %v, want TIMEOUT", info.GetOutcome().GetCode())
	}
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Error("the delegate's task context was not cancelled")
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	c, _ := operator(t, srv.Addr())
	for _, tc := range []struct{ name, token, want string }{
		{"wrong token", "nope", "Unauthenticated"},
		{"delegate token on the operator API", delegateToken, "PermissionDenied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := metadataCtx(t, tc.token)
			_, err := c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ListDelegates with %s = %v, want %s", tc.name, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
}
