package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// result handles a TaskResult from dg. Only the current lease's result
// completes the task (fencing); any other is acknowledged and discarded.
// An async result is acknowledged once its outcome is stored, however
// long a store outage makes that take; never accepted=false because the
// store failed (the agent would drop a result it keeps until acked).
func (d *Dispatcher) result(dg *delegate, r *delegatev1.TaskResult) {
	d.mu.Lock()
	t := d.tasks[r.GetTaskId()]
	if t != nil && t.storing && t.leaseID == r.GetLeaseId() {
		// A copy of the result being stored (sent again on a new
		// stream): that write acknowledges it, on the current stream.
		d.mu.Unlock()
		return
	}
	if t == nil && d.cl != nil && r.GetLeaseId() != "" {
		// A replica: perhaps another replica's task (adopt.go).
		d.mu.Unlock()
		d.spawn(func() { d.adoptResult(dg, r) })
		return
	}
	if t == nil || t.state != store.StateLeased || t.leaseID != r.GetLeaseId() || t.busy {
		d.mu.Unlock()
		d.metrics.staleResults.Inc()
		d.log.Debug().Str("task_id", r.GetTaskId()).Str("delegate", dg.name).Msg("stale result discarded")
		dg.out.Push(ackMsg(r, false))
		return
	}
	t.busy = true
	delete(dg.running, t.id)
	d.touchLocked(dg)
	async := t.async
	t.storing = async
	d.mu.Unlock()

	if !async {
		d.finish(t, r.GetOutcome())
		dg.out.Push(ackMsg(r, true))
		return
	}
	// Persisting the completion can wait on an fsync or an outage: do
	// not hold up the stream's receive loop.
	d.spawn(func() {
		accepted, answered := d.persistFinal(t, r.GetLeaseId(), r.GetOutcome())
		if !answered {
			return // the manager stops: the agent keeps the result for the next one
		}
		d.mu.Lock()
		to := dg
		if cur := d.delegates[dg.name]; cur != nil && cur.reconnectOf(dg) {
			to = cur // the same agent process reconnected meanwhile
		}
		d.mu.Unlock()
		to.out.Push(ackMsg(r, accepted))
	})
}

func ackMsg(r *delegatev1.TaskResult, accepted bool) *delegatev1.ManagerMessage {
	return &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_ResultAck{ResultAck: &delegatev1.ResultAck{
		TaskId: r.GetTaskId(), LeaseId: r.GetLeaseId(), Accepted: accepted,
	}}}
}

// persistFinal writes t's final state (fenced by leaseID when not empty)
// and then finishes it in memory. t must be busy. accepted reports
// whether this call completed the task; answered is false when the
// dispatcher closed before the store decided (t then stays busy, as
// stored, for the next start).
//
// A failed Complete is reconciled with the stored row (storefail.go):
// final with this outcome, it took effect; final otherwise, the task
// ended another way and ends so in memory too; still open under this
// lease (or unleased, for leaseID ""), the write is retried with backoff;
// under another lease, or gone, the task is not this call's any more.
//
// No secret value outlives the task in the store: the outcome is stored
// without one, and the payload, which held the value a change wrote, is
// replaced in the same store transition by a copy without any
// (keptPayload).
func (d *Dispatcher) persistFinal(t *task, leaseID string, o *delegatev1.Outcome) (accepted, answered bool) {
	raw, _ := proto.Marshal(WithoutSecretValue(o))
	f := store.Final{State: finalState(o), Code: o.GetCode().String(), Outcome: raw}
	var err error
	if f.Payload, err = d.keptPayload(t.id, t.payload); err != nil {
		d.log.Error().Err(err).Str("task_id", t.id).Msg("seal the payload of a finished task failed; it keeps none")
	}
	// A generated value goes to its caller's replica before the final
	// state exists there to be read (generated.go).
	d.sendGenerated(t, leaseID, o)
	for n := 0; ; {
		err := d.store.Complete(context.Background(), t.id, leaseID, f)
		if err == nil {
			if n > 0 {
				d.storeRecovered()
			}
			d.finish(t, o)
			return true, true
		}
		if errors.Is(err, store.ErrClosed) {
			return false, false
		}
		st, ok := d.readBack("complete", t, err, &n)
		switch {
		case !ok:
			return false, false
		case st == nil:
			d.release(t, "it is no longer in the store")
			return false, true
		case st.State.Final() && st.Code == f.Code && bytes.Equal(st.Outcome, f.Outcome) && (leaseID == "" || st.LeaseID == leaseID):
			// It took effect although it reported an error.
			d.finish(t, o)
			return true, true
		case st.State.Final():
			d.finishStored(t, st)
			return false, true
		case leaseID != "" && (st.State != store.StateLeased || st.LeaseID != leaseID):
			// The lease is not the stored one: a stale result.
			d.reconcileOpen(t, st)
			return false, true
		}
		d.storeFailed("complete", t.id, err)
		n++
		if !d.pause(n) {
			return false, false
		}
	}
}

