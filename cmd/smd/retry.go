package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/ids"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// A submission that carries a request id (secret changes, async pings) is
// safe to send again: the manager returns the task the first call made,
// if it made one, instead of a second. So smd retries one whose fate is
// unknown, with the same id, and `smd secret create --wait` survives a
// manager restart or a dropped connection.

// retryPolicy says how submit retries.
type retryPolicy struct {
	// window is how long after the first failure submit keeps trying.
	window time.Duration
	// first and max bound the pause between attempts (exponential,
	// jittered).
	first, max time.Duration
	// attemptTimeout bounds one attempt of a submission that does not
	// wait for its task: the manager answers as soon as the task is
	// stored, so an attempt that hangs this long (a half-open
	// connection) is given up and retried. An attempt that waits for its
	// task has no bound of its own: the task's deadline ends it.
	attemptTimeout time.Duration
}

// defaultRetry is smd's policy (README, CLI reference).
var defaultRetry = retryPolicy{window: 30 * time.Second, first: 250 * time.Millisecond, max: 4 * time.Second, attemptTimeout: 15 * time.Second}

// newRequestID returns the request id of one invocation.
func newRequestID() string { return "smd-" + ids.New() }

// retryable reports whether a submission that failed with err may be sent
// again under its request id. Only failures that leave the outcome
// unknown, and that the manager coming back may cure, are:
//
//   - Unavailable: the manager was unreachable, restarting or stopping, or
//     the connection broke during the call (the task may be stored);
//   - DeadlineExceeded: an attempt ran out of time (likewise).
//
// Every other code is the manager's answer and is never retried:
// InvalidArgument, NotFound, FailedPrecondition (fix the request),
// Unauthenticated, PermissionDenied (fix the token), AlreadyExists (the
// request id was used for another request), Internal, and Canceled (the
// operator interrupted smd).
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// pause returns the pause before retry n (1, 2, ...): exponential from
// first, capped at max, with equal jitter.
func (p retryPolicy) pause(n int) time.Duration {
	d := p.max
	if n < 16 {
		d = min(p.max, p.first<<(n-1))
	}
	return d/2 + rand.N(d/2+1)
}

// submit calls call until it succeeds, fails with an error retryable does
// not accept, or p.window has passed since the first failure. Every
// attempt sends the same request, and so the same request id. wait says
// whether the call waits for the task (no attempt timeout). Retries are
// noted on stderr.
func (p retryPolicy) submit(ctx context.Context, stderr io.Writer, requestID string, wait bool,
	call func(ctx context.Context) (*delegatev1.TaskInfo, error)) (*delegatev1.TaskInfo, error) {
	var firstFailure time.Time
	for n := 1; ; n++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if !wait {
			actx, cancel = context.WithTimeout(ctx, p.attemptTimeout)
		}
		info, err := call(actx)
		cancel()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return info, err
		}
		if firstFailure.IsZero() {
			firstFailure = time.Now()
		}
		pause := p.pause(n)
		if time.Since(firstFailure)+pause > p.window {
			return nil, &codedError{exitUnavailable, fmt.Errorf(
				"%v; gave up after retrying for %s. The change may have been made: run the same command with --request-id %s to get its task instead of making another",
				apiErr(err), p.window, requestID)}
		}
		fmt.Fprintf(stderr, "smd: %v; retrying in %s with request id %s\n", apiErr(err), pause.Round(time.Millisecond), requestID)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, err
		}
	}
}
