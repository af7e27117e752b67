package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/manager/store"
)

// TestLifetimeClose: Close waits for a call in flight, runs release once,
// refuses calls after it, and a second Close is ErrClosed.
func TestLifetimeClose(t *testing.T) {
	t.Parallel()
	var l store.Lifetime
	if err := l.Enter(); err != nil {
		t.Fatalf("Enter() = %v, want nil", err)
	}
	released := make(chan struct{})
	closed := make(chan error, 1)
	go func() {
		closed <- l.Close(func() error { close(released); return nil })
	}()
	select {
	case <-released:
		t.Fatal("Close released the database while a call was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	l.Exit()
	if err := <-closed; err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if err := l.Enter(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Enter() after Close = %v, want ErrClosed", err)
	}
	if !l.Closed() {
		t.Errorf("Closed() = false after Close")
	}
	if err := l.Close(func() error { t.Error("second Close called release"); return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close() = %v, want ErrClosed", err)
	}
}

// TestLifetimePrune: the loop prunes at once with a cutoff of keep ago,
// and Close cancels a prune in progress and waits for the loop.
func TestLifetimePrune(t *testing.T) {
	t.Parallel()
	var l store.Lifetime
	keep := time.Hour
	cutoffs := make(chan time.Time, 1)
	exited := make(chan struct{})
	l.StartPrune(zerolog.Nop(), keep, time.Hour, func(ctx context.Context, cutoff time.Time) (int, error) {
		defer close(exited)
		cutoffs <- cutoff
		<-ctx.Done() // a long prune: only Close ends it
		return 0, ctx.Err()
	})
	cutoff := <-cutoffs
	if ago := time.Since(cutoff); ago < keep || ago > keep+time.Minute {
		t.Errorf("first prune's cutoff is %v ago, want %v", ago, keep)
	}
	if err := l.Close(func() error {
		select {
		case <-exited:
		default:
			t.Error("release ran before the prune loop returned")
		}
		return nil
	}); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
}
