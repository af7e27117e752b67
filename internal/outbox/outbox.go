// Package outbox is a bounded, non-blocking message queue with a single
// consumer: gRPC streams allow one sender at a time, so producers push here
// and the stream's sender goroutine drains it.
//
// The bound is what keeps a peer that does not read its stream from
// growing the queue without end: a Push that finds the outbox full is
// refused, and the outbox overflows: it closes, drops what it held and
// closes the channel Overflow returns, so that the stream's owner ends the
// stream. A stream with a gap in it would lose messages silently; a stream
// that ends is resumed by the peer's reconnect.
package outbox

import (
	"context"
	"errors"
	"sync"
)

// Errors of Push.
var (
	// ErrClosed: the outbox was closed (its stream ended); m was not queued.
	ErrClosed = errors.New("outbox: closed")
	// ErrFull: the outbox held its limit of messages; m was not queued
	// and the outbox overflowed (see Overflow).
	ErrFull = errors.New("outbox: full")
)

// Outbox queues messages of type T. The zero value is not usable; use New.
type Outbox[T any] struct {
	limit int // at most this many messages queued or being sent; 0: no limit

	mu     sync.Mutex // guards the fields below
	q      []T
	closed bool
	// taken is the size of the batch the last Take handed out: its
	// messages are being sent, so they count against the limit until the
	// consumer comes back for more.
	taken int
	// high is the most messages held at once (queued plus taken).
	high int

	notify   chan struct{} // capacity 1: "q is not empty or closed"
	overflew chan struct{} // closed when a Push is refused for lack of room
}

// New returns an empty outbox holding at most limit messages (queued, or
// handed out by Take and not yet followed by the next Take). A limit of 0
// or less is no limit, for producers that bound themselves.
func New[T any](limit int) *Outbox[T] {
	return &Outbox[T]{limit: max(limit, 0), notify: make(chan struct{}, 1), overflew: make(chan struct{})}
}

// Push queues m without blocking. It returns ErrClosed if the outbox is
// closed, and ErrFull if it holds its limit: the outbox then overflows
// (it closes, drops its messages and closes Overflow's channel).
func (o *Outbox[T]) Push(m T) error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return ErrClosed
	}
	if o.limit > 0 && len(o.q)+o.taken >= o.limit {
		o.closed = true
		clear(o.q)
		o.q = nil
		o.mu.Unlock()
		close(o.overflew)
		o.wake()
		return ErrFull
	}
	o.q = append(o.q, m)
	o.high = max(o.high, len(o.q)+o.taken)
	o.mu.Unlock()
	o.wake()
	return nil
}

func (o *Outbox[T]) wake() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// Take waits for messages and returns every queued one, reusing buf. It
// returns nil when ctx is done, when the outbox is closed and empty, or
// when it overflowed.
func (o *Outbox[T]) Take(ctx context.Context, buf []T) []T {
	for {
		o.mu.Lock()
		o.taken = 0 // the previous batch was sent
		if len(o.q) > 0 {
			buf = append(buf[:0], o.q...)
			clear(o.q)
			o.q = o.q[:0]
			o.taken = len(buf)
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

// Overflow returns a channel closed when a Push was refused because the
// outbox was full: the consumer has not kept up, and the stream it feeds
// must end.
func (o *Outbox[T]) Overflow() <-chan struct{} { return o.overflew }

// Limit returns the outbox's limit (0: none).
func (o *Outbox[T]) Limit() int { return o.limit }

// HighWater returns the most messages the outbox has held at once,
// counting a batch handed out by Take until the next Take. It never
// exceeds a non-zero limit.
func (o *Outbox[T]) HighWater() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.high
}
