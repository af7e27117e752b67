package dispatch

import (
	"context"
	"errors"

	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Adoption (cluster.go): a delegate that reconnects to this replica with
// tasks another replica dispatched to it keeps them. Its Hello lists
// them; those not in memory here are adopted (store.Cluster.Adopt: this
// replica becomes their owner and their leases are renewed) and held as
// leased to it, never dispatched again. A result for a task not in
// memory (the agent sends the results it has no ack for again on every
// new stream) is adopted the same way and then completed here.
//
// Only a lease the delegate may hold is adopted: the task must be leased
// under that lease and of a scope the delegate's token serves (read
// before adopting, so that a delegate naming another tenant's lease
// changes nothing). Anything else is cancelled, as a single manager
// cancels a lease it does not hold.

// adoptListed adopts the tasks dg's Hello listed that memory did not
// hold (connect left them in dg.adopt), for as long as a store call may
// take; those not adopted are cancelled: the agent stops them, and the
// store's lease expiry gives them to another delegate.
func (d *Dispatcher) adoptListed(dg *delegate) {
	d.mu.Lock()
	refs := dg.adopt
	dg.adopt = nil
	d.mu.Unlock()
	if len(refs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterCallTimeout)
	defer cancel()
	adopted, err := d.adopt(ctx, dg, refs)
	if err != nil {
		d.storeFailed("adopt", refs[0].TaskID, err)
	}
	d.mu.Lock()
	for _, t := range adopted {
		if d.liveLocked(dg) {
			dg.running[t.id] = t
		}
	}
	if d.liveLocked(dg) {
		d.touchLocked(dg)
	}
	d.mu.Unlock()
	for _, r := range refs {
		if !containsTask(adopted, r.TaskID) {
			dg.out.Push(cancelMsg(r.TaskID, r.LeaseID, "lease is no longer valid"))
		}
	}
	if len(adopted) > 0 {
		d.log.Info().Str("delegate", dg.name).Int("tasks", len(adopted)).Msg("adopted the running tasks of a delegate that reconnected from another replica")
	}
}

func containsTask(ts []*task, id string) bool {
	for _, t := range ts {
		if t.id == id {
			return true
		}
	}
	return false
}

// adopt adopts, for dg, those of refs that are leased under the listed
// lease to a task of a scope dg serves, and puts them in memory as
// leased to dg (not in dg.running: the caller decides). A task memory
// holds already is left alone.
func (d *Dispatcher) adopt(ctx context.Context, dg *delegate, refs []store.LeaseRef) ([]*task, error) {
	c := d.cl
	var ok []store.LeaseRef
	for _, r := range refs {
		st, err := d.store.GetTask(ctx, r.TaskID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if st.State == store.StateLeased && st.LeaseID == r.LeaseID && scopes.Serves(dg.scope, st.Scope) {
			ok = append(ok, r)
		}
	}
	if len(ok) == 0 {
		return nil, nil
	}
	ts, err := c.st.Adopt(ctx, c.replica, ok, d.cfg.LeaseDuration.D())
	if err != nil {
		return nil, err
	}
	var out []*task
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, st := range ts {
		if d.tasks[st.ID] != nil {
			continue
		}
		p, err := d.openPayload(st.ID, st.Payload)
		if err != nil {
			d.log.Error().Err(err).Str("task_id", st.ID).Msg("adopted task has an unreadable payload (is the master key the same on every replica?); its lease lapses")
			continue
		}
		t := d.takeAwaitedLocked(st.ID)
		if t == nil {
			t = &task{changed: make(chan struct{}), done: make(chan struct{})}
		}
		d.admitStoredLocked(t, st, p)
		t.holder = dg.name
		d.notifyLocked(t)
		out = append(out, t)
	}
	return out, nil
}

// adoptResult handles result r from dg for a task memory does not hold:
// adopted (as its Hello's tasks are), it is completed here like any
// result; not adoptable, it is a stale result. A store failure is
// retried with backoff: the result is never refused because the store
// failed (the agent keeps it until acknowledged).
func (d *Dispatcher) adoptResult(dg *delegate, r *delegatev1.TaskResult) {
	ref := store.LeaseRef{TaskID: r.GetTaskId(), LeaseID: r.GetLeaseId()}
	for n := 0; ; {
		ctx, cancel := context.WithTimeout(context.Background(), clusterCallTimeout)
		adopted, err := d.adopt(ctx, dg, []store.LeaseRef{ref})
		cancel()
		if err == nil {
			if n > 0 {
				d.storeRecovered()
			}
			if len(adopted) == 0 {
				d.mu.Lock()
				held := d.tasks[ref.TaskID] != nil
				d.mu.Unlock()
				if !held {
					d.staleResult(dg, r)
					return
				}
			}
			d.result(dg, r) // in memory now
			return
		}
		if errors.Is(err, store.ErrClosed) {
			return
		}
		d.storeFailed("adopt", ref.TaskID, err)
		n++
		if !d.pause(n) {
			return // the agent sends it again to the next replica
		}
	}
}

// staleResult acknowledges a result that completes nothing.
func (d *Dispatcher) staleResult(dg *delegate, r *delegatev1.TaskResult) {
	d.metrics.staleResults.Inc()
	d.log.Debug().Str("task_id", r.GetTaskId()).Str("delegate", dg.name).Msg("stale result discarded")
	dg.out.Push(ackMsg(r, false))
}
