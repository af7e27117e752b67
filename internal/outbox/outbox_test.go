package outbox

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// taken returns what Take hands out without waiting.
func taken(o *Outbox[int], buf []int) []int {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return o.Take(ctx, buf)
}

func overflowed(o *Outbox[int]) bool {
	select {
	case <-o.Overflow():
		return true
	default:
		return false
	}
}

// TestItem5PushBeyondLimitOverflows: a consumer that never takes gets at
// most limit messages queued; the next Push is refused, the outbox closes
// and drops them, and Overflow says so.
func TestItem5PushBeyondLimitOverflows(t *testing.T) {
	t.Parallel()
	o := New[int](3)
	for i := range 3 {
		if err := o.Push(i); err != nil {
			t.Fatalf("Push(%d) = %v, want nil (below the limit)", i, err)
		}
	}
	if overflowed(o) {
		t.Fatal("Overflow closed at the limit, before any Push was refused")
	}
	if err := o.Push(3); !errors.Is(err, ErrFull) {
		t.Fatalf("Push beyond the limit = %v, want ErrFull", err)
	}
	if !overflowed(o) {
		t.Error("Overflow not closed after a refused Push")
	}
	if err := o.Push(4); !errors.Is(err, ErrClosed) {
		t.Errorf("Push after the overflow = %v, want ErrClosed", err)
	}
	if got := taken(o, nil); got != nil {
		t.Errorf("Take after the overflow = %v, want nil (the messages are dropped)", got)
	}
	if got := o.HighWater(); got != 3 {
		t.Errorf("HighWater() = %d, want 3 (the limit)", got)
	}
}

// TestItem5TakenBatchCountsUntilNextTake: messages handed out by Take are
// still being sent, so they count against the limit until the consumer
// comes back: a consumer stuck in Send cannot make room by taking.
func TestItem5TakenBatchCountsUntilNextTake(t *testing.T) {
	t.Parallel()
	o := New[int](4)
	for i := range 3 {
		o.Push(i)
	}
	buf := taken(o, nil) // 3 messages now "being sent"
	if len(buf) != 3 {
		t.Fatalf("Take = %v, want 3 messages", buf)
	}
	if err := o.Push(3); err != nil {
		t.Fatalf("Push with 3 taken and 0 queued, limit 4 = %v, want nil", err)
	}
	if err := o.Push(4); !errors.Is(err, ErrFull) {
		t.Fatalf("Push with 3 taken and 1 queued, limit 4 = %v, want ErrFull", err)
	}
	if hw := o.HighWater(); hw != 4 {
		t.Errorf("HighWater() = %d, want 4", hw)
	}

	// A consumer that keeps up never overflows, whatever it carries in total.
	o = New[int](4)
	for i := range 1000 {
		if err := o.Push(i); err != nil {
			t.Fatalf("Push(%d) with a consumer keeping up = %v", i, err)
		}
		if i%2 == 1 {
			buf = taken(o, buf)
		}
	}
	if hw := o.HighWater(); hw > 4 {
		t.Errorf("HighWater() = %d, above the limit 4", hw)
	}
}

// TestItem5ConcurrentPushersNeverExceedLimit: many producers against a
// slow consumer: the high-water mark never passes the limit, and every
// Push either queued its message or was refused.
func TestItem5ConcurrentPushersNeverExceedLimit(t *testing.T) {
	t.Parallel()
	const limit = 50
	o := New[int](limit)
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if err := o.Push(p*1000 + i); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if !overflowed(o) {
		t.Fatal("1,600 pushes into an outbox of 50 nobody takes from did not overflow")
	}
	if hw := o.HighWater(); hw != limit {
		t.Errorf("HighWater() = %d, want exactly the limit %d", hw, limit)
	}
}

func TestNoLimit(t *testing.T) {
	t.Parallel()
	o := New[int](0)
	for i := range 10000 {
		if err := o.Push(i); err != nil {
			t.Fatalf("Push(%d) into an outbox without a limit = %v", i, err)
		}
	}
	if got := len(taken(o, nil)); got != 10000 {
		t.Errorf("Take = %d messages, want 10000", got)
	}
	o.Close()
	if err := o.Push(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Push after Close = %v, want ErrClosed", err)
	}
	if overflowed(o) {
		t.Error("Close closed the Overflow channel")
	}
}
