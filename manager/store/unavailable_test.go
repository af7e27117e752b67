package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/smdelegate/smdelegate/manager/store"
)

// TestIssue10IsUnavailable: transient store failures (marked, call
// timeouts, network errors) are told from permanent ones (the sentinels,
// anything else), through wrapping, and Unavailable keeps the message
// and the cause.
func TestIssue10IsUnavailable(t *testing.T) {
	t.Parallel()
	cause := errors.New("connection refused")
	marked := store.Unavailable(cause)
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"marked", marked, true},
		{"marked and wrapped", fmt.Errorf("claim: %w", marked), true},
		{"call timeout", fmt.Errorf("get: %w", context.DeadlineExceeded), true},
		{"network error", &net.OpError{Op: "dial", Err: cause}, true},
		{"connection cut", io.ErrUnexpectedEOF, true},
		{"not found", store.ErrNotFound, false},
		{"conflict", fmt.Errorf("claim: %w", store.ErrConflict), false},
		{"closed", store.ErrClosed, false},
		{"caller cancelled", context.Canceled, false},
		{"other", errors.New("bad row"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := store.IsUnavailable(tc.err); got != tc.want {
				t.Errorf("IsUnavailable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
	if marked.Error() != cause.Error() || !errors.Is(marked, cause) || !errors.Is(marked, store.ErrUnavailable) {
		t.Errorf("Unavailable(%v) = %q: want its message, wrapping it and ErrUnavailable", cause, marked)
	}
	if store.Unavailable(nil) != nil {
		t.Errorf("Unavailable(nil) != nil")
	}
}