// reconcileOpen brings busy task t, whose stored row st is unfinished but
// not as memory has it, in line with the store: queued there, it is
// queued here; leased under another lease, another manager runs it.
func (d *Dispatcher) reconcileOpen(t *task, st *store.Task) {
	if st.State == store.StateLeased {
		d.release(t, "another manager claimed it")
		return
	}
	if d.ownedElsewhere(st) {
		d.release(t, "the cluster's queue has it")
		return
	}
	d.mu.Lock()
	t.storing = false
	d.mu.Unlock()
	d.requeueLocal(t, "the store has it queued")
}

func finalState(o *delegatev1.Outcome) store.State {
	if o.GetCode() == delegatev1.Code_OK {
		return store.StateSucceeded
	}
	return store.StateFailed
}

// finish makes t final in memory and wakes its waiters.
func (d *Dispatcher) finish(t *task, o *delegatev1.Outcome) {
	d.mu.Lock()
	d.dequeueLocked(t)
	if dg := d.delegates[t.holder]; dg != nil {
		delete(dg.running, t.id)
		d.touchLocked(dg)
	}
	t.state = finalState(o)
	t.outcome = o
	t.busy = false
	t.updatedAt = d.now()
	d.forgetLocked(t) // wakes its waiters
	d.mu.Unlock()
	d.metrics.outcomes.WithLabelValues(o.GetCode().String()).Inc()
}

const codeInvalid = delegatev1.Code_INVALID_ARGUMENT

// TaskError is an error with the task outcome code it ends a task with.
type TaskError struct {
	Code delegatev1.Code
	Msg  string
}

func (e *TaskError) Error() string { return e.Msg }

// failErr ends t with err's code (INTERNAL for an untyped error, whose
// detail goes only to the log). t must be busy.
func (d *Dispatcher) failErr(t *task, err error) {
	var te *TaskError
	if errors.As(err, &te) {
		d.fail(t, te.Code, te.Msg)
		return
	}
	d.log.Error().Err(err).Str("task_id", t.id).Msg("task failed before dispatch")
	d.fail(t, delegatev1.Code_INTERNAL, "internal error preparing the task (see the manager log)")
}

// fail ends t with code unless it completed meanwhile. t must be busy.
func (d *Dispatcher) fail(t *task, code delegatev1.Code, msg string) {
	o := &delegatev1.Outcome{Code: code, Message: msg}
	if !t.async {
		d.finish(t, o)
		return
	}
	d.persistFinal(t, "", o)
}

// sweep runs the timers of design §4: queue timeout, task deadline and
// lease expiry. It runs every tick until ctx is done.
func (d *Dispatcher) sweep(ctx context.Context, every time.Duration) {
	if d.cl != nil {
		defer d.runCluster(ctx)() // the replica's loops (cluster.go)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.sweepOnce()
		}
	}
}

// action is what becomes of a task taken out of play under the lock (it
// is marked busy): decided under Dispatcher.mu, run after it (run).
type action struct {
	t       *task
	kind    delegatev1.Code // NO_ELIGIBLE_DELEGATE, TIMEOUT, DELEGATE_LOST, or OK for requeue
	msg     string          // the failure message, or for a requeue why (logged)
	leaseID string
	holder  *delegate // told to cancel the task, if set
}

