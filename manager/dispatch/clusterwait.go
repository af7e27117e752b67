package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Waiters of tasks a replica does not hold (cluster.go). A caller waits
// for an async task through the *task its Submit returned (Submitted:
// Done, Info) or through GetTask (WatchTask). In cluster mode that task
// may run on another replica: it is then an awaited task here, and its
// end is learnt from the store when the task's EventFinal arrives (every
// replica hears every task's), or, after an EventResync (notifications
// may have been lost), by reading every awaited task again. No waiter
// polls the store for its end.

// awaitedTask is a task callers of this replica wait for while it is in
// no replica's memory here. Guarded by Dispatcher.mu.
type awaitedTask struct {
	t *task
	// reading is set while its stored row is being read: a second
	// event does not start a second read.
	reading bool
	// again asks the read under way to read once more (an event came
	// during it).
	again bool
}

// awaitLocked makes t, an unfinished async task leaving memory, an
// awaited task (cluster mode): its waiters are not released (done stays
// open) until the store says it ended. False for a single manager, a
// sync task or a final one.
func (d *Dispatcher) awaitLocked(t *task) bool {
	if d.cl == nil || !t.async || t.state.Final() {
		return false
	}
	t.busy, t.elem = false, nil
	d.cl.awaited[t.id] = &awaitedTask{t: t}
	return true
}

// takeAwaitedLocked removes and returns the awaited task of id, if any:
// it is pulled or adopted here, and its object (which callers hold)
// goes into memory.
func (d *Dispatcher) takeAwaitedLocked(id string) *task {
	if d.cl == nil {
		return nil
	}
	a := d.cl.awaited[id]
	if a == nil {
		return nil
	}
	delete(d.cl.awaited, id)
	return a.t
}

// awaitedOrNilLocked returns the awaited task of id, or nil.
func (d *Dispatcher) awaitedOrNilLocked(id string) *task {
	if d.cl == nil {
		return nil
	}
	if a := d.cl.awaited[id]; a != nil {
		return a.t
	}
	return nil
}

// finalEvent handles task id's EventFinal: GetTask callers looking at it
// are woken, and an awaited task, or a stale copy in memory that no
// write is deciding (another replica finished it), is read again.
func (d *Dispatcher) finalEvent(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch := d.cl.finalWake[id]; ch != nil {
		delete(d.cl.finalWake, id)
		close(ch)
	}
	if a := d.cl.awaited[id]; a != nil {
		d.readAwaitedLocked(a)
		return
	}
	if t := d.tasks[id]; t != nil && !t.busy {
		d.spawn(func() { d.finalElsewhere(t) })
	}
}

// resync re-reads every awaited task and wakes every GetTask caller,
// after notifications may have been lost.
func (d *Dispatcher) resync() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, ch := range d.cl.finalWake {
		delete(d.cl.finalWake, id)
		close(ch)
	}
	for _, a := range d.cl.awaited {
		d.readAwaitedLocked(a)
	}
}

// readAwaitedLocked reads a's stored row in a goroutine, once at a time.
func (d *Dispatcher) readAwaitedLocked(a *awaitedTask) {
	if a.reading {
		a.again = true
		return
	}
	a.reading = true
	d.spawn(func() { d.readAwaited(a) })
}

// readAwaited reads awaited task a from the store (retrying a failed
// read with backoff until the dispatcher closes) and shows its callers
// what it holds; once it is final (or gone: pruned when final) it is no
// longer awaited and its callers are released.
func (d *Dispatcher) readAwaited(a *awaitedTask) {
	t := a.t
	for n := 0; ; {
		st, err := d.store.GetTask(context.Background(), t.id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			if errors.Is(err, store.ErrClosed) {
				return
			}
			d.storeFailed("read awaited task", t.id, err)
			n++
			if !d.pause(n) {
				return
			}
			continue
		}
		if n > 0 {
			d.storeRecovered()
		}
		d.mu.Lock()
		if d.cl.awaited[t.id] != a {
			d.mu.Unlock()
			return // pulled or adopted here meanwhile: memory has it
		}
		if a.again {
			a.again = false
			d.mu.Unlock()
			continue
		}
		a.reading = false
		if st == nil || st.State.Final() {
			delete(d.cl.awaited, t.id)
			if st != nil {
				setStored(t, st) // closes done; Info waits for d.mu
				t.outcome = d.generatedLocked(t, st, t.outcome)
			}
			d.endAwaitedLocked(t)
		} else {
			t.state, t.attempt, t.holder, t.updatedAt = st.State, st.Attempt, st.Delegate, st.UpdatedAt
			d.notifyLocked(t)
		}
		d.mu.Unlock()
		return
	}
}

