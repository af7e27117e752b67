package api

// The operator API's one translation of errors to gRPC status: every
// handler returns domain errors (dispatch.TaskError,
// dispatch.ErrTaskNotFound, store sentinels, *config.FieldError,
// dispatch.LimitError, ...) through toStatus, Invalid or connectorErr,
// and nothing else in the API builds a status from an error (the codec
// of the manager uses Invalid too).

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// toStatus translates errors to gRPC status once, at the API boundary.
// Unknown errors become Internal with a generic message; the detail goes
// only to the log.
func (s *Service) toStatus(err error) error {
	var te *dispatch.TaskError
	var reused *dispatch.RequestReusedError
	var le *dispatch.LimitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		return status.Error(GRPCCode(te.Code), te.Msg)
	case errors.As(err, &le):
		return limitStatus(le)
	case errors.Is(err, dispatch.ErrTaskNotFound):
		return status.Error(codes.NotFound, "task not found")
	case errors.Is(err, dispatch.ErrShuttingDown):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		// A store outage (PostgreSQL unreachable or restarting, its
		// manager lock being taken again, a call timeout) or a store
		// closing with the manager: the caller may retry, with the same
		// request_id for an async request, which finds the task if this
		// call stored it after all. The outage is logged where it is
		// noticed, not once per call.
		s.log.Debug().Err(err).Msg("store unavailable")
		return status.Error(codes.Unavailable, "the manager's store is unavailable; retry (an async request with the same request_id)")
	case errors.As(err, &reused):
		st := status.New(codes.AlreadyExists, reused.Error())
		if ds, err := st.WithDetails(&errdetails.ErrorInfo{
			Reason: "REQUEST_ID_REUSED", Domain: "smdelegate",
			Metadata: map[string]string{"request_id": reused.RequestID, "task_id": reused.TaskID},
		}); err == nil {
			st = ds
		}
		return st.Err()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case store.IsUnavailable(err):
		return status.Error(codes.Unavailable, "the manager's store is unavailable; retry (an async request with the same request_id)")
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return s.internal(err)
}

// GRPCCode is the one table from task outcome codes to gRPC codes; the
// CLI reads it back (cmd/smd exitcodes.go) and its tests hold the two
// together.
func GRPCCode(c delegatev1.Code) codes.Code {
	switch c {
	case delegatev1.Code_OK:
		return codes.OK
	case delegatev1.Code_INVALID_ARGUMENT:
		return codes.InvalidArgument
	case delegatev1.Code_NOT_FOUND:
		return codes.NotFound
	case delegatev1.Code_ALREADY_EXISTS:
		return codes.AlreadyExists
	case delegatev1.Code_SCHEDULED_FOR_DELETION:
		return codes.FailedPrecondition
	case delegatev1.Code_ACCESS_DENIED, delegatev1.Code_CREDENTIALS:
		return codes.PermissionDenied
	case delegatev1.Code_THROTTLED:
		return codes.ResourceExhausted
	case delegatev1.Code_UNAVAILABLE, delegatev1.Code_NO_ELIGIBLE_DELEGATE, delegatev1.Code_DELEGATE_LOST:
		return codes.Unavailable
	case delegatev1.Code_TIMEOUT:
		return codes.DeadlineExceeded
	case delegatev1.Code_CANCELLED:
		return codes.Canceled
	case delegatev1.Code_UNSUPPORTED:
		return codes.Unimplemented
	}
	return codes.Internal
}

// internal logs err and returns a generic Internal status.
func (s *Service) internal(err error) error {
	s.log.Error().Err(err).Msg("internal error")
	return status.Error(codes.Internal, "internal error (see the manager log)")
}

// connectorErr translates store errors of a connector write.
func (s *Service) connectorErr(ctx context.Context, c *delegatev1.Connector, err error) error {
	scope := connector.ScopeKey(c.GetScope())
	switch {
	case errors.Is(err, store.ErrExists):
		return status.Errorf(codes.AlreadyExists, "connector %q already exists in scope %s", c.GetIdentifier(), scope)
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "connector %q does not exist in scope %s", c.GetIdentifier(), scope)
	case errors.Is(err, store.ErrDefaultTaken):
		other := "another connector"
		if d, derr := s.cat.DefaultConnector(ctx, scopes.FromProto(c.GetScope())); derr == nil {
			other = fmt.Sprintf("connector %q", d.ID)
		}
		return Invalid(config.Errf("default", "at most one default connector per scope: %s is already the default of %s", other, scope))
	}
	return s.toStatus(err)
}

// Invalid is an InvalidArgument status whose message lists every field
// problem, with a BadRequest detail per field for programs.
func Invalid(err error) error {
	var lines []string
	br := &errdetails.BadRequest{}
	for _, e := range config.Flatten(err) {
		lines = append(lines, e.Error())
		var fe *config.FieldError
		if errors.As(e, &fe) {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: fe.Field, Description: fe.Rule})
		}
	}
	st := status.New(codes.InvalidArgument, strings.Join(lines, "; "))
	if ds, err := st.WithDetails(br); err == nil {
		st = ds
	}
	return st.Err()
}

// outsideScope is the PermissionDenied of an action on scope s outside
// the token's scope.
func outsideScope(ctx context.Context, action string, s *delegatev1.Scope) error {
	return status.Errorf(codes.PermissionDenied,
		"cannot %s scope %s: this operator token is confined to scope %s, and a scoped token acts only at its scope or below it",
		action, connector.ScopeKey(s), tokenScope(ctx).String())
}

// notFound is the NotFound status of a named thing the request refers to
// (a connector, a credential, a delegate) that does not exist.
func notFound(format string, args ...any) error {
	return status.Errorf(codes.NotFound, format, args...)
}

// notReplica is the FailedPrecondition of a cluster call to a manager
// that runs alone.
func notReplica() error {
	return status.Error(codes.FailedPrecondition, "this manager runs alone: it is not a replica of a cluster (cluster.name is not set)")
}

// denied is the PermissionDenied status of an action the token may not take.
func denied(format string, args ...any) error {
	return status.Errorf(codes.PermissionDenied, format, args...)
}

// bindConnector binds c's builtin credential references under the
// request's token (resolve.Bind): a reference with no credential in reach
// is InvalidArgument naming its field.
func (s *Service) bindConnector(ctx context.Context, c *delegatev1.Connector) error {
	err := s.res.Bind(ctx, c)
	var fe *config.FieldError
	if errors.As(err, &fe) {
		return Invalid(err)
	}
	return s.toStatus(err)
}
