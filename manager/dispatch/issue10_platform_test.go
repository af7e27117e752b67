package dispatch

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// completeHook is a store that reports every Complete before making it.
type completeHook struct {
	store.Store
	complete func(id string, f store.Final)
}

func (h *completeHook) Complete(ctx context.Context, id, leaseID string, f store.Final) error {
	h.complete(id, f)
	return h.Store.Complete(ctx, id, leaseID, f)
}

// runnerFunc is a TaskRunner of a function.
type runnerFunc func(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome

func (f runnerFunc) Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome {
	return f(ctx, t)
}

// TestIssue10PlatformTaskSurvivesShutdown: a platform task still running
// when the manager stops is cut short by the stop, not finished: nothing
// is stored for it (no FAILED outcome), it stays unfinished in the store
// and the next start recovers it.
func TestIssue10PlatformTaskSurvivesShutdown(t *testing.T) {
	t.Parallel()
	d := newTestDispatcher(t)
	db := d.store
	completed := make(chan store.State, 1)
	d.store = &completeHook{Store: db, complete: func(_ string, f store.Final) { completed <- f.State }}
	started := make(chan struct{})
	run := runnerFunc(func(ctx context.Context, _ *delegatev1.Task) *delegatev1.Outcome {
		close(started)
		<-ctx.Done()
		return &delegatev1.Outcome{Code: delegatev1.Code_CANCELLED, Message: ctx.Err().Error()}
	})
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	wait := d.startPlatform(runCtx, run, 1)
	tk, err := d.submit(t.Context(), SubmitRequest{Kind: "ping", Async: true, Selectors: []string{PlatformTag}, Payload: pingPayload()})
	if err != nil {
		t.Fatalf("Submit(platform task) error: %v", err)
	}
	<-started

	// What Server.Close does: the dispatcher closes, its run context
	// ends, its goroutines are joined, then the store closes.
	d.close()
	stop()
	wait()
	select {
	case st := <-completed:
		t.Fatalf("the platform task cut short by the shutdown was stored %v, want it left unfinished", st)
	default:
	}
	// No result was taken either (taking one marks the task busy while
	// its outcome is stored).
	d.mu.Lock()
	busy, state := tk.busy, tk.state
	d.mu.Unlock()
	if busy || state != store.StateLeased {
		t.Fatalf("after the shutdown the platform task is %v (busy %v), want leased: no result taken", state, busy)
	}

	next := New(d.cfg, db, zerolog.Nop(), NewMetrics())
	if _, err := next.recover(t.Context()); err != nil {
		t.Fatalf("recover: %v", err)
	}
	if got := next.tasks[tk.id]; got == nil || got.state != store.StateLeased {
		t.Errorf("after a restart task %s = %+v, want it recovered, leased", tk.id, got)
	}
}
