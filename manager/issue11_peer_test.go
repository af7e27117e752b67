package manager_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// pingOn pings through replica addr's API with selectors (and scope) and
// returns the task's view.
func pingOn(t *testing.T, addr string, scope *delegatev1.Scope, selectors ...string) *delegatev1.TaskInfo {
	t.Helper()
	c, ctx := operator(t, addr)
	info, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: selectors, Scope: scope})
	if err != nil {
		t.Fatalf("Ping(%v) on %s = %v", selectors, addr, err)
	}
	return info
}

// waitListed waits until replica addr lists n delegates.
func waitListed(t *testing.T, addr string, n int) []*delegatev1.DelegateInfo {
	t.Helper()
	c, ctx := operator(t, addr)
	var got []*delegatev1.DelegateInfo
	waitFor(t, 10*time.Second, func() bool {
		r, err := c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
		got = r.GetDelegates()
		return err == nil && len(got) == n
	}, "%d delegates listed on %s", n, addr)
	return got
}

// A sync task no local delegate can take runs on the replica holding an
// eligible one, under the same task id; a local eligible delegate is
// always preferred; the listing shows every replica's delegates with
// their replica.
func TestIssue11ForwardSyncTasks(t *testing.T) {
	c := newFakeCluster()
	a := mustReplica(t, c, "replica-a", replicaOpts{})
	b := mustReplica(t, c, "replica-b", replicaOpts{})
	far := startAgent(t, b.srv.Addr(), "far", []string{"blue"}, 2, nil)
	near := startAgent(t, a.srv.Addr(), "near", []string{"red"}, 2, nil)
	for _, r := range []*replica{a, b} {
		got := waitListed(t, r.srv.Addr(), 2)
		want := map[string]string{"far": "replica-b", "near": "replica-a"}
		for _, d := range got {
			if d.GetReplica() != want[d.GetName()] {
				t.Errorf("ListDelegates on %s: %s on replica %q, want %q", r.id, d.GetName(), d.GetReplica(), want[d.GetName()])
			}
		}
	}

	info := pingOn(t, a.srv.Addr(), nil, "blue")
	if info.GetOutcome().GetCode() != delegatev1.Code_OK || info.GetOutcome().GetPing().GetDelegateName() != "far" {
		t.Fatalf("ping [blue] on replica A = %v, want OK from far (replica B)", info.GetOutcome())
	}
	if far.count(info.GetId()) != 1 {
		t.Errorf("far ran task %s %d times, want once under the id replica A gave it", info.GetId(), far.count(info.GetId()))
	}
	if info := pingOn(t, a.srv.Addr(), nil, "red"); info.GetOutcome().GetPing().GetDelegateName() != "near" {
		t.Errorf("ping [red] on replica A = %v, want near (local)", info.GetOutcome())
	}
	if info := pingOn(t, b.srv.Addr(), nil, "red"); info.GetOutcome().GetPing().GetDelegateName() != "near" {
		t.Errorf("ping [red] on replica B = %v, want near (replica A)", info.GetOutcome())
	}

	// A local eligible delegate is preferred to a remote one.
	local := startAgent(t, a.srv.Addr(), "near-blue", []string{"blue"}, 2, nil)
	waitListed(t, a.srv.Addr(), 3)
	for range 5 {
		info := pingOn(t, a.srv.Addr(), nil, "blue")
		if got := info.GetOutcome().GetPing().GetDelegateName(); got != "near-blue" {
			t.Errorf("ping [blue] on replica A ran on %q, want near-blue (local)", got)
		}
		if local.count(info.GetId()) != 1 || far.count(info.GetId()) != 0 {
			t.Errorf("task %s ran %d times locally, %d on replica B; want once, locally", info.GetId(), local.count(info.GetId()), far.count(info.GetId()))
		}
	}
	_ = near
}

