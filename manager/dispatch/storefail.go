package dispatch

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Store failures. A store write can fail without effect, succeed and
// still report an error (a PostgreSQL call timeout after the commit), be
// slow, or find the task changed under it. The dispatcher never guesses
// which: after a failed write it reads the stored row (GetTask) and acts
// on what the store holds. What a write found is final; any other error
// (transient or not) is retried with backoff, in the goroutine that made
// the write, until it is decided or the dispatcher closes. The errors
// that are never retried, because retrying cannot change them:
//
//   - store.ErrConflict, store.ErrNotFound: the row says what became of
//     the task (read back, then reconciled);
//   - store.ErrClosed: the manager is stopping; the task stays as stored
//     and the next start recovers it.
//
// While a write is retried its task stays busy: the sweeper leaves it
// alone, a result under its lease is kept (the agent holds it until it is
// acknowledged), and no other write for it starts.

const (
	// retryMin and retryMax bound the pause between two tries of a
	// failed store write.
	retryMin = 20 * time.Millisecond
	retryMax = 5 * time.Second
	// outageLogEvery is how often a store outage is logged while it lasts.
	outageLogEvery = 10 * time.Second
)

// retryDelay is the pause before try n+1 of a write that failed n times
// (n >= 1): exponential from retryMin up to retryMax, jittered over its
// upper half so that the tasks of one outage do not retry in step.
func retryDelay(n int) time.Duration {
	d := retryMax
	if n < 16 {
		d = min(retryMin<<(n-1), retryMax)
	}
	return d/2 + rand.N(d/2+1)
}

// pause waits before try n+1 of a failed write; it reports false, at
// once, when the dispatcher closes first.
func (d *Dispatcher) pause(n int) bool {
	t := time.NewTimer(retryDelay(n))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-d.stopping:
		return false
	}
}

// spawn runs f in a goroutine the dispatcher owns: join waits for it.
// After join, f is not run (the manager has stopped; what f would have
// written is recovered from the store at the next start).
func (d *Dispatcher) spawn(f func()) {
	d.spawnMu.Lock()
	defer d.spawnMu.Unlock()
	if d.joined {
		return
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); f() }()
}

// join waits for the dispatcher's goroutines; call it after close, once
// no stream is left, and before the store closes.
func (d *Dispatcher) join() {
	d.spawnMu.Lock()
	d.joined = true
	d.spawnMu.Unlock()
	d.wg.Wait()
	if d.cl != nil {
		// Tasks requeued while the streams drained (a Task message a
		// closed stream refused) are this replica's again: give them
		// back too.
		d.disownAll("join")
	}
}

// outageLog bounds what a store outage logs, whatever the number of
// tasks it touches: the first failure, then at most one line per
// outageLogEvery with the number of failures meanwhile, and one line
// when a write succeeds again. Calls that were under way when the store
// came back still fail for a moment after it (a retry's read-back
// succeeds while an older write reports the outage), so a failure within
// outageLogEvery of the recovery continues the same outage instead of
// starting a new one, and its recovery is logged only if the last
// recovery line is outageLogEvery old: a flapping end logs no more lines
// than a steady one.
type outageLog struct {
	mu        sync.Mutex // guards the fields below
	failing   bool
	since     time.Time // the outage's first failure
	last      time.Time // the last line logged
	n         int       // failures since the last line
	recovered time.Time // when calls last succeeded again after failing
	lastUp    time.Time // the last "succeed again" line
}

