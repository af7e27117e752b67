package peer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Service implements PeerService: what other replicas ask of this one.
// Every method checks the peer token first (authorize).
type Service struct {
	delegatev1.UnimplementedPeerServiceServer
	// sum is the SHA-256 of the peer token: the token itself is not kept
	// by the server side.
	sum [32]byte
	d   *dispatch.Dispatcher
	log zerolog.Logger
}

func newService(token string, d *dispatch.Dispatcher, log zerolog.Logger) *Service {
	return &Service{sum: sha256.Sum256([]byte(token)), d: d, log: log}
}

// authorize accepts only the peer token. Its messages name the problem,
// never a token; a delegate or operator token is refused like any other
// that is not the peer token.
func (s *Service) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return status.Error(codes.Unauthenticated, "PeerService needs the cluster's peer token")
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	sum := sha256.Sum256([]byte(tok))
	if !ok || subtle.ConstantTimeCompare(sum[:], s.sum[:]) != 1 {
		return status.Error(codes.Unauthenticated, "PeerService accepts only the cluster's peer token")
	}
	return nil
}

// RunTask runs a sync task another replica forwarded on this replica's
// delegates (dispatch.RunForwarded) and returns its outcome. A refusal
// with an outcome code (its connector cannot be resolved) is an outcome
// too; the replica shutting down or its store unavailable is Unavailable
// (the caller may offer the task to another replica). Neither the
// payload nor the outcome is logged.
func (s *Service) RunTask(ctx context.Context, req *delegatev1.RunTaskRequest) (*delegatev1.RunTaskResponse, error) {
	if err := s.authorize(ctx); err != nil {
		return nil, err
	}
	if req.GetPayload() == nil || req.GetKind() == "" {
		return nil, status.Error(codes.InvalidArgument, "run_task: kind and payload are required")
	}
	res, err := s.d.RunForwarded(ctx, req.GetTaskId(), dispatch.SubmitRequest{
		Kind: req.GetKind(), Selectors: req.GetSelectors(), Scope: scopes.FromProto(req.GetScope()), Payload: req.GetPayload(),
	})
	var te *dispatch.TaskError
	switch {
	case err == nil:
		return &delegatev1.RunTaskResponse{Outcome: res.Outcome, Delegate: res.Delegate}, nil
	case errors.As(err, &te):
		return &delegatev1.RunTaskResponse{Outcome: &delegatev1.Outcome{Code: te.Code, Message: te.Msg}}, nil
	case errors.Is(err, dispatch.ErrShuttingDown):
		return nil, status.Error(codes.Unavailable, "replica is shutting down")
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		s.log.Debug().Err(err).Str("task_id", req.GetTaskId()).Msg("forwarded task: store unavailable")
		return nil, status.Error(codes.Unavailable, "replica's store is unavailable")
	case errors.Is(err, context.Canceled):
		return nil, status.Error(codes.Canceled, "the forwarding replica cancelled the task")
	case errors.Is(err, context.DeadlineExceeded):
		return nil, status.Error(codes.DeadlineExceeded, "the forwarding replica's deadline passed")
	}
	s.log.Error().Err(err).Str("task_id", req.GetTaskId()).Msg("forwarded task failed")
	return nil, status.Error(codes.Internal, "the replica could not run the task (see its log)")
}

// DeliverGenerated keeps a generated value another replica received for
// the callers waiting here (dispatch.AcceptGenerated). It only delivers:
// the answer is empty whatever became of the value, and nothing of the
// request is logged.
func (s *Service) DeliverGenerated(ctx context.Context, req *delegatev1.DeliverGeneratedRequest) (*delegatev1.DeliverGeneratedResponse, error) {
	if err := s.authorize(ctx); err != nil {
		return nil, err
	}
	err := s.d.AcceptGenerated(req.GetTaskId(), req.GetLeaseId(), req.GetOutcome())
	switch {
	case err == nil:
		return &delegatev1.DeliverGeneratedResponse{}, nil
	case errors.Is(err, dispatch.ErrNotGenerated):
		return nil, status.Error(codes.InvalidArgument, "deliver_generated: "+dispatch.ErrNotGenerated.Error())
	case errors.Is(err, dispatch.ErrNotReplica):
		return nil, status.Error(codes.FailedPrecondition, "deliver_generated: "+dispatch.ErrNotReplica.Error())
	}
	return nil, status.Error(codes.Internal, "deliver_generated failed")
}
