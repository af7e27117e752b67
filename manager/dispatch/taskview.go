package dispatch

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Submitted is a task as the caller of Submit sees it: its view, its end,
// and a way to give up on it. It is all the API holds of a task.
type Submitted struct {
	d *Dispatcher
	t *task
}

// ID is the task's id.
func (s *Submitted) ID() string { return s.t.id }

// Done is closed once the task is final.
func (s *Submitted) Done() <-chan struct{} { return s.t.done }

// Info is the task's view now.
func (s *Submitted) Info() *delegatev1.TaskInfo { return s.d.info(s.t) }

// Cancel ends the task unless it is final or being finished; for a sync
// task whose caller gave up.
func (s *Submitted) Cancel(why string) { s.d.cancel(s.t, why) }

// Submit queues a task and dispatches it at once if a delegate has credit.
// An async submission whose request (SubmitRequest.Request) was submitted
// before returns the task that one made, whatever its state, and queues
// nothing. A task its scope's limits have no room for is refused with a
// *LimitError before anything is stored.
func (d *Dispatcher) Submit(ctx context.Context, req SubmitRequest) (*Submitted, error) {
	t, err := d.submit(ctx, req)
	if err != nil {
		return nil, err
	}
	return &Submitted{d: d, t: t}, nil
}

// ListTasks reads stored tasks (async ones, and every finished one the
// store keeps) through the dispatcher: the API never reads the store of
// tasks itself.
func (d *Dispatcher) ListTasks(ctx context.Context, f store.Filter) ([]*store.Task, error) {
	return d.store.ListTasks(ctx, f)
}

// GetTask returns a task's view, and a channel closed at its next change
// (nil once the task is final).
func (d *Dispatcher) GetTask(ctx context.Context, id string) (*delegatev1.TaskInfo, <-chan struct{}, error) {
	d.mu.Lock()
	if t := d.tasks[id]; t != nil {
		info, ch := d.infoLocked(t), t.changed
		d.mu.Unlock()
		return info, ch, nil
	}
	d.mu.Unlock()
	st, err := d.store.GetTask(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, ErrTaskNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	info := StoredInfo(st)
	if !st.State.Final() {
		// Between the store write and memory (a task that changed just
		// now): look again shortly. A task that has not changed for a
		// while is run by another manager sharing the store: look again
		// every second, not 20 times a second for as long as it runs.
		wait := 50 * time.Millisecond
		if d.now().Sub(st.UpdatedAt) > time.Second {
			wait = time.Second
		}
		return info, d.storedWake(id, wait), nil
	}
	return info, nil, nil
}

func (d *Dispatcher) info(t *task) *delegatev1.TaskInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.infoLocked(t)
}

func (d *Dispatcher) infoLocked(t *task) *delegatev1.TaskInfo {
	return &delegatev1.TaskInfo{
		Id: t.id, Kind: t.kind, State: stateToProto(t.state), Selectors: t.selectors,
		Attempt: int32(t.attempt), Delegate: t.holder, CreatedAt: timestamp(t.createdAt),
		UpdatedAt: timestamp(t.updatedAt), Outcome: t.outcome, Async: t.async, Scope: scopes.Proto(t.scope),
		RequestId: t.requestID,
	}
}

func StoredInfo(t *store.Task) *delegatev1.TaskInfo {
	info := &delegatev1.TaskInfo{
		Id: t.ID, Kind: t.Kind, State: stateToProto(t.State), Selectors: t.Selectors,
		Attempt: int32(t.Attempt), Delegate: t.Delegate, CreatedAt: timestamppb.New(t.CreatedAt),
		UpdatedAt: timestamppb.New(t.UpdatedAt), Async: true, Scope: scopes.Proto(t.Scope),
		RequestId: t.Request.ID,
	}
	if len(t.Outcome) > 0 {
		o := &delegatev1.Outcome{}
		if proto.Unmarshal(t.Outcome, o) == nil {
			info.Outcome = o
		}
	}
	return info
}

func stateToProto(s store.State) delegatev1.TaskState {
	switch s {
	case store.StateQueued:
		return delegatev1.TaskState_QUEUED
	case store.StateLeased:
		return delegatev1.TaskState_LEASED
	case store.StateSucceeded:
		return delegatev1.TaskState_SUCCEEDED
	case store.StateFailed:
		return delegatev1.TaskState_FAILED
	}
	return delegatev1.TaskState_TASK_STATE_UNSPECIFIED
}

// WithoutSecretValue returns o without any secret value (delegatev1.Redact;
// a copy when there is one to drop). Outcomes are stored without values
// (persistFinal), and a change returns one only to the caller that waits
// for a create with return_value: the generated value then lives only in
// the memory of the task that the caller holds, never in the store, and
// GetTask, ListTasks and WatchTask, which read the store once the task is
// final, never see it.
func WithoutSecretValue(o *delegatev1.Outcome) *delegatev1.Outcome {
	if o == nil {
		return nil
	}
	c := proto.Clone(o).(*delegatev1.Outcome)
	if !delegatev1.Redact(c) {
		return o
	}
	return c
}
