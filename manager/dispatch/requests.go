package dispatch

import (
	"context"
	"crypto/hmac"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Request ids make a submission safe to repeat (PingRequest.request_id,
// SecretRequest.request_id). A caller whose call failed without an answer
// (Unavailable, DeadlineExceeded, a broken connection) cannot tell whether
// the manager stored the task: it may have, after the caller saw the
// error. It sends the same request with the same request id, and the
// store, which indexes async tasks by request (store.Request), hands back
// the first call's task instead of a second one, so that a mutation never
// runs twice (two task ids would mean two ClientRequestTokens, and two
// versions at AWS).
//
// Only async tasks are stored, so only they are deduplicated. Sync work
// (reads, sync pings) is never stored and is safe to repeat; its request
// id is validated and otherwise ignored.

// existing returns, for a submission that repeats request r, the task the
// first submission made (stored as first), whatever its state: the task in
// memory while it runs here, so a caller may wait for it, else as stored
// and, until final, followed in the store for as long as ctx lasts. The
// same request id with another request (another digest) is a
// *RequestReusedError.
func (d *Dispatcher) existing(ctx context.Context, first *store.Task, r store.Request) (*task, error) {
	if !hmac.Equal(first.Request.Hash, r.Hash) {
		return nil, &RequestReusedError{RequestID: r.ID, TaskID: first.ID, Kind: first.Kind}
	}
	d.mu.Lock()
	t, closed := d.tasks[first.ID], d.closed
	if t == nil {
		t = d.awaitedOrNilLocked(first.ID) // a replica's, submitted here
	}
	d.mu.Unlock()
	if t != nil {
		d.metrics.deduplicated.WithLabelValues(t.kind).Inc()
		return t, nil
	}
	// Not in memory: final (a task leaves memory after its final state is
	// stored); or the first submission is between its store write and its
	// memory insert; or another manager sharing the store runs it. Read
	// the store again: first may predate the final state.
	st, err := d.store.GetTask(ctx, first.ID)
	switch {
	case errors.Is(err, store.ErrNotFound): // pruned meanwhile: it was final
		st = first
	case err != nil:
		return nil, err
	}
	if closed && !st.State.Final() {
		// The first submission stored it as the manager began to stop;
		// the next start recovers it.
		return nil, ErrShuttingDown
	}
	d.metrics.deduplicated.WithLabelValues(st.Kind).Inc()
	t = storedTask(st)
	if !st.State.Final() {
		t = d.awaitStored(ctx, t)
	}
	return t, nil
}

// storedTask is a task as stored, for callers that hold *task values; it
// is not in the dispatcher's memory. Its done channel is closed if it is
// final.
func storedTask(st *store.Task) *task {
	t := &task{
		id: st.ID, kind: st.Kind, selectors: st.Selectors, scope: st.Scope, async: true,
		requestID: st.Request.ID, changed: make(chan struct{}), done: make(chan struct{}),
	}
	setStored(t, st)
	return t
}

// setStored copies st's state into t, closing done if it is final.
func setStored(t *task, st *store.Task) {
	t.state, t.attempt, t.holder = st.State, st.Attempt, st.Delegate
	t.createdAt, t.updatedAt = st.CreatedAt, st.UpdatedAt
	if len(st.Outcome) > 0 {
		o := &delegatev1.Outcome{}
		if proto.Unmarshal(st.Outcome, o) == nil {
			t.outcome = o
		}
	}
	if st.State.Final() {
		close(t.done)
	}
}

// followInterval is how often followStored reads the store.
const followInterval = 100 * time.Millisecond

// followStored keeps t, a stored task this dispatcher does not run, up to
// date from the store until it is final, ctx (the caller's) ends or the
// dispatcher closes (its callers watch Stopping). It returns at once: the
// reads run in a goroutine the dispatcher owns (spawn), which Join waits
// for, so none outlives the manager or reads a closed store.
func (d *Dispatcher) followStored(ctx context.Context, t *task) {
	d.spawn(func() { d.follow(ctx, t) })
}

// follow is followStored's loop.
func (d *Dispatcher) follow(ctx context.Context, t *task) {
	tick := time.NewTicker(followInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.stopping:
			return
		case <-tick.C:
		}
		st, err := d.store.GetTask(ctx, t.id)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
				d.storeFailed("follow", t.id, err) // bounded: one line per outage and 10 s
			}
			continue
		}
		d.storeRecovered()
		d.mu.Lock()
		setStored(t, st)
		d.notifyLocked(t)
		d.mu.Unlock()
		if st.State.Final() {
			return
		}
	}
}
