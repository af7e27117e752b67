package dispatch

import (
	"slices"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
)

// Per-secret order. AWS Secrets Manager has no precondition on a write, so
// two changes of one secret in flight at once land in whatever order they
// reach it. The dispatcher therefore runs the mutations of one secret (one
// order key: region and full AWS name, whichever connector submits them)
// one at a time, in submission order: each key has a FIFO chain of the
// unfinished tasks that carry it, and only its head is queued or leased.
// The others wait (task.waiting): they are in no selector queue, and their
// queue timeout and deadline start only when they become the head. A task
// that fails still lets the next one run.
//
// A head whose lease lapses is dispatched again only after the lease plus
// fenceMargin: an agent that heard nothing from the manager for a lease
// duration has cancelled the task's AWS calls by then (agent fencing), so
// no older attempt lands after the next one.

// orderKey is the order key of a secret mutation run through connector c:
// the account of the connector's scope, its region, then the full AWS
// name (prefix applied). The account (the tenant) is part of it so that
// one tenant's changes never wait behind another's: connectors of one
// account (any org or project) reaching one secret are ordered together,
// those of two accounts are not. A connector without a region uses its
// delegate's AWS_REGION, which the manager cannot know: all such
// connectors share the region part "-", so their mutations of one name
// are ordered together (whatever region each delegate has). Reads,
// connection tests and listings have no key ("").
func OrderKey(c *delegatev1.Connector, st *delegatev1.SecretTask) string {
	var name string
	switch op := st.GetOp().(type) {
	case *delegatev1.SecretTask_Create:
		name = op.Create.GetName()
	case *delegatev1.SecretTask_Upsert:
		name = op.Upsert.GetName()
	case *delegatev1.SecretTask_Update:
		name = op.Update.GetName()
	case *delegatev1.SecretTask_Delete:
		name = op.Delete.GetName()
	case *delegatev1.SecretTask_Restore:
		name = op.Restore.GetName()
	case *delegatev1.SecretTask_Tag:
		name = op.Tag.GetName()
	default:
		return ""
	}
	region := c.GetRegion()
	if region == "" {
		region = "-"
	}
	// Neither an account (identifier characters) nor a region holds a
	// space, so the parts cannot run into each other.
	return c.GetScope().GetAccount() + " " + region + " " + tasks.NewPrefix(c.GetSecretNamePrefix()).Apply(name)
}

// fenceMargin is how long after its lease lapsed an ordered task waits
// before it is dispatched again: one heartbeat interval, covering the
// delivery of the manager's last message to the agent (from which the
// agent counts its fence) and an AWS call the agent had in flight.
func (d *Dispatcher) fenceMargin() time.Duration { return d.cfg.HeartbeatInterval.D() }

// admitLocked puts a new or recovered queued task in play: at the back of
// its order chain (waiting, unless it is the chain's head) and, when it
// may run, in its queue.
func (d *Dispatcher) admitLocked(t *task, now time.Time) {
	if d.chainLocked(t) {
		d.enqueueLocked(t, now)
		return
	}
	t.waiting = true
}

// chainLocked appends t to its order chain and reports whether it is the
// head (or has no order key): whether it may run now.
func (d *Dispatcher) chainLocked(t *task) bool {
	if t.orderKey == "" {
		return true
	}
	d.chains[t.orderKey] = append(d.chains[t.orderKey], t)
	return len(d.chains[t.orderKey]) == 1
}

// unchainLocked takes t, which leaves memory, out of its order chain; when
// t was the head, the next task becomes the head: its deadline and queue
// timeout start now and it is dispatched if a delegate has credit.
// Ordered tasks are async, so the dispatch only starts a claim (deliver
// runs no send under the lock).
func (d *Dispatcher) unchainLocked(t *task) {
	chain := d.chains[t.orderKey]
	i := slices.Index(chain, t)
	if t.orderKey == "" || i < 0 {
		return
	}
	chain = slices.Delete(chain, i, i+1)
	if len(chain) == 0 {
		delete(d.chains, t.orderKey)
		return
	}
	d.chains[t.orderKey] = chain
	if i != 0 {
		return
	}
	next := chain[0]
	if !next.waiting {
		return // recovered already leased or queued
	}
	now := d.now()
	next.waiting = false
	next.deadline = now.Add(d.cfg.TaskDeadline.D())
	next.updatedAt = now
	d.enqueueLocked(next, now)
	d.notifyLocked(next)
	d.deliver(d.dispatchTaskLocked(next))
}