// storeFailed notes a failed store call (op, of task id) that will be
// tried again.
func (d *Dispatcher) storeFailed(op, id string, err error) {
	o := &d.outage
	now := d.now()
	o.mu.Lock()
	o.n++
	if !o.failing && !o.recovered.IsZero() && now.Sub(o.recovered) < outageLogEvery {
		o.failing = true // the same outage: a call from before the recovery
	}
	first := !o.failing
	if !first && now.Sub(o.last) < outageLogEvery {
		o.mu.Unlock()
		return
	}
	if first {
		o.failing, o.since = true, now
	}
	n := o.n
	o.n, o.last = 0, now
	o.mu.Unlock()
	ev := d.log.Warn()
	if first {
		ev = d.log.Error()
	}
	ev.Err(err).Str("op", op).Str("task_id", id).Int("failures", n).Bool("transient", store.IsUnavailable(err)).
		Msg("store call failed; retrying with backoff (one line per 10s while it lasts)")
}

// storeRecovered notes that a call that failed before succeeded.
func (d *Dispatcher) storeRecovered() {
	o := &d.outage
	o.mu.Lock()
	if !o.failing {
		o.mu.Unlock()
		return
	}
	now := d.now()
	since, n := o.since, o.n
	o.failing, o.recovered = false, now
	if !o.lastUp.IsZero() && now.Sub(o.lastUp) < outageLogEvery {
		o.mu.Unlock()
		return // a flapping end: the failures stay counted for the next line
	}
	o.n, o.lastUp, o.last = 0, now, now
	o.mu.Unlock()
	d.log.Info().Dur("outage", d.now().Sub(since)).Int("failures", n).Msg("store calls succeed again")
}

// finishStored makes t final in memory as st, its stored row, says it
// ended (someone else completed it). t must be busy.
func (d *Dispatcher) finishStored(t *task, st *store.Task) {
	o := &delegatev1.Outcome{}
	if len(st.Outcome) == 0 || proto.Unmarshal(st.Outcome, o) != nil {
		o = &delegatev1.Outcome{Code: delegatev1.Code(delegatev1.Code_value[st.Code]), Message: "completed elsewhere"}
	}
	d.mu.Lock()
	o = d.generatedLocked(t, st, o)
	d.mu.Unlock()
	d.finish(t, o)
}

// release takes t out of this manager's memory without finishing it: its
// stored row is not this manager's to drive (gone, or claimed under
// another lease). Its waiters are woken (forgetLocked) and read the store
// from then on. t must be busy.
func (d *Dispatcher) release(t *task, why string) {
	d.mu.Lock()
	d.dequeueLocked(t)
	if dg := d.delegates[t.holder]; dg != nil && dg.running[t.id] == t {
		delete(dg.running, t.id)
		d.touchLocked(dg)
	}
	d.forgetLocked(t)
	d.mu.Unlock()
	d.log.Warn().Str("task_id", t.id).Msg("task left this manager's memory: " + why)
}

// readBack reads t's stored row after a failed write. It retries a
// failed read like a failed write (n counts the tries of both), and
// returns ok=false if the dispatcher closed first. A task the store does
// not have is st == nil.
func (d *Dispatcher) readBack(op string, t *task, werr error, n *int) (st *store.Task, ok bool) {
	for {
		st, err := d.store.GetTask(context.Background(), t.id)
		switch {
		case err == nil:
			return st, true
		case errors.Is(err, store.ErrNotFound):
			return nil, true
		case errors.Is(err, store.ErrClosed):
			return nil, false
		}
		d.storeFailed(op, t.id, werr)
		*n++
		if !d.pause(*n) {
			return nil, false
		}
	}
}

// storedAnyway reports whether task id, whose CreateTask failed with err,
// is stored all the same (the write took effect before the error): then
// it is the caller's and runs. Otherwise the caller gets err (the API
// answers Unavailable for a transient one, and a retry with the request
// id finds the task if the write took effect after all).
func (d *Dispatcher) storedAnyway(ctx context.Context, id string, err error) bool {
	if errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrExists) {
		return false
	}
	if _, gerr := d.store.GetTask(ctx, id); gerr != nil {
		return false
	}
	d.log.Warn().Err(err).Str("task_id", id).Msg("the store reported an error storing a task it stored: the task runs")
	return true
}