func (d *Dispatcher) sweepOnce() {
	now := d.now()
	var acts []action
	d.mu.Lock()
	// Silent delegates first: their tasks return to the queue as
	// "delegate closed" rather than as expired leases.
	evicted := d.sweepSilentLocked(now, &acts)
	for _, t := range d.tasks {
		if t.busy || t.waiting {
			continue // a waiting task's timers have not started (order.go)
		}
		switch {
		case now.After(t.deadline):
			a := action{t: t, kind: delegatev1.Code_TIMEOUT, leaseID: t.leaseID,
				msg: fmt.Sprintf("task did not complete within its deadline of %s", d.cfg.TaskDeadline)}
			if t.state == store.StateLeased {
				a.holder = d.delegates[t.holder]
			}
			acts = append(acts, a)
		case t.state == store.StateQueued && now.After(t.queueDL):
			acts = append(acts, action{t: t, kind: delegatev1.Code_NO_ELIGIBLE_DELEGATE, msg: d.noEligibleLocked(t)})
		case t.state == store.StateLeased && now.After(d.redispatchAt(t)):
			acts = append(acts, d.lostLocked(t, "lease expired", "stopped renewing the lease"))
			continue // lostLocked took it
		default:
			continue
		}
		t.busy = true
		d.dequeueLocked(t)
	}
	d.prunePoolsLocked(now)
	d.mu.Unlock()
	d.afterEvict(evicted)
	d.run(acts)
}

// redispatchAt is when leased task t is taken from its delegate: when its
// lease expires, and for an ordered task one fenceMargin later, by which
// time the agent has stopped its AWS calls (order.go).
func (d *Dispatcher) redispatchAt(t *task) time.Time {
	if t.orderKey != "" {
		return t.leaseExpiry.Add(d.fenceMargin())
	}
	return t.leaseExpiry
}

// lostLocked takes leased task t from a delegate that is gone (its lease
// expired, or the manager closed its stream): back to the queue if
// attempts remain, else DELEGATE_LOST. why is logged with a requeue;
// what ("stopped renewing the lease") ends the DELEGATE_LOST message.
func (d *Dispatcher) lostLocked(t *task, why, what string) action {
	t.busy = true
	d.dequeueLocked(t)
	if t.attempt < t.maxAttempts {
		return action{t: t, kind: delegatev1.Code_OK, leaseID: t.leaseID, msg: why}
	}
	return action{t: t, kind: delegatev1.Code_DELEGATE_LOST, msg: fmt.Sprintf(
		"delegate %s %s and the task used all %d attempts", t.holder, what, t.maxAttempts)}
}

// run carries out actions decided under the lock.
func (d *Dispatcher) run(acts []action) {
	for _, a := range acts {
		switch a.kind {
		case delegatev1.Code_OK:
			d.spawn(func() { d.requeue(a.t, a.leaseID, a.msg) })
		default:
			if a.holder != nil {
				a.holder.out.Push(cancelMsg(a.t.id, a.leaseID, a.kind.String()))
			}
			if a.t.async {
				d.spawn(func() { d.fail(a.t, a.kind, a.msg) })
			} else {
				d.fail(a.t, a.kind, a.msg)
			}
		}
	}
}

// noEligibleLocked is the NO_ELIGIBLE_DELEGATE message: which selectors
// and scope were required, and the scope and tags of the connected
// delegates whose scope overlaps the task's.
func (d *Dispatcher) noEligibleLocked(t *task) string {
	sel := "a delegate"
	switch {
	case len(t.selectors) > 0:
		sel += " with all of the selectors [" + strings.Join(t.selectors, ", ") + "]"
	case t.scope.IsZero():
		sel = "any delegate (no selectors)"
	}
	if !t.scope.IsZero() {
		sel += " whose token's scope is " + t.scope.String() + " or above it (or an unscoped one)"
	}
	return fmt.Sprintf("no eligible delegate within %s: the task needs %s; %s",
		d.cfg.QueueTimeout, sel, d.connectedTagsLocked(t.scope))
}

// requeue returns a task whose delegate is gone to the queue; why
// ("lease expired") says how it went. A failed Requeue is reconciled with
// the stored row like a failed Complete (persistFinal).
func (d *Dispatcher) requeue(t *task, leaseID, why string) {
	for n := 0; t.async; {
		err := d.store.Requeue(context.Background(), t.id, leaseID)
		if err == nil {
			if n > 0 {
				d.storeRecovered()
			}
			break
		}
		if errors.Is(err, store.ErrClosed) {
			return
		}
		st, ok := d.readBack("requeue", t, err, &n)
		switch {
		case !ok:
			return
		case st == nil:
			d.release(t, "it is no longer in the store")
			return
		case st.State.Final():
			d.finishStored(t, st)
			return
		case d.ownedElsewhere(st):
			d.release(t, "another replica, or the cluster's queue, has it")
			return
		case st.State == store.StateQueued:
			// It took effect although it reported an error.
		case st.LeaseID != leaseID:
			d.release(t, "another manager claimed it")
			return
		default:
			d.storeFailed("requeue", t.id, err)
			n++
			if !d.pause(n) {
				return
			}
			continue
		}
		break
	}
	d.requeueLocal(t, why)
}