// No replica holds an eligible delegate: NO_ELIGIBLE_DELEGATE, naming the
// delegates of every replica. A delegate whose scope does not serve the
// task's is not eligible on another replica either.
func TestIssue11ForwardNoEligibleDelegate(t *testing.T) {
	c := newFakeCluster()
	short := func(cfg *manager.Config) {
		cfg.Dispatch.QueueTimeout = config.Duration(500 * time.Millisecond)
		cfg.Auth.DelegateTokens = append(cfg.Auth.DelegateTokens, manager.TokenConfig{Name: "acme", SHA256: manager.HashToken("acme-delegate-token"), Scope: "acme"})
	}
	a := mustReplica(t, c, "replica-a", replicaOpts{cfg: short})
	b := mustReplica(t, c, "replica-b", replicaOpts{cfg: short})
	w := mustWire(t, b.srv.Addr(), "acme-delegate-token", &delegatev1.Hello{Name: "acme-far", Capacity: 2, InstanceId: "i1", Tags: []string{"blue"}})
	w.credit(2)
	waitListed(t, a.srv.Addr(), 1)

	info := pingOn(t, a.srv.Addr(), nil, "green")
	if o := info.GetOutcome(); o.GetCode() != delegatev1.Code_NO_ELIGIBLE_DELEGATE || !strings.Contains(o.GetMessage(), "acme-far") ||
		!strings.Contains(o.GetMessage(), "replica-b") {
		t.Errorf("ping [green] = %v, want NO_ELIGIBLE_DELEGATE naming acme-far on replica-b", o)
	}
	info = pingOn(t, a.srv.Addr(), &delegatev1.Scope{Account: "other"}, "blue")
	if o := info.GetOutcome(); o.GetCode() != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
		t.Errorf("ping [blue] of scope other = %v, want NO_ELIGIBLE_DELEGATE (acme-far serves acme only)", o)
	}
	if got := w.tasks(); len(got) != 0 {
		t.Errorf("acme-far got %d tasks of another scope or selectors, want none", len(got))
	}
	// Its own scope is forwarded.
	done := make(chan *delegatev1.TaskInfo, 1)
	go func() {
		c, ctx := operator(t, a.srv.Addr())
		info, _ := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"blue"}, Scope: &delegatev1.Scope{Account: "acme"}})
		done <- info
	}()
	task := w.nextTask(10 * time.Second)
	if task == nil {
		t.Fatal("acme-far got no task of its scope from replica A")
	}
	w.result(task)
	if info := <-done; info.GetOutcome().GetCode() != delegatev1.Code_OK || info.GetId() != task.GetId() {
		t.Errorf("ping of scope acme = %v, want OK for task %s", info, task.GetId())
	}
}

// The caller's deadline crosses the peer link: when it passes, the
// forwarded task is cancelled on the delegate of the other replica.
func TestIssue11ForwardCallerDeadline(t *testing.T) {
	c := newFakeCluster()
	a := mustReplica(t, c, "replica-a", replicaOpts{})
	b := mustReplica(t, c, "replica-b", replicaOpts{})
	var started, cancelled atomic.Bool
	startAgent(t, b.srv.Addr(), "far", []string{"blue"}, 1, func(ctx context.Context, _ *delegatev1.Task) {
		started.Store(true)
		select {
		case <-ctx.Done():
			cancelled.Store(true)
		case <-time.After(10 * time.Second):
		}
	})
	waitListed(t, a.srv.Addr(), 1)
	cl, octx := operator(t, a.srv.Addr())
	ctx, cancel := context.WithTimeout(octx, 500*time.Millisecond)
	defer cancel()
	_, err := cl.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"blue"}, Sleep: durationpb.New(5 * time.Second)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Ping with a 500ms deadline = %v, want DeadlineExceeded", err)
	}
	waitFor(t, 10*time.Second, cancelled.Load, "the delegate on replica B to see the task cancelled (started: %v)", started.Load())
}

// A replica that cannot be reached: the task ends UNAVAILABLE, retryable,
// at once.
func TestIssue11ForwardPeerUnreachable(t *testing.T) {
	c := newFakeCluster()
	a := mustReplica(t, c, "replica-a", replicaOpts{})
	b := mustReplica(t, c, "replica-b", replicaOpts{})
	startAgent(t, b.srv.Addr(), "far", []string{"blue"}, 1, nil)
	waitListed(t, a.srv.Addr(), 1)
	c.mu.Lock()
	c.reps["replica-b"] = "127.0.0.1:1" // nothing listens there
	c.mu.Unlock()
	info := pingOn(t, a.srv.Addr(), nil, "blue")
	if o := info.GetOutcome(); o.GetCode() != delegatev1.Code_UNAVAILABLE || !o.GetRetryable() || !strings.Contains(o.GetMessage(), "replica-b") {
		t.Errorf("ping [blue] with replica B unreachable = %v, want UNAVAILABLE, retryable, naming replica-b", o)
	}
}
