package manager_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestOperatorTags proves TagDelegate (design §4 matching, issue #4):
// adding a tag to a connected delegate dispatches a task that was waiting
// for it at once; removing it stops the delegate from matching; and the
// tag is persisted, so after a manager restart on the same store the
// reconnecting delegate carries it again and serves tasks that select it;
// and a removal is persisted too, so after another restart it gets no
// task that selects the removed tag.
func TestOperatorTags(t *testing.T) {
	t.Parallel()
	const queueTimeout = 3 * time.Second
	dir := t.TempDir()
	tweak := func(c *manager.Config) { c.Dispatch.QueueTimeout = config.Duration(queueTimeout) }
	srv := mustManagerAt(t, dir, testLogger(t), tweak)
	startAgent(t, srv.Addr(), "worker", []string{"a"}, 2, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)

	tag := func(add, remove []string) []string {
		t.Helper()
		r, err := c.TagDelegate(ctx, &delegatev1.TagDelegateRequest{Name: "worker", Add: add, Remove: remove})
		if err != nil {
			t.Fatalf("TagDelegate(add %q, remove %q): %v", add, remove, err)
		}
		return r.GetOperatorTags()
	}

	// A [gpu] task waits: no delegate carries gpu.
	queued := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: []string{"gpu"}, Async: true})
	time.Sleep(200 * time.Millisecond)
	if got, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: queued.GetId()}); err != nil || got.GetState() != delegatev1.TaskState_QUEUED {
		t.Fatalf("GetTask([gpu] ping) = %v, %v; want QUEUED", got.GetState(), err)
	}

	// Tagging the delegate dispatches it at once, well before the queue timeout.
	start := time.Now()
	if got := tag([]string{" GPU "}, nil); !slices.Equal(got, []string{"gpu"}) {
		t.Errorf("TagDelegate(add GPU) operator tags = %q, want [gpu]", got)
	}
	final := waitTask(t, c, ctx, queued.GetId(), queueTimeout)
	if took := time.Since(start); took > queueTimeout/3 {
		t.Errorf("the [gpu] ping completed %s after the tag was added, want well under the queue timeout of %s", took, queueTimeout)
	}
	if final.GetState() != delegatev1.TaskState_SUCCEEDED || final.GetDelegate() != "worker" {
		t.Fatalf("[gpu] ping = %v on %q (%s), want SUCCEEDED on worker", final.GetState(), final.GetDelegate(), final.GetOutcome().GetMessage())
	}
	list, err := c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
	if err != nil || len(list.GetDelegates()) != 1 {
		t.Fatalf("ListDelegates = %v, %v", list, err)
	}
	if d := list.GetDelegates()[0]; !slices.Equal(d.GetOperatorTags(), []string{"gpu"}) || !slices.Contains(d.GetTags(), "gpu") {
		t.Errorf("ListDelegates worker operator_tags = %q, tags = %q; want gpu in both", d.GetOperatorTags(), d.GetTags())
	}

	// Removing it: a new [gpu] task is no longer dispatched.
	if got := tag(nil, []string{"gpu"}); len(got) != 0 {
		t.Errorf("TagDelegate(remove gpu) operator tags = %q, want none", got)
	}
	start = time.Now()
	info := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: []string{"gpu"}})
	if got := info.GetOutcome().GetCode(); got != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
		t.Fatalf("Ping([gpu]) after removing the tag = %v on %q, want NO_ELIGIBLE_DELEGATE", got, info.GetDelegate())
	}
	if took := time.Since(start); took < queueTimeout {
		t.Errorf("Ping([gpu]) failed after %s, before the queue timeout of %s", took, queueTimeout)
	}
	msg := info.GetOutcome().GetMessage()
	if _, connected, ok := strings.Cut(msg, "connected delegates: worker ["); !ok || strings.Contains(connected, "gpu") {
		t.Errorf("NO_ELIGIBLE_DELEGATE message = %q, want worker listed with its tags, without gpu", msg)
	}

	// Added again, then the manager restarts on the same store.
	if got := tag([]string{"gpu"}, nil); !slices.Equal(got, []string{"gpu"}) {
		t.Fatalf("TagDelegate(add gpu) operator tags = %q, want [gpu]", got)
	}
	if err := srv.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	srv2 := mustManagerAt(t, dir, testLogger(t), tweak)
	startAgent(t, srv2.Addr(), "worker", []string{"a"}, 2, nil)
	c2, ctx2 := operator(t, srv2.Addr())
	waitDelegates(t, c2, ctx2, 1)

	list, err = c2.ListDelegates(ctx2, &delegatev1.ListDelegatesRequest{})
	if err != nil || len(list.GetDelegates()) != 1 {
		t.Fatalf("ListDelegates after restart = %v, %v", list, err)
	}
	d := list.GetDelegates()[0]
	if !slices.Equal(d.GetOperatorTags(), []string{"gpu"}) || !slices.Contains(d.GetTags(), "gpu") {
		t.Errorf("after restart worker operator_tags = %q, tags = %q; want gpu in both", d.GetOperatorTags(), d.GetTags())
	}
	info = ping(t, c2, ctx2, &delegatev1.PingRequest{Selectors: []string{"gpu"}})
	if o := info.GetOutcome(); o.GetCode() != delegatev1.Code_OK || o.GetPing().GetDelegateName() != "worker" {
		t.Errorf("Ping([gpu]) after restart = %v on %q (%s), want OK on worker", o.GetCode(), o.GetPing().GetDelegateName(), o.GetMessage())
	}

	// Removed, then the manager restarts again: the removal is what was
	// persisted, so the reconnecting delegate is never given a [gpu] task.
	r, err := c2.TagDelegate(ctx2, &delegatev1.TagDelegateRequest{Name: "worker", Remove: []string{"GPU"}})
	if err != nil || len(r.GetOperatorTags()) != 0 {
		t.Fatalf("TagDelegate(remove GPU) after restart = %q, %v; want no operator tags", r.GetOperatorTags(), err)
	}
	if err := srv2.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	const shortQueue = time.Second
	srv3 := mustManagerAt(t, dir, testLogger(t), func(c *manager.Config) { c.Dispatch.QueueTimeout = config.Duration(shortQueue) })
	worker := startAgent(t, srv3.Addr(), "worker", []string{"a"}, 2, nil)
	c3, ctx3 := operator(t, srv3.Addr())
	waitDelegates(t, c3, ctx3, 1)
	list, err = c3.ListDelegates(ctx3, &delegatev1.ListDelegatesRequest{})
	if err != nil || len(list.GetDelegates()) != 1 {
		t.Fatalf("ListDelegates after the second restart = %v, %v", list, err)
	}
	if d := list.GetDelegates()[0]; len(d.GetOperatorTags()) != 0 || slices.Contains(d.GetTags(), "gpu") {
		t.Errorf("after removal and restart worker operator_tags = %q, tags = %q; want gpu in neither", d.GetOperatorTags(), d.GetTags())
	}
	start = time.Now()
	info = ping(t, c3, ctx3, &delegatev1.PingRequest{Selectors: []string{"gpu"}})
	if got := info.GetOutcome().GetCode(); got != delegatev1.Code_NO_ELIGIBLE_DELEGATE {
		t.Errorf("Ping([gpu]) after removal and restart = %v on %q, want NO_ELIGIBLE_DELEGATE", got, info.GetDelegate())
	}
	if took := time.Since(start); took < shortQueue {
		t.Errorf("Ping([gpu]) failed after %s, before the queue timeout of %s", took, shortQueue)
	}
	if n := worker.count(info.GetId()); n != 0 {
		t.Errorf("the [gpu] ping ran %d times on worker after the tag was removed and the manager restarted, want 0", n)
	}
	// The delegate itself is served: the refusal is about the removed tag.
	if o := ping(t, c3, ctx3, &delegatev1.PingRequest{Selectors: []string{"a"}}).GetOutcome(); o.GetCode() != delegatev1.Code_OK || o.GetPing().GetDelegateName() != "worker" {
		t.Errorf("Ping([a]) after the second restart = %v on %q (%s), want OK on worker", o.GetCode(), o.GetPing().GetDelegateName(), o.GetMessage())
	}
}
