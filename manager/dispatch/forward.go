package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Sync tasks across replicas. A replica of a cluster runs a sync task
// (ping, secret read, connection test) on one of its own delegates when
// one is eligible now (it matches and has credit); otherwise, when a
// delegate of another replica matches (the delegate records of the
// directory, directory.go), it forwards the task over the peer link to
// that replica, which runs it as its own sync task, never forwarding it
// again (one hop), and returns the outcome. Sync tasks are never stored:
// the forwarding replica keeps the task in memory (state LEASED, busy, so
// the sweep leaves it alone) while the call is under way; the caller's
// deadline and the task deadline bound the call, and a caller that goes
// away cancels it on both replicas. Neither replica logs the payload or
// the outcome.

// Forwarder runs a sync task on another replica's delegates (the peer
// link, manager/peer). It returns the outcome the other replica's task
// ended with; an error matching ErrPeerUnreachable when the replica
// could not take the task (not reached, shutting down: another replica
// may be tried); a *TaskError when that replica refused it with an
// outcome code; another error otherwise.
type Forwarder interface {
	Forward(ctx context.Context, replica string, req SubmitRequest) (Forwarded, error)
}

// Forwarded is how a forwarded task ended on the replica that ran it:
// its outcome, and the delegate that ran it ("" when none did: the
// outcome is that replica's, NO_ELIGIBLE_DELEGATE, TIMEOUT, ...).
type Forwarded struct {
	Outcome  *delegatev1.Outcome
	Delegate string
}

// ErrPeerUnreachable: a replica a task was forwarded to could not take it
// (it was not reached, or is shutting down); the task did not run there.
var ErrPeerUnreachable = errors.New("replica unreachable")

// maxForwardTries bounds how many replicas one sync task is offered to
// when the first cannot be reached.
const maxForwardTries = 3

// SetForwarder makes sync tasks that no local delegate can take now go
// to a replica holding an eligible delegate (before the dispatcher takes
// tasks; never for a single manager). It needs the directory
// (SetDirectory) to know the other replicas' delegates.
func (d *Dispatcher) SetForwarder(f Forwarder) { d.fwd = f }

