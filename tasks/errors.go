package tasks

import (
	"errors"
	"fmt"
	"strings"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Sentinel errors, one per task outcome code. Every *Error unwraps to the
// sentinel of its code, so callers test with errors.Is(err, tasks.ErrNotFound).
var (
	// ErrInvalidArgument: the task or the connector is malformed; fix it and
	// resubmit. Never retryable.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the secret (or the JSON key in it) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a create named a secret that exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrScheduledForDeletion: the secret is scheduled for deletion; restore
	// it or wait for the deletion date.
	ErrScheduledForDeletion = errors.New("scheduled for deletion")
	// ErrAccessDenied: the connector's identity lacks an IAM permission.
	ErrAccessDenied = errors.New("access denied")
	// ErrThrottled: AWS throttled the call even after the SDK's retries.
	// Retryable.
	ErrThrottled = errors.New("throttled")
	// ErrCredentials: the connector's credentials could not be obtained or
	// were rejected.
	ErrCredentials = errors.New("credentials")
	// ErrUnavailable: AWS answered 5xx or could not be reached. Retryable.
	ErrUnavailable = errors.New("unavailable")
	// ErrTimeout: the task's deadline passed.
	ErrTimeout = errors.New("timeout")
	// ErrCancelled: the task was cancelled.
	ErrCancelled = errors.New("cancelled")
	// ErrUnsupported: the endpoint does not implement the operation
	// (InvalidAction, UnknownOperationException, NotImplemented, HTTP 501).
	// Never retryable: the same endpoint answers the same.
	ErrUnsupported = errors.New("unsupported")
	// ErrInternal: anything else. An AWS error code the table does not
	// know is named in the message; other detail is only in the log.
	ErrInternal = errors.New("internal error")

	// ErrNotManaged refines ErrInvalidArgument: a change to an existing
	// secret that lacks the connector's managed-by tag, refused because the
	// task said neither adopt nor force. Nothing was changed at AWS.
	ErrNotManaged = errors.New("secret not managed by smdelegate")
)

var codeSentinels = map[delegatev1.Code]error{
	delegatev1.Code_INVALID_ARGUMENT:       ErrInvalidArgument,
	delegatev1.Code_NOT_FOUND:              ErrNotFound,
	delegatev1.Code_ALREADY_EXISTS:         ErrAlreadyExists,
	delegatev1.Code_SCHEDULED_FOR_DELETION: ErrScheduledForDeletion,
	delegatev1.Code_ACCESS_DENIED:          ErrAccessDenied,
	delegatev1.Code_THROTTLED:              ErrThrottled,
	delegatev1.Code_CREDENTIALS:            ErrCredentials,
	delegatev1.Code_UNAVAILABLE:            ErrUnavailable,
	delegatev1.Code_TIMEOUT:                ErrTimeout,
	delegatev1.Code_CANCELLED:              ErrCancelled,
	delegatev1.Code_UNSUPPORTED:            ErrUnsupported,
	delegatev1.Code_INTERNAL:               ErrInternal,
}

// Error is a task failure with its outcome code. Msg is safe to show to the
// caller: it never holds a secret value, credential, token or signature.
type Error struct {
	// Op is the task operation, e.g. "get".
	Op        string
	Code      delegatev1.Code
	Msg       string
	Retryable bool
	// Reason, when set, is a sentinel that refines Code (ErrNotManaged).
	Reason error
	// Field, set on an INVALID_ARGUMENT about one field of the task,
	// names it as the operation's proto field does ("name",
	// "generate.length", "tags[\"team\"]"); Msg is then "Field: rule".
	Field string
}

// Error returns "op: message", safe to show.
func (e *Error) Error() string {
	if e.Op == "" {
		return e.Msg
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Msg)
}

// Unwrap returns the sentinel of the error's code.
func (e *Error) Unwrap() error {
	if s, ok := codeSentinels[e.Code]; ok {
		return s
	}
	return ErrInternal
}

// Is reports whether target is the error's Reason, so that
// errors.Is(err, ErrNotManaged) holds beside errors.Is(err, ErrInvalidArgument).
func (e *Error) Is(target error) bool { return e.Reason != nil && target == e.Reason }

func newError(code delegatev1.Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// invalid is an INVALID_ARGUMENT naming the field and the rule:
// invalid("name", "must be 1-512 characters ...").
func invalid(field, rule string) *Error {
	return &Error{Code: delegatev1.Code_INVALID_ARGUMENT, Msg: field + ": " + rule, Field: field}
}

// Rule is the rule of an error about one field (Msg without "Field: "),
// or Msg.
func (e *Error) Rule() string {
	if e.Field != "" {
		if r, ok := strings.CutPrefix(e.Msg, e.Field+": "); ok {
			return r
		}
	}
	return e.Msg
}
