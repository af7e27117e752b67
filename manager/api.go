package manager

import (
	"context"

	"errors"
	"fmt"
	"github.com/rs/zerolog"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/oidc"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// managerService implements the operator API.
type managerService struct {
	delegatev1.UnimplementedManagerServiceServer
	d      *Dispatcher
	cat    store.Catalog
	sealer *seal.Sealer
	issuer *oidc.Issuer
	limits *limiter
	log    zerolog.Logger
}

func (s *managerService) ListDelegates(ctx context.Context, _ *delegatev1.ListDelegatesRequest) (*delegatev1.ListDelegatesResponse, error) {
	return &delegatev1.ListDelegatesResponse{Delegates: s.d.ListDelegates(tokenScope(ctx))}, nil
}

func (s *managerService) Ping(ctx context.Context, req *delegatev1.PingRequest) (*delegatev1.TaskInfo, error) {
	if err := s.limits.pingSleep(req.GetSleep().AsDuration()); err != nil {
		return nil, invalid(err)
	}
	if err := validateRequestID(req.GetRequestId()); err != nil {
		return nil, invalid(err)
	}
	if err := checkTags("selectors", req.GetSelectors(), maxTagLen); err != nil {
		return nil, invalid(err)
	}
	// A ping needs a delegate serving its scope: the one asked for, else
	// the token's (none for an unscoped token: any delegate).
	scope := tokenScope(ctx)
	if rs := req.GetScope(); !storeScope(rs).IsZero() {
		if err := connector.ValidateScope(rs); err != nil {
			return nil, invalid(err)
		}
		if !visible(scope, storeScope(rs)) {
			return nil, outsideScope(ctx, "ping a delegate of", rs)
		}
		scope = storeScope(rs)
	}
	var r store.Request // a sync ping is never stored: nothing to deduplicate
	if req.GetAsync() {
		var err error
		if r, err = s.storeRequest(ctx, "Ping", req); err != nil {
			return nil, s.toStatus(err)
		}
	}
	return s.submit(ctx, SubmitRequest{
		Kind:      "ping",
		Scope:     scope,
		Selectors: req.GetSelectors(),
		Payload:   &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{Sleep: req.GetSleep()}}},
		Async:     req.GetAsync(),
		Request:   r,
	})
}

// submit runs a task: async tasks return once persisted; sync ones wait
// for the outcome (and are cancelled if the caller goes away).
func (s *managerService) submit(ctx context.Context, req SubmitRequest) (*delegatev1.TaskInfo, error) {
	t, err := s.d.Submit(ctx, req)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if req.Async {
		return s.d.info(t), nil
	}
	select {
	case <-t.done:
		return s.d.info(t), nil
	case <-ctx.Done():
		s.d.cancel(t, "the caller went away")
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (s *managerService) GetTask(ctx context.Context, req *delegatev1.GetTaskRequest) (*delegatev1.TaskInfo, error) {
	info, _, err := s.visibleTask(ctx, req.GetId())
	if err != nil {
		return nil, s.toStatus(err)
	}
	return info, nil
}

// visibleTask is getTask for the caller: a task outside its token's scope
// is not found, exactly like a task that does not exist.
func (s *managerService) visibleTask(ctx context.Context, id string) (*delegatev1.TaskInfo, <-chan struct{}, error) {
	info, changed, err := s.d.getTask(ctx, id)
	if err == nil && !visible(tokenScope(ctx), storeScope(info.GetScope())) {
		return nil, nil, ErrTaskNotFound
	}
	return info, changed, err
}

func (s *managerService) ListTasks(ctx context.Context, req *delegatev1.ListTasksRequest) (*delegatev1.ListTasksResponse, error) {
	page, err := listPage(req.GetLimit())
	if err != nil {
		return nil, invalid(err)
	}
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, invalid(err)
	}
	// One more than the page: whether there is a next page.
	f := store.Filter{Limit: page + 1, Scope: tokenScope(ctx), After: after}
	if st := req.GetState(); st != delegatev1.TaskState_TASK_STATE_UNSPECIFIED {
		f.States = []store.State{stateFromProto(st)}
	}
	ts, err := s.d.store.ListTasks(ctx, f)
	if err != nil {
		return nil, s.toStatus(err)
	}
	out := &delegatev1.ListTasksResponse{}
	if len(ts) > page {
		ts = ts[:page]
		out.NextPageToken = encodePageToken(store.CursorOf(ts[page-1]))
	}
	for _, t := range ts {
		out.Tasks = append(out.Tasks, storedInfo(t))
	}
	return out, nil
}

func (s *managerService) WatchTask(req *delegatev1.GetTaskRequest, stream delegatev1.ManagerService_WatchTaskServer) error {
	ctx := stream.Context()
	var last *delegatev1.TaskInfo
	for {
		info, changed, err := s.visibleTask(ctx, req.GetId())
		if err != nil {
			return s.toStatus(err)
		}
		if last == nil || !proto.Equal(last, info) {
			if err := stream.Send(info); err != nil {
				return err
			}
			last = info
		}
		if changed == nil { // final
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.d.Stopping():
			// An unfinished task outlives the manager (async tasks are
			// recovered): end the watch rather than hold the shutdown
			// until shutdown_timeout.
			return s.toStatus(fmt.Errorf("%w; watch the task again once it is back", ErrShuttingDown))
		case <-changed:
		}
	}
}

// getTask returns a task's view, and a channel closed at its next change
// (nil once the task is final).
func (d *Dispatcher) getTask(ctx context.Context, id string) (*delegatev1.TaskInfo, <-chan struct{}, error) {
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
	info := storedInfo(st)
	if !st.State.Final() {
		// Between the store write and memory (a task that changed just
		// now): look again shortly. A task that has not changed for a
		// while is run by another manager sharing the store: look again
		// every second, not 20 times a second for as long as it runs.
		wait := 50 * time.Millisecond
		if d.now().Sub(st.UpdatedAt) > time.Second {
			wait = time.Second
		}
		ch := make(chan struct{})
		time.AfterFunc(wait, func() { close(ch) })
		return info, ch, nil
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
		UpdatedAt: timestamp(t.updatedAt), Outcome: t.outcome, Async: t.async, Scope: scopeProto(t.scope),
		RequestId: t.requestID,
	}
}

func storedInfo(t *store.Task) *delegatev1.TaskInfo {
	info := &delegatev1.TaskInfo{
		Id: t.ID, Kind: t.Kind, State: stateToProto(t.State), Selectors: t.Selectors,
		Attempt: int32(t.Attempt), Delegate: t.Delegate, CreatedAt: timestamppb.New(t.CreatedAt),
		UpdatedAt: timestamppb.New(t.UpdatedAt), Async: true, Scope: scopeProto(t.Scope),
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

func stateFromProto(s delegatev1.TaskState) store.State {
	switch s {
	case delegatev1.TaskState_QUEUED:
		return store.StateQueued
	case delegatev1.TaskState_LEASED:
		return store.StateLeased
	case delegatev1.TaskState_SUCCEEDED:
		return store.StateSucceeded
	case delegatev1.TaskState_FAILED:
		return store.StateFailed
	}
	return ""
}