// endAwaitedLocked releases the callers of t, an awaited task that ended
// (or is gone), and what it held against its scope's limits.
func (d *Dispatcher) endAwaitedLocked(t *task) {
	if t.held {
		d.limits.release(t.scope, t.size)
		t.held = false
	}
	d.notifyLocked(t)
	select {
	case <-t.done:
	default:
		close(t.done)
	}
}

// finalElsewhere handles the EventFinal of t, a task in memory no write
// was deciding: if the store has it final (another replica finished it,
// under a lease this replica's copy did not know), it ends here too.
func (d *Dispatcher) finalElsewhere(t *task) {
	st, err := d.store.GetTask(context.Background(), t.id)
	if err != nil || !st.State.Final() {
		return // the sweep and the writes reconcile it later
	}
	d.mu.Lock()
	if d.tasks[t.id] != t || t.busy {
		d.mu.Unlock()
		return
	}
	t.busy = true
	d.dequeueLocked(t)
	holder := d.delegates[t.holder]
	leaseID, leased := t.leaseID, t.state == store.StateLeased
	d.mu.Unlock()
	if leased && holder != nil {
		holder.out.Push(cancelMsg(t.id, leaseID, "the task was completed elsewhere"))
	}
	d.finishStored(t, st)
}

// storedWake is the channel GetTask returns for a stored unfinished
// task this replica does not hold: closed after wait (a poll), and in
// cluster mode sooner, at the task's EventFinal.
func (d *Dispatcher) storedWake(id string, wait time.Duration) <-chan struct{} {
	if d.cl == nil {
		ch := make(chan struct{})
		time.AfterFunc(wait, func() { close(ch) })
		return ch
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := d.cl.finalWake[id]
	if ch == nil {
		ch = make(chan struct{})
		d.cl.finalWake[id] = ch
	}
	time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.cl.finalWake[id] == ch {
			delete(d.cl.finalWake, id)
			close(ch)
		}
	})
	return ch
}

// awaitStored follows t, a stored unfinished task this dispatcher does
// not hold, for a caller (a repeated request): in cluster mode as an
// awaited task, else by reading the store for as long as ctx lasts. It
// returns the object to hold: another caller's, when one awaits it
// already.
func (d *Dispatcher) awaitStored(ctx context.Context, t *task) *task {
	if d.cl == nil {
		d.followStored(ctx, t)
		return t
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur := d.tasks[t.id]; cur != nil {
		return cur
	}
	if a := d.cl.awaited[t.id]; a != nil {
		return a.t
	}
	a := &awaitedTask{t: t}
	d.cl.awaited[t.id] = a
	// It may have ended before it was awaited: read it once.
	d.readAwaitedLocked(a)
	return t
}

// await makes t, an async task being submitted, an awaited task (cluster
// mode) before the store has it, so that a pull here takes this object,
// which the caller holds.
func (d *Dispatcher) await(t *task) {
	if d.cl == nil {
		return
	}
	d.mu.Lock()
	d.cl.awaited[t.id] = &awaitedTask{t: t}
	d.mu.Unlock()
}

// unawait undoes await for a task the store did not take, and gives
// back its reservation.
func (d *Dispatcher) unawait(t *task) {
	if d.cl == nil {
		return
	}
	d.mu.Lock()
	if a := d.cl.awaited[t.id]; a != nil && a.t == t {
		delete(d.cl.awaited, t.id)
		if t.held {
			d.limits.release(t.scope, t.size)
			t.held = false
		}
	}
	d.mu.Unlock()
}
