package main

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// managerStatus is the gRPC code the manager answers for each outcome
// code when it refuses a call with it (manager grpcCode, which
// TestIssue10GRPCCodeCoversEveryCode holds to the enum).
var managerStatus = map[delegatev1.Code]codes.Code{
	delegatev1.Code_INVALID_ARGUMENT:       codes.InvalidArgument,
	delegatev1.Code_NOT_FOUND:              codes.NotFound,
	delegatev1.Code_ALREADY_EXISTS:         codes.AlreadyExists,
	delegatev1.Code_SCHEDULED_FOR_DELETION: codes.FailedPrecondition,
	delegatev1.Code_ACCESS_DENIED:          codes.PermissionDenied,
	delegatev1.Code_CREDENTIALS:            codes.PermissionDenied,
	delegatev1.Code_THROTTLED:              codes.ResourceExhausted,
	delegatev1.Code_UNAVAILABLE:            codes.Unavailable,
	delegatev1.Code_NO_ELIGIBLE_DELEGATE:   codes.Unavailable,
	delegatev1.Code_DELEGATE_LOST:          codes.Unavailable,
	delegatev1.Code_TIMEOUT:                codes.DeadlineExceeded,
	delegatev1.Code_CANCELLED:              codes.Canceled,
	delegatev1.Code_INTERNAL:               codes.Internal,
	delegatev1.Code_UNSUPPORTED:            codes.Unimplemented,
}

// exitOfErr is the exit code smd ends with for err.
func exitOfErr(err error) int {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	if err == nil {
		return exitOK
	}
	return exitError
}

// TestIssue10SameExitOnBothPaths: an outcome code gives one exit code,
// whether it comes as a task's outcome (a sync task that ran, task watch)
// or as the manager's gRPC refusal of the call (the dispatcher failed the
// task before it ran, a limit, a store outage).
func TestIssue10SameExitOnBothPaths(t *testing.T) {
	t.Parallel()
	for c, gc := range managerStatus {
		info := &delegatev1.TaskInfo{Id: "t1", Outcome: &delegatev1.Outcome{Code: c, Message: "m"}}
		asOutcome := exitOfErr(taskErr(info))
		asStatus := exitOfErr(apiErr(status.Error(gc, "m")))
		if asOutcome != asStatus {
			t.Errorf("%v: exit %d as a task outcome, %d as the manager's %v", c, asOutcome, asStatus, gc)
		}
	}
}

// TestIssue10RetryGivesUpOnRateLimit: a call the manager's rate limit kept
// refusing until smd gave up ends like THROTTLED (exit 4: retry later),
// not with the generic exit 1; a stored submission likewise.
func TestIssue10RetryGivesUpOnRateLimit(t *testing.T) {
	t.Parallel()
	st, err := status.New(codes.ResourceExhausted, "limits.submit_rate").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(fastRetry.window / 4)})
	if err != nil {
		t.Fatal(err)
	}
	for _, requestID := range []string{"", "rid-10"} {
		s := &script{errs: make([]error, 100)}
		for i := range s.errs {
			s.errs[i] = st.Err()
		}
		_, err := fastRetry.retry(t.Context(), &bytes.Buffer{}, requestID, true, s.call)
		if got := exitOfErr(err); got != exitUnavailable {
			t.Errorf("request id %q: gave up with %v: exit %d, want %d", requestID, err, got, exitUnavailable)
		}
	}
}