// requeueLocal returns busy task t to the queue in memory (the store has
// it queued already).
func (d *Dispatcher) requeueLocal(t *task, why string) {
	d.metrics.redispatched.Inc()
	d.mu.Lock()
	if dg := d.delegates[t.holder]; dg != nil {
		delete(dg.running, t.id)
		d.touchLocked(dg)
	}
	d.log.Info().Str("task_id", t.id).Str("delegate", t.holder).Int("attempt", t.attempt).Msg(why + "; task returns to the queue")
	t.busy = false
	t.leaseID, t.holder = "", ""
	t.updatedAt = d.now()
	d.enqueueLocked(t, d.now())
	d.notifyLocked(t)
	sends := d.dispatchTaskLocked(t)
	d.mu.Unlock()
	d.deliver(sends)
}

// cancel ends a task whose caller gave up (sync tasks).
func (d *Dispatcher) cancel(t *task, why string) {
	d.mu.Lock()
	if !t.state.Final() && stopForwardLocked(t, &TaskError{Code: delegatev1.Code_CANCELLED, Msg: why}) {
		d.mu.Unlock()
		return // the forwarding goroutine ends it
	}
	if t.state.Final() || t.busy {
		d.mu.Unlock()
		return
	}
	t.busy = true
	d.dequeueLocked(t)
	holder := d.delegates[t.holder]
	leaseID := t.leaseID
	leased := t.state == store.StateLeased
	d.mu.Unlock()
	if leased && holder != nil {
		holder.out.Push(cancelMsg(t.id, leaseID, why))
	}
	d.fail(t, delegatev1.Code_CANCELLED, why)
}

// recover loads the unfinished tasks of a previous run. Queued tasks are
// queued again; leased ones keep their lease for one lease duration, so
// agents that reconnect with them in Hello carry on and their results count.
// Ordered tasks rebuild their chains in creation order (the store lists
// the oldest first): only each chain's head is queued, and every ordered
// task's deadline starts again now (the store keeps the one of its
// submission, which does not count the time it waited).
func (d *Dispatcher) recover(ctx context.Context) (int, error) {
	if d.cl != nil {
		return 0, nil // a replica pulls its tasks from the shared queue (pull.go)
	}
	ts, err := d.store.ListUnfinished(ctx)
	if err != nil {
		return 0, err
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, st := range ts {
		p, err := d.openPayload(st.ID, st.Payload)
		if err != nil {
			d.log.Error().Err(err).Str("task_id", st.ID).Msg("recovered task has an unreadable payload; skipping")
			continue
		}
		t := &task{changed: make(chan struct{}), done: make(chan struct{})}
		if st.OrderKey != "" {
			st.Deadline = now.Add(d.cfg.TaskDeadline.D())
		}
		// Counted, never refused: the limits hold new tasks back until
		// the scope is below them again.
		d.admitStoredLocked(t, st, p)
	}
	return len(ts), nil
}

// Stopping returns a channel closed when the dispatcher begins to close:
// streams and watches that would wait for a change end then.
func (d *Dispatcher) Stopping() <-chan struct{} { return d.stopping }

// close stops taking tasks and fails the sync tasks still waiting, so their
// callers get an answer.
func (d *Dispatcher) close() {
	d.mu.Lock()
	if !d.closed {
		close(d.stopping)
	}
	wasClosed := d.closed
	d.closed = true
	var sync []*task
	for _, t := range d.tasks {
		if !t.async && stopForwardLocked(t, &TaskError{Code: delegatev1.Code_UNAVAILABLE, Msg: "manager is shutting down"}) {
			continue // the forwarding goroutine ends it
		}
		if !t.async && !t.busy {
			t.busy = true
			d.dequeueLocked(t)
			sync = append(sync, t)
		}
	}
	d.mu.Unlock()
	for _, t := range sync {
		d.fail(t, delegatev1.Code_UNAVAILABLE, "manager is shutting down")
	}
	if d.cl != nil && !wasClosed {
		d.closeCluster() // the queued tasks go back to the cluster's queue
	}
}
