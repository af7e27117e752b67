package manager

import (
	"context"
	"sync"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// outbox queues messages for one delegate stream. gRPC streams allow one
// sender at a time, so the dispatcher pushes here without blocking and the
// stream's sender goroutine drains it.
type outbox struct {
	mu     sync.Mutex // guards q and closed
	q      []*delegatev1.ManagerMessage
	closed bool
	notify chan struct{} // capacity 1: "q is not empty"
}

func newOutbox() *outbox { return &outbox{notify: make(chan struct{}, 1)} }

// push queues m; it reports false if the outbox is closed (the stream is gone).
func (o *outbox) push(m *delegatev1.ManagerMessage) bool {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return false
	}
	o.q = append(o.q, m)
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
	return true
}

// take waits for messages and returns all queued ones; nil when ctx is done
// or the outbox is closed and empty.
func (o *outbox) take(ctx context.Context, buf []*delegatev1.ManagerMessage) []*delegatev1.ManagerMessage {
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

// close stops the outbox; queued messages are still delivered by take.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
}
