package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// fastRetry is defaultRetry shrunk for tests.
var fastRetry = retryPolicy{window: 300 * time.Millisecond, first: 5 * time.Millisecond, max: 20 * time.Millisecond, attemptTimeout: time.Second}

// script is a submission that fails with errs in turn, then succeeds.
type script struct {
	errs      []error
	calls     int
	deadlines []bool // whether each attempt's context had a deadline
}

func (s *script) call(ctx context.Context) (*delegatev1.TaskInfo, error) {
	_, ok := ctx.Deadline()
	s.deadlines = append(s.deadlines, ok)
	s.calls++
	if s.calls <= len(s.errs) {
		return nil, s.errs[s.calls-1]
	}
	return &delegatev1.TaskInfo{Id: "task-1"}, nil
}

func TestRetrySubmit(t *testing.T) {
	t.Parallel()
	unavailable := status.Error(codes.Unavailable, "connection reset")
	tests := []struct {
		name      string
		errs      []error
		wantCalls int
		wantCode  codes.Code // of the error returned; OK: success
	}{
		{name: "first attempt", wantCalls: 1},
		{name: "unavailable, then answered", errs: []error{unavailable, unavailable}, wantCalls: 3},
		{name: "deadline exceeded, then answered", errs: []error{status.Error(codes.DeadlineExceeded, "slow")}, wantCalls: 2},
		{name: "already exists is an answer", errs: []error{status.Error(codes.AlreadyExists, "request_id reused")}, wantCalls: 1, wantCode: codes.AlreadyExists},
		{name: "invalid argument is an answer", errs: []error{status.Error(codes.InvalidArgument, "request_id: bad")}, wantCalls: 1, wantCode: codes.InvalidArgument},
		{name: "permission denied is an answer", errs: []error{status.Error(codes.PermissionDenied, "no")}, wantCalls: 1, wantCode: codes.PermissionDenied},
		{name: "cancelled is not retried", errs: []error{status.Error(codes.Canceled, "interrupted")}, wantCalls: 1, wantCode: codes.Canceled},
		{name: "unavailable, then an answer", errs: []error{unavailable, status.Error(codes.Internal, "boom")}, wantCalls: 2, wantCode: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &script{errs: tt.errs}
			var stderr bytes.Buffer
			info, err := fastRetry.submit(t.Context(), &stderr, "rid-1", false, s.call)
			if s.calls != tt.wantCalls {
				t.Errorf("submit made %d attempts, want %d", s.calls, tt.wantCalls)
			}
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("submit() = %v, %v; want code %v", info, err, tt.wantCode)
			}
			if err == nil && info.GetId() != "task-1" {
				t.Errorf("submit() = %v, want the answer of the last attempt", info)
			}
			if retries := strings.Count(stderr.String(), "retrying in "); retries != tt.wantCalls-1 ||
				(retries > 0 && !strings.Contains(stderr.String(), "with request id rid-1")) {
				t.Errorf("stderr:\n%s\nwant one line per retry naming request id rid-1", stderr.String())
			}
		})
	}
}

func TestRetryGivesUp(t *testing.T) {
	t.Parallel()
	s := &script{errs: make([]error, 1000)}
	for i := range s.errs {
		s.errs[i] = status.Error(codes.Unavailable, "connection refused")
	}
	start := time.Now()
	_, err := fastRetry.submit(t.Context(), &bytes.Buffer{}, "rid-2", true, s.call)
	if took := time.Since(start); took > fastRetry.window+time.Second {
		t.Errorf("submit took %s, want about the %s window", took, fastRetry.window)
	}
	var ce *codedError
	if !errors.As(err, &ce) || ce.code != exitUnavailable {
		t.Fatalf("submit() = %v, want an exit %d error", err, exitUnavailable)
	}
	if msg := err.Error(); !strings.Contains(msg, "--request-id rid-2") || !strings.Contains(msg, "manager unavailable") {
		t.Errorf("submit() error %q: want the manager's error and how to pick the task up (--request-id rid-2)", msg)
	}
	if s.calls < 3 {
		t.Errorf("submit made %d attempts in %s, want several", s.calls, fastRetry.window)
	}
	// A waiting submission's attempts run without a deadline of their own.
	for i, d := range s.deadlines {
		if d {
			t.Errorf("attempt %d of a waiting submission had a deadline", i+1)
		}
	}
}

func TestRetryAttemptTimeout(t *testing.T) {
	t.Parallel()
	s := &script{}
	if _, err := fastRetry.submit(t.Context(), &bytes.Buffer{}, "rid-3", false, s.call); err != nil {
		t.Fatal(err)
	}
	if len(s.deadlines) != 1 || !s.deadlines[0] {
		t.Errorf("attempt deadlines = %v, want one attempt with a deadline (async submissions)", s.deadlines)
	}
}

func TestRetryStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	p := fastRetry
	p.first, p.max, p.window = time.Minute, time.Minute, time.Hour
	s := &script{errs: []error{status.Error(codes.Unavailable, "down")}}
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	if _, err := p.submit(ctx, &bytes.Buffer{}, "rid-4", false, s.call); status.Code(err) != codes.Unavailable {
		t.Errorf("submit() = %v, want the last attempt's error", err)
	}
	if took := time.Since(start); took > 5*time.Second || s.calls != 1 {
		t.Errorf("submit took %s and %d attempts after its context ended, want it to stop during the pause", took, s.calls)
	}
}

func TestRetryPause(t *testing.T) {
	t.Parallel()
	for n := 1; n < 40; n++ {
		want := min(defaultRetry.max, defaultRetry.first<<min(n-1, 20))
		if got := defaultRetry.pause(n); got < want/2 || got > want {
			t.Errorf("pause(%d) = %s, want between %s and %s", n, got, want/2, want)
		}
	}
}
