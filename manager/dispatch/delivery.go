package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Delivery: queues, the choice of a delegate (dispatchTaskLocked,
// dispatchForLocked), the lease, and sending the Task message: at once for
// a sync task, after its claim is durable for an async one (claimAndSend).

// enqueueLocked puts t at the back of its queue.
func (d *Dispatcher) enqueueLocked(t *task, now time.Time) {
	q := d.queues[t.key]
	if q == nil {
		q = &queue{scope: t.scope, selectors: t.selectors}
		d.queues[t.key] = q
	}
	d.seq++
	t.seq = d.seq
	t.state = store.StateQueued
	t.enqueuedAt = now
	t.queueDL = now.Add(d.cfg.QueueTimeout.D())
	t.elem = q.l.PushBack(t)
	d.queued++
	d.metrics.queued.Set(float64(d.queued))
}

// dequeueLocked removes a queued t from its queue.
func (d *Dispatcher) dequeueLocked(t *task) {
	if t.elem == nil {
		return
	}
	q := d.queues[t.key]
	q.l.Remove(t.elem)
	t.elem = nil
	if q.l.Len() == 0 {
		delete(d.queues, t.key)
	}
	d.queued--
	d.metrics.queued.Set(float64(d.queued))
}

// send is a dispatch decided under the lock and delivered after it.
type send struct {
	t     *task
	to    *delegate
	lease store.Lease
	msg   *delegatev1.ManagerMessage
}

// dispatchTaskLocked gives a freshly queued t to the least loaded eligible
// delegate with credit, if there is one and t is at the head of its queue.
func (d *Dispatcher) dispatchTaskLocked(t *task) []send {
	if q := d.queues[t.key]; q == nil || q.l.Front().Value.(*task) != t {
		return nil // older tasks with this scope and these selectors wait for credit first
	}
	best := d.leastLoadedLocked(t.key, t.scope, t.selectors)
	if best == nil {
		return nil
	}
	return []send{d.leaseLocked(t, best)}
}

// dispatchForLocked spends dg's credit on the oldest queued tasks it matches.
func (d *Dispatcher) dispatchForLocked(dg *delegate) []send {
	var sends []send
	for dg.eligible() && d.queued > 0 {
		var pick *task
		for _, q := range d.queues {
			head := q.l.Front().Value.(*task)
			if (pick == nil || head.seq < pick.seq) && dg.matches(q.scope, q.selectors) {
				pick = head
			}
		}
		if pick == nil {
			break
		}
		sends = append(sends, d.leaseLocked(pick, dg))
	}
	return sends
}

// leaseLocked moves t from its queue to dg under a new lease.
func (d *Dispatcher) leaseLocked(t *task, dg *delegate) send {
	now := d.now()
	d.dequeueLocked(t)
	t.attempt++
	t.state = store.StateLeased
	t.leaseID = ids.Random()
	t.holder = dg.name
	t.leaseExpiry = now.Add(d.cfg.LeaseDuration.D())
	t.updatedAt = now
	t.busy = t.async // the claim is persisted before the task is sent
	dg.credit--
	dg.running[t.id] = t
	d.touchLocked(dg)
	d.metrics.dispatchLatency.Observe(now.Sub(t.enqueuedAt).Seconds())
	d.notifyLocked(t)
	return send{
		t:     t,
		to:    dg,
		lease: store.Lease{ID: t.leaseID, Delegate: dg.name, Attempt: t.attempt},
		msg: &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Task{Task: &delegatev1.Task{
			Id: t.id, LeaseId: t.leaseID, Attempt: int32(t.attempt),
			Deadline: timestamp(t.deadline), Payload: t.payload,
		}}},
	}
}

// deliver sends decided dispatches: sync ones at once, async ones after
// their claim is durable, so a lease the agent acts on is never lost.
func (d *Dispatcher) deliver(sends []send) {
	for _, s := range sends {
		if !s.t.async {
			if s.to.out.Push(s.msg) != nil {
				d.undelivered(s)
			}
			continue
		}
		d.spawn(func() { d.claimAndSend(s) })
	}
}

// claimAndSend resolves s's payload and persists its lease, then sends it.
// A failed step is retried with backoff (storefail.go); after a failed
// Claim the stored row decides: the claim took effect (send), it did not
// (try again), or the task was finished or claimed elsewhere meanwhile
// (the lease is given back and the task leaves memory, waking its
// waiters). When the dispatcher closes first the task stays as stored
// for the next start.
func (d *Dispatcher) claimAndSend(s send) {
	ctx := context.Background()
	resolved := !d.needsResolve(s.t.payload)
	for n := 0; ; {
		if !resolved {
			// Credentials and OIDC tokens are resolved at each dispatch,
			// so stored tasks never hold them and retries get fresh ones.
			p, err := d.resolve(ctx, s.t.id, s.t.payload)
			switch {
			case err == nil:
				s.msg.GetTask().Payload, resolved = p, true
			case store.IsUnavailable(err):
				d.storeFailed("read connector", s.t.id, err)
				n++
				if !d.pause(n) {
					return
				}
				continue
			default:
				d.unlease(s)
				d.failErr(s.t, err)
				return
			}
		}
		err := d.store.Claim(ctx, s.t.id, s.lease)
		if err == nil {
			if n > 0 {
				d.storeRecovered()
			}
			break
		}
		if errors.Is(err, store.ErrClosed) {
			return
		}
		st, ok := d.readBack("claim", s.t, err, &n)
		switch {
		case !ok:
			return
		case st == nil:
			d.unlease(s)
			d.release(s.t, "it is no longer in the store")
			return
		case st.State.Final():
			d.unlease(s)
			d.finishStored(s.t, st)
			return
		case st.State == store.StateLeased && st.LeaseID == s.lease.ID:
			// The claim took effect although it reported an error.
		case st.State == store.StateLeased:
			d.unlease(s)
			d.release(s.t, "another manager claimed it")
			return
		case d.ownedElsewhere(st):
			// A replica's claim is fenced by owner: the task went back
			// to the cluster's queue, or to another replica.
			d.unlease(s)
			d.release(s.t, "another replica, or the cluster's queue, has it")
			return
		default: // still queued: the claim did not take effect
			d.storeFailed("claim", s.t.id, err)
			n++
			if !d.pause(n) {
				return
			}
			continue
		}
		break
	}
	d.mu.Lock()
	s.t.busy = false
	// The lease runs from the send, however long the claim took.
	s.t.leaseExpiry = d.now().Add(d.cfg.LeaseDuration.D())
	d.mu.Unlock()
	// A closed outbox means the delegate left in the meantime: the task
	// goes back to the queue at once.
	if s.to.out.Push(s.msg) != nil {
		d.undelivered(s)
	}
}

// unlease gives back a lease the delegate never saw: its credit returns
// and it may take other work. t stays busy for the caller to finish. A
// stream replaced or closed meanwhile gets nothing: a task leased to it
// would never be sent and would lose an attempt.
func (d *Dispatcher) unlease(s send) {
	d.mu.Lock()
	delete(s.to.running, s.t.id)
	if !d.liveLocked(s.to) {
		d.mu.Unlock()
		return
	}
	s.to.credit++
	d.touchLocked(s.to)
	sends := d.dispatchForLocked(s.to)
	d.mu.Unlock()
	d.deliver(sends)
}
