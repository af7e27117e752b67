package manager

import (
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
func (d *Dispatcher) result(dg *delegate, r *delegatev1.TaskResult) {
	d.mu.Lock()
	t := d.tasks[r.GetTaskId()]
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
	d.mu.Unlock()

	if !async {
		d.finish(t, r.GetOutcome())
		dg.out.Push(ackMsg(r, true))
		return
	}
	// Persisting the completion can wait on an fsync: do not hold up the
	// stream's receive loop.
	go func() {
		ok := d.persistFinal(t, r.GetLeaseId(), r.GetOutcome())
		dg.out.Push(ackMsg(r, ok))
	}()
}

func ackMsg(r *delegatev1.TaskResult, accepted bool) *delegatev1.ManagerMessage {
	return &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_ResultAck{ResultAck: &delegatev1.ResultAck{
		TaskId: r.GetTaskId(), LeaseId: r.GetLeaseId(), Accepted: accepted,
	}}}
}

// persistFinal writes t's final state (fenced by leaseID when not empty)
// and then finishes it in memory. t must be busy. It reports whether this
// call completed the task.
//
// No secret value outlives the task in the store: the outcome is stored
// without one, and the payload, which held the value a change wrote, is
// replaced in the same store transition by a copy without any
// (keptPayload).
func (d *Dispatcher) persistFinal(t *task, leaseID string, o *delegatev1.Outcome) bool {
	raw, _ := proto.Marshal(withoutSecretValue(o))
	f := store.Final{State: finalState(o), Code: o.GetCode().String(), Outcome: raw}
	var err error
	if f.Payload, err = d.keptPayload(t.id, t.payload); err != nil {
		d.log.Error().Err(err).Str("task_id", t.id).Msg("seal the payload of a finished task failed; it keeps none")
	}
	if err := d.store.Complete(context.Background(), t.id, leaseID, f); err != nil {
		d.mu.Lock()
		t.busy = false
		d.mu.Unlock()
		if !errors.Is(err, store.ErrConflict) {
			d.log.Error().Err(err).Str("task_id", t.id).Msg("persist task outcome failed")
		}
		return false
	}
	d.finish(t, o)
	return true
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
	d.forgetLocked(t)
	d.notifyLocked(t)
	close(t.done)
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
			go d.requeue(a.t, a.leaseID, a.msg)
		default:
			if a.holder != nil {
				a.holder.out.Push(cancelMsg(a.t.id, a.leaseID, a.kind.String()))
			}
			if a.t.async {
				go d.fail(a.t, a.kind, a.msg)
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
// ("lease expired") says how it went.
func (d *Dispatcher) requeue(t *task, leaseID, why string) {
	if t.async {
		if err := d.store.Requeue(context.Background(), t.id, leaseID); err != nil {
			d.log.Error().Err(err).Str("task_id", t.id).Str("why", why).Msg("requeue failed")
			d.mu.Lock()
			t.busy = false
			d.mu.Unlock()
			return
		}
	}
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
		// A task stored before scopes existed has none; a secret task's
		// scope is its connector's in any case.
		scope := taskScope(st.Scope, p)
		t := &task{
			id: st.ID, kind: st.Kind, selectors: st.Selectors, scope: scope, key: matchKey(scope, st.Selectors),
			payload: p, async: true, state: st.State, attempt: st.Attempt, maxAttempts: st.MaxAttempts,
			leaseID: st.LeaseID, holder: st.Delegate, deadline: st.Deadline,
			createdAt: st.CreatedAt, updatedAt: st.UpdatedAt, requestID: st.Request.ID,
			orderKey: st.OrderKey,
			changed:  make(chan struct{}), done: make(chan struct{}),
		}
		if t.orderKey != "" {
			t.deadline = now.Add(d.cfg.TaskDeadline.D())
		}
		d.tasks[t.id] = t
		// Counted, never refused: the limits hold new tasks back until
		// the scope is below them again.
		t.size = proto.Size(p)
		d.limits.add(scope, t.size)
		if st.State == store.StateLeased {
			t.leaseExpiry = now.Add(d.cfg.LeaseDuration.D())
			d.chainLocked(t)
			continue
		}
		d.admitLocked(t, now)
	}
	return len(ts), nil
}

// close stops taking tasks and fails the sync tasks still waiting, so their
// callers get an answer.
func (d *Dispatcher) close() {
	d.mu.Lock()
	if !d.closed {
		close(d.stopping)
	}
	d.closed = true
	var sync []*task
	for _, t := range d.tasks {
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
}
