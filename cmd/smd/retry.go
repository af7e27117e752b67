package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
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

// retryable reports whether a call that failed with err may be sent
// again and, when the manager said how long to wait first, that wait.
// stored says whether the call is a stored submission under a request id.
//
// Only failures that leave the outcome unknown, and that the manager
// coming back may cure, are retried for stored submissions:
//
//   - Unavailable: the manager was unreachable, restarting or stopping, or
//     the connection broke during the call (the task may be stored);
//   - DeadlineExceeded: an attempt ran out of time (likewise).
//
// Any call, stored or not, is retried after a refusal by the manager's
// rate limit (limits.submit_rate): ResourceExhausted with a RetryInfo
// detail, whose delay is the wait. The manager refused it before doing
// anything, so sending it again is always safe.
//
// Every other code is the manager's answer and is never retried:
// InvalidArgument, NotFound, FailedPrecondition (fix the request),
// Unauthenticated, PermissionDenied (fix the token), AlreadyExists (the
// request id was used for another request), ResourceExhausted without
// RetryInfo (a scope at its limit of unfinished tasks or payload bytes,
// which only finishing tasks cures, or AWS throttling a task: THROTTLED),
// Internal, and Canceled (the operator interrupted smd).
func retryable(err error, stored bool) (wait time.Duration, ok bool) {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return 0, stored
	case codes.ResourceExhausted:
		for _, d := range status.Convert(err).Details() {
			if ri, isRetry := d.(*errdetails.RetryInfo); isRetry {
				return max(ri.GetRetryDelay().AsDuration(), 0), true
			}
		}
	}
	return 0, false
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
	return p.retry(ctx, stderr, requestID, wait, call)
}

// send calls call, a call that is not stored (a read, a sync ping, a
// connection test), again only when the manager's rate limit refused it,
// after the wait it asked for, within p.window.
func (p retryPolicy) send(ctx context.Context, stderr io.Writer,
	call func(ctx context.Context) (*delegatev1.TaskInfo, error)) (*delegatev1.TaskInfo, error) {
	return p.retry(ctx, stderr, "", true, call)
}

// retry is submit (requestID set) and send (requestID empty).
func (p retryPolicy) retry(ctx context.Context, stderr io.Writer, requestID string, wait bool,
	call func(ctx context.Context) (*delegatev1.TaskInfo, error)) (*delegatev1.TaskInfo, error) {
	var firstFailure time.Time
	for n := 1; ; n++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if !wait {
			actx, cancel = context.WithTimeout(ctx, p.attemptTimeout)
		}
		info, err := call(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return info, err
		}
		told, ok := retryable(err, requestID != "")
		if !ok {
			return info, err
		}
		if firstFailure.IsZero() {
			firstFailure = time.Now()
		}
		pause := p.pause(n)
		throttled := status.Code(err) == codes.ResourceExhausted
		if throttled {
			// As long as the manager asked, and a little more, so that
			// callers refused together do not come back together.
			pause = told + rand.N(told/10+time.Millisecond)
		}
		if time.Since(firstFailure)+pause > p.window {
			// The exit code of the last answer (a rate limit is
			// THROTTLED, exit 4, like an outage), with what to do next.
			last := apiErr(err)
			if throttled || requestID == "" {
				return nil, &codedError{exitOf(last), fmt.Errorf("%v; gave up after retrying for %s", last, p.window)}
			}
			return nil, &codedError{exitOf(last), fmt.Errorf(
				"%v; gave up after retrying for %s. The change may have been made: run the same command with --request-id %s to get its task instead of making another",
				last, p.window, requestID)}
		}
		if requestID != "" {
			fmt.Fprintf(stderr, "smd: %v; retrying in %s with request id %s\n", apiErr(err), pause.Round(time.Millisecond), requestID)
		} else {
			fmt.Fprintf(stderr, "smd: %v; retrying in %s\n", apiErr(err), pause.Round(time.Millisecond))
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, err
		}
	}
}