// RunForwarded runs a sync task another replica forwarded, under that
// replica's task id, on this replica's own delegates only, and returns
// its outcome once it is final. It is counted against its scope's limits
// but never refused by them (the forwarding replica reserved it). A
// cancelled ctx cancels the task. Errors: those of Submit before the task
// is queued (ErrShuttingDown, a *TaskError from resolving its
// connector, a store failure), or ctx's.
func (d *Dispatcher) RunForwarded(ctx context.Context, id string, req SubmitRequest) (Forwarded, error) {
	if id == "" {
		return Forwarded{}, &TaskError{Code: codeInvalid, Msg: "task_id: must not be empty"}
	}
	req.Async, req.OrderKey, req.Request = false, "", store.Request{}
	req.forwardedID = id
	t, err := d.submit(ctx, req)
	if err != nil {
		return Forwarded{}, err
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		d.cancel(t, "the forwarding replica's caller went away")
		<-t.done
		return Forwarded{}, ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return Forwarded{Outcome: t.outcome, Delegate: t.holder}, nil
}

// forwardTargetsLocked returns the replicas t may be forwarded to, best
// first, or nil when t runs here: a local delegate is eligible now, t is
// not forwardable (async, forwarded to this replica, a platform task),
// or no other replica holds a delegate that may run it. Among replicas,
// those with a matching delegate with free capacity come first, each
// ranked by the load (running/capacity) of its matching delegates plus
// the tasks this replica forwarded to it and still waits for. When every
// remote match is full and a matching local delegate is busy, t waits
// here for its credit.
func (d *Dispatcher) forwardTargetsLocked(t *task, forwarded bool) []string {
	if d.fwd == nil || d.dir == nil || t.async || forwarded || slices.Contains(t.selectors, PlatformTag) {
		return nil
	}
	if d.leastLoadedLocked(t.key, t.scope, t.selectors) != nil {
		return nil // a local delegate is eligible now: always preferred
	}
	type load struct {
		replica           string
		running, capacity int
	}
	by := map[string]*load{}
	alive := map[string]bool{} // asked once per replica
	for _, r := range d.dir.remote {
		if r.Draining || r.Capacity < 1 || !scopes.Serves(r.Scope, t.scope) || !r.tags.hasAll(t.selectors) {
			continue
		}
		up, known := alive[r.Replica]
		if !known {
			up = d.dir.members.Alive(r.Replica)
			alive[r.Replica] = up
		}
		if !up {
			continue
		}
		l := by[r.Replica]
		if l == nil {
			l = &load{replica: r.Replica, running: d.dir.inflight[r.Replica]}
			by[r.Replica] = l
		}
		l.running += r.Running
		l.capacity += r.Capacity
	}
	if len(by) == 0 {
		return nil
	}
	loads := make([]*load, 0, len(by))
	for _, l := range by {
		loads = append(loads, l)
	}
	free := func(l *load) bool { return l.running < l.capacity }
	slices.SortFunc(loads, func(a, b *load) int {
		if fa, fb := free(a), free(b); fa != fb {
			if fa {
				return -1
			}
			return 1
		}
		// a.running/a.capacity vs b.running/b.capacity, without division.
		if x, y := a.running*b.capacity, b.running*a.capacity; x != y {
			return x - y
		}
		if a.replica < b.replica {
			return -1
		}
		return 1
	})
	if !free(loads[0]) && d.localMatchLocked(t) {
		return nil // every remote match is full too: wait for local credit
	}
	out := make([]string, 0, min(len(loads), maxForwardTries))
	for _, l := range loads[:min(len(loads), maxForwardTries)] {
		out = append(out, l.replica)
	}
	return out
}

// localMatchLocked reports whether a connected, not draining local
// delegate may run t (whatever its credit).
func (d *Dispatcher) localMatchLocked(t *task) bool {
	for _, dg := range d.delegates {
		if !dg.draining && dg.matches(t.scope, t.selectors) {
			return true
		}
	}
	return false
}

// startForward puts sync task t in memory as forwarded (leased to no
// local delegate, busy) and forwards it in the background.
func (d *Dispatcher) startForward(ctx context.Context, t *task, req SubmitRequest, targets []string) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrShuttingDown
	}
	d.tasks[t.id] = t
	run := d.beginForwardLocked(ctx, t, req, targets)
	d.mu.Unlock()
	d.metrics.submitted.WithLabelValues(t.kind).Inc()
	d.spawn(run)
	return nil
}

// beginForwardLocked marks t forwarded to targets[0] and returns the
// forwarding to run (spawned) after the lock. The call ends with ctx,
// the task deadline, Cancel or the dispatcher closing (stop).
func (d *Dispatcher) beginForwardLocked(ctx context.Context, t *task, req SubmitRequest, targets []string) func() {
	fctx, stop := context.WithCancelCause(ctx)
	fctx, stopDL := context.WithDeadlineCause(fctx, t.deadline, &TaskError{Code: delegatev1.Code_TIMEOUT,
		Msg: fmt.Sprintf("task did not complete within its deadline of %s", d.cfg.TaskDeadline)})
	t.state = store.StateLeased
	t.attempt++
	t.updatedAt = d.now()
	t.busy = true // the sweep, results and close leave it to the forwarding goroutine
	t.remote = targets[0]
	t.stop = stop
	t.fwdReq = nil
	d.dir.inflight[t.remote]++
	d.notifyLocked(t)
	return func() {
		defer stopDL()
		d.runForward(fctx, t, req, targets)
	}
}

