package dispatch

import (
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/identity"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Session is a connected delegate's stream as the Connect handler sees
// it: what the agent's messages do to the dispatcher, and the ways the
// stream ends. It is all the handler holds of a delegate.
type Session struct {
	d  *Dispatcher
	dg *delegate
}

// Connect registers the stream of a delegate that sent Hello h, with the
// identity of its token, and the outbox its messages go through; see
// connect (registry.go). ErrShuttingDown, ErrNameInUse, a
// *config.FieldError (a tag) or a refusal of the token's rules.
func (d *Dispatcher) Connect(h *delegatev1.Hello, id identity.Identity, out *outbox.Outbox[*delegatev1.ManagerMessage]) (*Session, error) {
	dg, err := d.connect(h, id, out)
	if err != nil {
		return nil, err
	}
	if d.cl != nil {
		d.adoptListed(dg) // the tasks another replica dispatched to it
	}
	return &Session{d: d, dg: dg}, nil
}

// Name is the delegate's name.
func (s *Session) Name() string { return s.dg.name }

// Capacity is the capacity the delegate announced in its Hello.
func (s *Session) Capacity() int { return s.dg.capacity }

// Credit grants n more tasks.
func (s *Session) Credit(n int) { s.d.credit(s.dg, n) }

// Heartbeat renews the leases of the tasks running lists.
func (s *Session) Heartbeat(seq uint64, running []*delegatev1.RunningTask) {
	s.d.heartbeat(s.dg, seq, running)
}

// Result records a task's result and acks it.
func (s *Session) Result(r *delegatev1.TaskResult) { s.d.result(s.dg, r) }

// Drain takes no new task for the delegate.
func (s *Session) Drain() { s.d.drain(s.dg) }

// Disconnect unregisters the stream (once it ended) and closes its outbox.
func (s *Session) Disconnect() { s.d.disconnect(s.dg) }

// Evict closes the stream because the delegate misbehaved (reason is a
// Close* value, msg says why) and returns why the stream ends: this
// eviction, or an earlier one.
func (s *Session) Evict(reason, msg string) *StreamClosedError {
	return s.d.evict(s.dg, &StreamClosedError{Reason: reason, Msg: msg})
}

// Evicted is closed when the manager closed the stream; EvictErr is then
// the error to end it with.
func (s *Session) Evicted() <-chan struct{} { return s.dg.evicted }

// EvictErr is the error of an eviction, set before Evicted is closed.
func (s *Session) EvictErr() *StreamClosedError { return s.dg.evictErr }

// Replaced is closed when a newer stream of the same agent process took
// this one's place.
func (s *Session) Replaced() <-chan struct{} { return s.dg.kicked }
