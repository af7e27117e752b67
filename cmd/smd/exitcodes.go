package main

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Exit codes, documented in the README ("Exit codes", and the exit of
// each outcome code in "Outcome codes").
const (
	exitOK          = 0
	exitError       = 1   // an error of smd itself, not an answer of the manager
	exitInvalid     = 2   // invalid input: flags, arguments, config, validation
	exitNotFound    = 3   // not found
	exitUnavailable = 4   // retry later: manager unreachable, throttled, no eligible delegate, timeout
	exitDenied      = 5   // token refused or not allowed, AWS access denied or credentials refused
	exitFailed      = 6   // failed with another outcome code (its code is in the output)
	exitUnsupported = 7   // the endpoint (or the delegate, or the manager) does not implement the operation
	exitInterrupted = 130 // the third signal
)

// outcomeExits is THE table from outcome codes to exit codes. Both ways an
// outcome reaches smd go through it: a task's outcome (taskErr) and the
// manager refusing a call with a gRPC status, read as the outcome code it
// stands for (outcomeOfStatus), so a code exits the same either way.
// TestIssue10EveryCodeHasAnExit holds it to the Code enum and
// TestIssue10READMEExitCodes to the README.
var outcomeExits = map[delegatev1.Code]int{
	delegatev1.Code_OK:               exitOK,
	delegatev1.Code_INVALID_ARGUMENT: exitInvalid,
	delegatev1.Code_NOT_FOUND:        exitNotFound,
	// The request conflicts with what exists: neither malformed (2) nor
	// worth retrying (4).
	delegatev1.Code_ALREADY_EXISTS:         exitFailed,
	delegatev1.Code_SCHEDULED_FOR_DELETION: exitFailed,
	delegatev1.Code_ACCESS_DENIED:          exitDenied,
	delegatev1.Code_CREDENTIALS:            exitDenied,
	// Retry later: transient by nature.
	delegatev1.Code_THROTTLED:            exitUnavailable,
	delegatev1.Code_UNAVAILABLE:          exitUnavailable,
	delegatev1.Code_TIMEOUT:              exitUnavailable,
	delegatev1.Code_NO_ELIGIBLE_DELEGATE: exitUnavailable,
	delegatev1.Code_DELEGATE_LOST:        exitUnavailable,
	delegatev1.Code_CANCELLED:            exitFailed,
	delegatev1.Code_INTERNAL:             exitFailed,
	delegatev1.Code_UNSUPPORTED:          exitUnsupported,
}

// exitFor is the exit code of an outcome code; a code this smd does not
// know (from a newer manager) failed with another outcome.
func exitFor(c delegatev1.Code) int {
	if e, ok := outcomeExits[c]; ok {
		return e
	}
	return exitFailed
}

// requestIDReused is the ErrorInfo reason of the manager's AlreadyExists
// for a request id that names another request.
const requestIDReused = "REQUEST_ID_REUSED"

// outcomeOfStatus is the outcome code a gRPC status from the manager
// stands for: the inverse of the manager's api.GRPCCode (manager/api/errors.go)
// for the codes it produces, which also covers its other refusals (catalog
// NotFound, token Unauthenticated, limits ResourceExhausted, shutdown
// Unavailable). Where api.GRPCCode sends several outcome codes as one gRPC
// code (PermissionDenied, Unavailable), they share an exit code.
func outcomeOfStatus(st *status.Status) delegatev1.Code {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == requestIDReused {
			// A request id reused for another request: the invocation
			// is wrong, not the secret.
			return delegatev1.Code_INVALID_ARGUMENT
		}
	}
	switch st.Code() {
	case codes.OK:
		return delegatev1.Code_OK
	case codes.InvalidArgument, codes.OutOfRange:
		return delegatev1.Code_INVALID_ARGUMENT
	case codes.NotFound:
		return delegatev1.Code_NOT_FOUND
	case codes.AlreadyExists:
		return delegatev1.Code_ALREADY_EXISTS
	case codes.FailedPrecondition:
		return delegatev1.Code_SCHEDULED_FOR_DELETION // api.GRPCCode's only FailedPrecondition
	case codes.Unauthenticated:
		return delegatev1.Code_CREDENTIALS // the operator token was refused
	case codes.PermissionDenied:
		return delegatev1.Code_ACCESS_DENIED
	case codes.ResourceExhausted:
		return delegatev1.Code_THROTTLED // AWS throttling, or a limit of the manager
	case codes.Unavailable:
		return delegatev1.Code_UNAVAILABLE
	case codes.DeadlineExceeded:
		return delegatev1.Code_TIMEOUT
	case codes.Canceled:
		return delegatev1.Code_CANCELLED
	case codes.Unimplemented:
		return delegatev1.Code_UNSUPPORTED // also a manager older than smd
	}
	return delegatev1.Code_INTERNAL // Internal, Unknown, Aborted, DataLoss
}

// apiErr maps a gRPC error from the manager to an error with the exit
// code of the outcome it stands for and a readable message. An error that
// already carries an exit code, or that is not a gRPC status, is returned
// as it is.
func apiErr(err error) error {
	var ce *codedError
	if errors.As(err, &ce) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	var e error
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		e = fmt.Errorf("invalid input: %s", msg)
	case codes.AlreadyExists:
		e = fmt.Errorf("already exists: %s", msg)
	case codes.FailedPrecondition:
		e = fmt.Errorf("%s", msg)
	case codes.NotFound:
		e = fmt.Errorf("not found: %s", msg)
	case codes.Unauthenticated, codes.PermissionDenied:
		e = fmt.Errorf("permission denied: %s", msg)
	case codes.Unavailable, codes.DeadlineExceeded:
		e = fmt.Errorf("manager unavailable: %s", msg)
	default:
		e = fmt.Errorf("%s: %s", st.Code(), msg)
	}
	return &codedError{exitFor(outcomeOfStatus(st)), e}
}

// taskErr turns a failed task into an error with the exit code of its
// outcome; nil when it succeeded or has no outcome yet.
func taskErr(info *delegatev1.TaskInfo) error {
	o := info.GetOutcome()
	if o == nil || o.GetCode() == delegatev1.Code_OK {
		return nil
	}
	return &codedError{exitFor(o.GetCode()), fmt.Errorf("task %s failed: %s: %s", info.GetId(), o.GetCode(), o.GetMessage())}
}

// codedError carries an exit code.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func usageErr(err error) error { return &codedError{exitInvalid, err} }

// exitOf is the exit code for err: its own, or exitError.
func exitOf(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return exitError
}

// exitCode prints err, if any, and returns the process's exit code.
func exitCode(err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, "smd:", err)
	}
	return exitOf(err)
}