// reforwardLocked forwards the sync tasks queued here for want of an
// eligible delegate anywhere (submit kept their request unresolved,
// fwdReq) that a delegate of another replica can take now: one that
// connected since, or that this replica's records did not show yet. It
// returns the forwardings to spawn after the lock. The caller's
// deadline does not follow such a task (its call is not at hand); the
// caller going away cancels it (Cancel), and the task deadline bounds it.
func (d *Dispatcher) reforwardLocked() []func() {
	var runs []func()
	for id, t := range d.dir.waiting {
		if d.tasks[id] != t || t.state != store.StateQueued || t.busy || t.fwdReq == nil {
			delete(d.dir.waiting, id)
			continue
		}
		targets := d.forwardTargetsLocked(t, false)
		if len(targets) == 0 {
			continue
		}
		delete(d.dir.waiting, id)
		req := *t.fwdReq
		d.dequeueLocked(t)
		runs = append(runs, d.beginForwardLocked(context.Background(), t, req, targets))
	}
	return runs
}

// runForward offers t to targets in turn until one takes it, and ends t
// with the outcome, or with why it could not run.
func (d *Dispatcher) runForward(ctx context.Context, t *task, req SubmitRequest, targets []string) {
	req.forwardedID = t.id
	var (
		res Forwarded
		err error
	)
	for i, replica := range targets {
		if i > 0 {
			d.mu.Lock()
			d.dir.inflight[t.remote]--
			t.remote = replica
			d.dir.inflight[replica]++
			d.mu.Unlock()
		}
		res, err = d.fwd.Forward(ctx, replica, req)
		if err == nil || ctx.Err() != nil || !errors.Is(err, ErrPeerUnreachable) {
			break
		}
		// Not run there: another replica may take it.
		d.log.Warn().Err(err).Str("task_id", t.id).Str("replica", replica).Msg("could not forward a sync task to the replica holding an eligible delegate")
	}
	d.mu.Lock()
	d.dir.inflight[t.remote]--
	if d.dir.inflight[t.remote] <= 0 {
		delete(d.dir.inflight, t.remote)
	}
	d.mu.Unlock()
	o := res.Outcome
	if err != nil {
		o = d.forwardFailure(ctx, t, err)
	} else if res.Delegate != "" {
		// The delegate that ran it, for the caller's TaskInfo.
		d.mu.Lock()
		t.holder = res.Delegate
		d.mu.Unlock()
	}
	d.finish(t, o)
}

// forwardFailure is the outcome of a forwarded task whose call failed
// with err: why ctx ended (the caller went away, the deadline, the
// manager stopping), the other replica's refusal, or UNAVAILABLE.
func (d *Dispatcher) forwardFailure(ctx context.Context, t *task, err error) *delegatev1.Outcome {
	var te *TaskError
	if cause := context.Cause(ctx); cause != nil {
		switch {
		case errors.As(cause, &te):
		case errors.Is(cause, context.DeadlineExceeded):
			te = &TaskError{Code: delegatev1.Code_TIMEOUT, Msg: "the caller's deadline passed"}
		default:
			te = &TaskError{Code: delegatev1.Code_CANCELLED, Msg: "the caller went away"}
		}
	} else if !errors.As(err, &te) {
		if !errors.Is(err, ErrPeerUnreachable) {
			d.log.Error().Err(err).Str("task_id", t.id).Str("replica", t.remote).Msg("forwarded sync task failed")
		}
		te = &TaskError{Code: delegatev1.Code_UNAVAILABLE, Msg: fmt.Sprintf(
			"the replica %s holding an eligible delegate could not run the task (see the manager log); try again", t.remote)}
	}
	return &delegatev1.Outcome{Code: te.Code, Message: te.Msg, Retryable: te.Code == delegatev1.Code_UNAVAILABLE}
}

// stopForwardLocked ends the call of forwarded task t with cause (a
// *TaskError), if it is one; it reports whether it was.
func stopForwardLocked(t *task, cause *TaskError) bool {
	if t.remote == "" || t.stop == nil {
		return false
	}
	t.stop(cause)
	return true
}

// ForwardedID is the id of the task req forwards (set by the dispatcher
// on the request it gives a Forwarder): the other replica runs it under
// the same id.
func (r SubmitRequest) ForwardedID() string { return r.forwardedID }
