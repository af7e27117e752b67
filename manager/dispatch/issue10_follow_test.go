package dispatch

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager/store"
)

// getHook is a store that reports every GetTask before making it.
type getHook struct {
	store.Store
	get func(id string)
}

func (h *getHook) GetTask(ctx context.Context, id string) (*store.Task, error) {
	h.get(id)
	return h.Store.GetTask(ctx, id)
}

// TestIssue10FollowerJoined: the reader that keeps a stored task this
// dispatcher does not hold up to date for a repeated request
// (followStored) is the dispatcher's goroutine: it stops when the
// dispatcher closes, although its caller's context lasts, and Join waits
// for it, so nothing reads the store once the manager closes it. Not
// parallel, for goleak (the package's parallel tests start after the
// sequential ones).
func TestIssue10FollowerJoined(t *testing.T) {
	d := newTestDispatcher(t)
	reads := make(chan struct{}, 1)
	d.store = &getHook{Store: d.store, get: func(string) {
		select {
		case reads <- struct{}{}:
		default:
		}
	}}
	now := time.Now()
	st := &store.Task{ID: ids.New(), Kind: "ping", State: store.StateQueued, MaxAttempts: 1,
		CreatedAt: now, UpdatedAt: now, Deadline: now.Add(time.Hour), QueueDeadline: now.Add(time.Hour)}
	if err := d.store.CreateTask(t.Context(), st); err != nil {
		t.Fatalf("CreateTask: %v", err)
	}
	before := goleak.IgnoreCurrent()
	d.followStored(context.Background(), storedTask(st)) // a caller that never goes away
	<-reads                                              // it follows the store
	d.close()
	d.join()
	goleak.VerifyNone(t, before)
}
