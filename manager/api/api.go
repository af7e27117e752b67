package api

import (
	"context"

	"fmt"
	"github.com/rs/zerolog"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/resolve"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Service implements the operator API (ManagerService).
type Service struct {
	delegatev1.UnimplementedManagerServiceServer
	d      *dispatch.Dispatcher
	cat    store.Catalog
	sealer *seal.Sealer
	res    *resolve.Resolver
	limits *dispatch.Limiter
	log    zerolog.Logger

	// clusterName and replicas are set by SetCluster (cluster.go) for a
	// replica of a cluster; nil replicas: a single manager.
	clusterName string
	replicas    Replicas
}

// New is the operator API over dispatcher d, the catalog cat (connectors,
// credentials), the sealer of builtin credentials, the resolver that binds
// connectors' credential references, and the submission limits.
func New(d *dispatch.Dispatcher, cat store.Catalog, sealer *seal.Sealer, res *resolve.Resolver, limits *dispatch.Limiter, log zerolog.Logger) *Service {
	return &Service{d: d, cat: cat, sealer: sealer, res: res, limits: limits, log: log}
}

func (s *Service) ListDelegates(ctx context.Context, _ *delegatev1.ListDelegatesRequest) (*delegatev1.ListDelegatesResponse, error) {
	ds, err := s.d.ListDelegates(ctx, tokenScope(ctx))
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &delegatev1.ListDelegatesResponse{Delegates: ds}, nil
}

func (s *Service) Ping(ctx context.Context, req *delegatev1.PingRequest) (*delegatev1.TaskInfo, error) {
	if err := s.limits.PingSleep(req.GetSleep().AsDuration()); err != nil {
		return nil, Invalid(err)
	}
	if err := validateRequestID(req.GetRequestId()); err != nil {
		return nil, Invalid(err)
	}
	if err := dispatch.CheckTags("selectors", req.GetSelectors(), dispatch.MaxTagLen); err != nil {
		return nil, Invalid(err)
	}
	// A ping needs a delegate serving its scope: the one asked for, else
	// the token's (none for an unscoped token: any delegate).
	scope := tokenScope(ctx)
	if rs := req.GetScope(); !scopes.FromProto(rs).IsZero() {
		if err := connector.ValidateScope(rs); err != nil {
			return nil, Invalid(err)
		}
		if !scopes.Visible(scope, scopes.FromProto(rs)) {
			return nil, outsideScope(ctx, "ping a delegate of", rs)
		}
		scope = scopes.FromProto(rs)
	}
	var r store.Request // a sync ping is never stored: nothing to deduplicate
	if req.GetAsync() {
		var err error
		if r, err = s.storeRequest(ctx, "Ping", req); err != nil {
			return nil, s.toStatus(err)
		}
	}
	return s.submit(ctx, dispatch.SubmitRequest{
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
func (s *Service) submit(ctx context.Context, req dispatch.SubmitRequest) (*delegatev1.TaskInfo, error) {
	t, err := s.d.Submit(ctx, req)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if req.Async {
		return t.Info(), nil
	}
	select {
	case <-t.Done():
		return t.Info(), nil
	case <-ctx.Done():
		t.Cancel("the caller went away")
		return nil, s.toStatus(ctx.Err())
	}
}

func (s *Service) GetTask(ctx context.Context, req *delegatev1.GetTaskRequest) (*delegatev1.TaskInfo, error) {
	info, _, err := s.visibleTask(ctx, req.GetId())
	if err != nil {
		return nil, s.toStatus(err)
	}
	return info, nil
}

// visibleTask is getTask for the caller: a task outside its token's scope
// is not found, exactly like a task that does not exist.
func (s *Service) visibleTask(ctx context.Context, id string) (*delegatev1.TaskInfo, <-chan struct{}, error) {
	info, changed, err := s.d.GetTask(ctx, id)
	if err == nil && !scopes.Visible(tokenScope(ctx), scopes.FromProto(info.GetScope())) {
		return nil, nil, dispatch.ErrTaskNotFound
	}
	return info, changed, err
}

func (s *Service) ListTasks(ctx context.Context, req *delegatev1.ListTasksRequest) (*delegatev1.ListTasksResponse, error) {
	page, err := dispatch.ListPage(req.GetLimit())
	if err != nil {
		return nil, Invalid(err)
	}
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, Invalid(err)
	}
	// One more than the page: whether there is a next page.
	f := store.Filter{Limit: page + 1, Scope: tokenScope(ctx), After: after}
	if st := req.GetState(); st != delegatev1.TaskState_TASK_STATE_UNSPECIFIED {
		f.States = []store.State{stateFromProto(st)}
	}
	ts, err := s.d.ListTasks(ctx, f)
	if err != nil {
		return nil, s.toStatus(err)
	}
	out := &delegatev1.ListTasksResponse{}
	if len(ts) > page {
		ts = ts[:page]
		out.NextPageToken = encodePageToken(store.CursorOf(ts[page-1]))
	}
	for _, t := range ts {
		out.Tasks = append(out.Tasks, dispatch.StoredInfo(t))
	}
	return out, nil
}

func (s *Service) WatchTask(req *delegatev1.GetTaskRequest, stream delegatev1.ManagerService_WatchTaskServer) error {
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
			return s.toStatus(ctx.Err())
		case <-s.d.Stopping():
			// An unfinished task outlives the manager (async tasks are
			// recovered): end the watch rather than hold the shutdown
			// until shutdown_timeout.
			return s.toStatus(fmt.Errorf("%w; watch the task again once it is back", dispatch.ErrShuttingDown))
		case <-changed:
		}
	}
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
