package dispatch

import (
	"fmt"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Reasons the manager closes a delegate's stream, the values of
// smd_delegate_streams_closed_total{reason}.
const (
	// CloseOutboxFull: the delegate did not read its stream and the
	// messages waiting for it reached OutboxLimit.
	CloseOutboxFull = "outbox_full"
	// CloseMissedHeartbeats: no heartbeat for dispatch.missed_heartbeats
	// heartbeat intervals.
	CloseMissedHeartbeats = "missed_heartbeats"
	// CloseInvalidMessage: a message broke the protocol (a running list
	// longer than the capacity, a credit out of range, a second Hello).
	CloseInvalidMessage = "invalid_message"
)

// StreamClosedError is why the manager closed a delegate's stream: the
// Close* reason, and a message for the agent and the log. The stream
// handler (manager/stream) turns it into the gRPC status the stream ends
// with.
type StreamClosedError struct {
	Reason string
	Msg    string
}

func (e *StreamClosedError) Error() string { return e.Msg }

// OutboxLimit is how many messages may wait to be sent on the stream of a
// delegate of this capacity; when one more is pushed the manager closes
// the stream (ResourceExhausted) and returns its tasks to the queue.
//
// What a delegate that reads its stream can have waiting at once: its
// Welcome, at most capacity tasks (credit), an ack per result it sent
// (a reconnecting agent resends every unacknowledged one, at most about
// capacity), and cancels: those answering its Hello and one heartbeat
// (each lists at most capacity tasks) and those of deadlines (at most
// what it runs), and that heartbeat's HeartbeatAck. Four times the
// capacity covers all of them at once with
// room to spare, so a delegate that reads never reaches the limit; one
// that does not read is stopped after a few kilobytes per task slot
// instead of growing the manager's memory without end.
func OutboxLimit(capacity int) int { return 4*capacity + 64 }

// eviction is a delegate stream the manager closed, for the log line and
// metric after the lock.
type eviction struct {
	dg       *delegate
	err      *StreamClosedError
	returned int // tasks taken back from it
}

// evict closes dg's stream because it misbehaved (err.Reason, one of
// the Close* constants), and returns the tasks it held to the queue at
// once (on their last attempt, DELEGATE_LOST), as lease expiry would
// later. It returns the error the stream ends with: err, or an earlier
// eviction's.
func (d *Dispatcher) evict(dg *delegate, err *StreamClosedError) *StreamClosedError {
	var acts []action
	d.mu.Lock()
	ev, done := d.evictLocked(dg, err, &acts)
	d.mu.Unlock()
	if !done {
		return dg.evictErr // set before evicted was closed, never after
	}
	d.afterEvict([]eviction{ev})
	d.run(acts)
	return err
}

// evictLocked is evict under the lock; it adds the fate of dg's tasks to
// acts. It reports false if dg was evicted already.
func (d *Dispatcher) evictLocked(dg *delegate, err *StreamClosedError, acts *[]action) (eviction, bool) {
	if dg.evictErr != nil {
		return eviction{}, false
	}
	dg.evictErr = err
	close(dg.evicted)
	dg.out.Close()
	ev := eviction{dg: dg, err: err}
	if d.delegates[dg.name] == dg {
		// Still the registered stream: its tasks are its own. (A stream
		// already replaced by a reconnect leaves them to the new one.)
		delete(d.delegates, dg.name)
		d.leavePoolsLocked(dg)
		d.metrics.delegates.Set(float64(d.connectedLocked()))
		for id, t := range dg.running {
			// A busy task has a store write in flight: a claim, whose
			// Task message then finds the outbox closed (undelivered),
			// or a completion.
			if t.busy || t.state != store.StateLeased || t.holder != dg.name {
				continue
			}
			if t.orderKey != "" {
				// The agent may still be running it: the task keeps its
				// lease (a reconnect resumes it) until the lease and the
				// fence margin have passed (sweepOnce, order.go).
				continue
			}
			*acts = append(*acts, d.lostLocked(t, "delegate stream closed ("+err.Reason+")", "was disconnected ("+err.Reason+")"))
			delete(dg.running, id)
			ev.returned++
		}
	}
	d.notePeakLocked(dg)
	return ev, true
}

// afterEvict counts and logs evictions, one warn line each.
func (d *Dispatcher) afterEvict(evs []eviction) {
	for _, ev := range evs {
		d.metrics.streamsClosed.WithLabelValues(ev.err.Reason).Inc()
		d.log.Warn().Str("delegate", ev.dg.name).Str("reason", ev.err.Reason).Int("tasks_returned", ev.returned).
			Msg("closing delegate stream: " + ev.err.Msg)
	}
}

// sweepSilentLocked evicts the delegates that sent no heartbeat for
// dispatch.missed_heartbeats intervals (lastHeard is set by Hello and
// heartbeats only), adding the fate of their tasks to acts. It also
// records the outbox peak of the live streams.
func (d *Dispatcher) sweepSilentLocked(now time.Time, acts *[]action) []eviction {
	silence := time.Duration(d.cfg.MissedHeartbeats) * d.cfg.HeartbeatInterval.D()
	var evs []eviction
	for _, dg := range d.delegates {
		if dg.internal {
			continue
		}
		d.notePeakLocked(dg)
		if silence <= 0 || now.Sub(dg.lastHeard) <= silence {
			continue
		}
		err := &StreamClosedError{Reason: CloseMissedHeartbeats, Msg: fmt.Sprintf(
			"no heartbeat for %s (dispatch.missed_heartbeats %d × dispatch.heartbeat_interval %s): "+
				"the manager closed this stream and returned its tasks to the queue",
			now.Sub(dg.lastHeard).Round(time.Millisecond), d.cfg.MissedHeartbeats, d.cfg.HeartbeatInterval)}
		if ev, ok := d.evictLocked(dg, err, acts); ok {
			evs = append(evs, ev)
		}
	}
	return evs
}

// notePeakLocked raises smd_delegate_outbox_peak_messages to dg's outbox
// high-water mark.
func (d *Dispatcher) notePeakLocked(dg *delegate) {
	if hw := dg.out.HighWater(); hw > d.outboxPeak {
		d.outboxPeak = hw
		d.metrics.outboxPeak.Set(float64(hw))
	}
}

// undelivered takes back the task of a dispatch whose Task message the
// delegate's outbox refused (its stream ended or overflowed): the agent
// never saw the lease, so the task need not wait for it to expire.
func (d *Dispatcher) undelivered(s send) {
	var acts []action
	d.mu.Lock()
	t := s.t
	if !t.busy && t.state == store.StateLeased && t.leaseID == s.lease.ID {
		if s.to.running[t.id] == t {
			delete(s.to.running, t.id)
			if d.liveLocked(s.to) {
				d.touchLocked(s.to)
			}
		}
		acts = append(acts, d.lostLocked(t, "delegate stream closed before the task was sent", "left before the task was sent"))
	}
	d.mu.Unlock()
	d.run(acts)
}
