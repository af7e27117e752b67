package api

import (
	"context"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/manager/dispatch"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// submitMethods are the calls that make a task, the ones
// limits.submit_rate counts.
var submitMethods = map[string]bool{
	delegatev1.ManagerService_Ping_FullMethodName:          true,
	delegatev1.ManagerService_Secret_FullMethodName:        true,
	delegatev1.ManagerService_TestConnector_FullMethodName: true,
}

// RateLimit is the interceptor of limits.submit_rate, chained after
// authentication: a call that makes a task takes a token from its
// operator token's bucket (l.Allow) before the handler runs, or is
// refused ResourceExhausted.
func RateLimit(l *dispatch.Limiter) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if l != nil && submitMethods[info.FullMethod] {
			if err := l.Allow(ctx); err != nil {
				if le, ok := err.(*dispatch.LimitError); ok {
					return nil, limitStatus(le)
				}
				return nil, err
			}
		}
		return h(ctx, req)
	}
}

// limitStatus is a limit's refusal: ResourceExhausted with a
// QuotaFailure naming the limit, and RetryInfo when waiting cures it.
func limitStatus(e *dispatch.LimitError) error {
	st := status.New(codes.ResourceExhausted, e.Msg)
	details := []protoadapt.MessageV1{&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
		Subject: e.Subject, Description: "limits." + e.Limit,
	}}}}
	if e.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	if ds, err := st.WithDetails(details...); err == nil {
		st = ds
	}
	return st.Err()
}
