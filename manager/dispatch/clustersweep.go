package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The store side of a replica's timers (cluster.go): durable leases,
// renewed in batches, and the sweep every replica runs for the tasks
// whose owner is gone.

// clusterSweepLoop sweeps the store every clusterSweepEvery until ctx is
// done. After a failure the next sweeps wait out a backoff (storefail.go).
func (d *Dispatcher) clusterSweepLoop(ctx context.Context) {
	tick := time.NewTicker(clusterSweepEvery)
	defer tick.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := d.clusterSweepOnce(ctx); err != nil {
			if ctx.Err() != nil || errors.Is(err, store.ErrClosed) {
				return
			}
			fails++
			d.storeFailed("sweep the cluster's queue", "", err)
			if !pauseCtx(ctx, fails) {
				return
			}
			continue
		}
		if fails > 0 {
			fails = 0
			d.storeRecovered()
		}
	}
}

// clusterSweepOnce takes back the leases that lapsed in the store
// (margin: two heartbeat intervals, the batching of renewals and their
// flush; ordered tasks one fence margin more), fails the unowned queued
// tasks past their timers, and gives back the owned queued tasks no
// local delegate can take any more.
func (d *Dispatcher) clusterSweepOnce(ctx context.Context) error {
	c := d.cl
	cctx, cancel := context.WithTimeout(ctx, clusterCallTimeout)
	defer cancel()
	ts, err := c.st.ExpireLeases(cctx, 2*d.cfg.HeartbeatInterval.D(), d.fenceMargin())
	d.applyExpired(ts)
	if err != nil {
		return err
	}
	ts, err = c.st.ExpireQueued(cctx)
	d.applyExpired(ts)
	if err != nil {
		return err
	}
	return d.disownUnrunnable(ctx)
}

// applyExpired brings the tasks in memory that the store's sweep changed
// (ts, as they are now) in line: final, they end here too; queued again
// unowned, they leave memory. A task whose write is in flight is left to
// it (its read-back decides). The delegate holding a lease memory still
// had is told to stop.
func (d *Dispatcher) applyExpired(ts []*store.Task) {
	type change struct {
		t  *store.Task
		mt *task
	}
	var cs []change
	d.mu.Lock()
	for _, st := range ts {
		t := d.tasks[st.ID]
		if t == nil || t.busy {
			continue
		}
		if !st.State.Final() && !d.ownedElsewhere(st) {
			continue
		}
		t.busy = true
		d.dequeueLocked(t)
		if t.state == store.StateLeased {
			if dg := d.delegates[t.holder]; dg != nil {
				dg.out.Push(cancelMsg(t.id, t.leaseID, "lease expired"))
			}
		}
		cs = append(cs, change{st, t})
	}
	d.mu.Unlock()
	for _, c := range cs {
		if c.t.State.Final() {
			d.finishStored(c.mt, c.t)
		} else {
			d.release(c.mt, "its lease lapsed in the store and it went back to the cluster's queue")
		}
	}
}

// noteRenewLocked records that a heartbeat renewed t's lease, for the
// next RenewLeases (cluster mode, async tasks).
func (d *Dispatcher) noteRenewLocked(t *task) {
	if d.cl != nil && t.async {
		d.cl.renew[store.LeaseRef{TaskID: t.id, LeaseID: t.leaseID}] = struct{}{}
	}
}

// renewLoop stores the renewed leases once per heartbeat interval until
// ctx is done.
func (d *Dispatcher) renewLoop(ctx context.Context) {
	tick := time.NewTicker(d.cfg.HeartbeatInterval.D())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d.flushRenewals(ctx)
	}
}

// flushRenewals stores the leases heartbeats renewed since the last
// flush (RenewLeases). A lease the store did not renew is no longer
// this replica's (the store took it back, or another replica adopted or
// finished the task): handled like a heartbeat naming an unknown lease,
// the delegate is told to stop and the task leaves memory. A failed
// flush is not retried as such: the next heartbeats list the leases
// again.
func (d *Dispatcher) flushRenewals(ctx context.Context) {
	c := d.cl
	d.mu.Lock()
	if len(c.renew) == 0 {
		d.mu.Unlock()
		return
	}
	refs := make([]store.LeaseRef, 0, len(c.renew))
	for r := range c.renew {
		refs = append(refs, r)
	}
	clear(c.renew)
	d.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, clusterCallTimeout)
	missed, err := c.st.RenewLeases(cctx, c.replica, refs, d.cfg.LeaseDuration.D())
	cancel()
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, store.ErrClosed) {
			d.storeFailed("renew leases", "", err)
		}
		return
	}
	d.storeRecovered()
	d.lostLeases(missed)
}

// lostLeases handles the leases RenewLeases did not renew.
func (d *Dispatcher) lostLeases(refs []store.LeaseRef) {
	var gone []*task
	d.mu.Lock()
	for _, r := range refs {
		t := d.tasks[r.TaskID]
		if t == nil || t.busy || t.state != store.StateLeased || t.leaseID != r.LeaseID {
			continue // finished or requeued here meanwhile
		}
		t.busy = true
		if dg := d.delegates[t.holder]; dg != nil {
			dg.out.Push(cancelMsg(t.id, t.leaseID, "lease is no longer valid"))
		}
		gone = append(gone, t)
	}
	d.mu.Unlock()
	for _, t := range gone {
		d.release(t, "the store no longer has its lease as this replica's")
	}
}
