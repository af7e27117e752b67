// Package outbox is an unbounded, non-blocking message queue with a single
// consumer: gRPC streams allow one sender at a time, so producers push here
// and the stream's sender goroutine drains it.
package outbox

import (
	"context"
	"sync"
)

// Outbox queues messages of type T. The zero value is not usable; use New.
type Outbox[T any] struct {
	mu     sync.Mutex // guards q and closed
	q      []T
	closed bool
	notify chan struct{} // capacity 1: "q is not empty or closed"
}

// New returns an empty outbox.
func New[T any]() *Outbox[T] { return &Outbox[T]{notify: make(chan struct{}, 1)} }

// Push queues m without blocking; it reports false if the outbox is closed.
func (o *Outbox[T]) Push(m T) bool {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return false
	}
	o.q = append(o.q, m)
	o.mu.Unlock()
	o.wake()
	return true
}

func (o *Outbox[T]) wake() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// Take waits for messages and returns every queued one, reusing buf. It
// returns nil when ctx is done, or when the outbox is closed and empty.
func (o *Outbox[T]) Take(ctx context.Context, buf []T) []T {
	for {
		o.mu.Lock()
		if len(o.q) > 0 {
			buf = append(buf[:0], o.q...)
			clear(o.q)
			o.q = o.q[:0]
			o.mu.Unlock()
			return buf
		}
		closed := o.closed
		o.mu.Unlock()
		if closed {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-o.notify:
		}
	}
}

// Close refuses further pushes; messages already queued are still taken.
func (o *Outbox[T]) Close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.wake()
}
