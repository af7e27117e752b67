package dispatch

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// The puller of a replica (cluster.go): one goroutine, woken by
// EventQueued, by a local delegate's credit or connection, by
// EventResync and by the safety poll, coalesced. Each round asks the
// store for as many tasks as the local delegates have free slots for
// (wantsLocked), so a replica never takes more than its delegates can
// start at once: the others' delegates get the rest. All replicas hear
// EventQueued and pull at once; SKIP LOCKED gives each different tasks,
// the first with free credit wins.

// pullLoop runs the puller until ctx is done or the dispatcher closes.
// A failed Pull is retried with backoff (storefail.go); wakeups meanwhile
// are coalesced into the retry, so a failing store sees at most one Pull
// per backoff step.
func (d *Dispatcher) pullLoop(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-d.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() { cancel(); <-watched }() // the watcher is joined too
	poll := time.NewTicker(d.cl.poll)
	defer poll.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.cl.wake:
		case <-poll.C:
		}
		for ctx.Err() == nil {
			more, err := d.pullOnce(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				fails++
				d.storeFailed("pull", "", err)
				if !pauseCtx(ctx, fails) {
					return
				}
				continue
			}
			if fails > 0 {
				fails = 0
				d.storeRecovered()
			}
			if !more {
				break
			}
		}
	}
}

// pullOnce pulls for the local delegates' free credit and admits what it
// got; more reports that the store gave all that was asked (there may be
// more to pull). No delegate with free credit: no store call.
func (d *Dispatcher) pullOnce(ctx context.Context) (more bool, err error) {
	c := d.cl
	c.pullMu.Lock()
	defer c.pullMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false, nil
	}
	wants, total := d.wantsLocked()
	d.mu.Unlock()
	if total == 0 {
		return false, nil
	}
	pctx, cancel := context.WithTimeout(ctx, clusterCallTimeout)
	ts, err := c.st.Pull(pctx, c.replica, wants)
	cancel()
	if err != nil {
		return false, err
	}
	d.admitPulled(ts)
	return len(ts) >= total, nil
}

// wantsLocked is what the local delegates can take now, least loaded
// first: each live, not draining delegate's credit minus the queued
// tasks in memory it could take (they are its already), and their sum.
func (d *Dispatcher) wantsLocked() ([]store.PullWant, int) {
	type want struct {
		w       store.PullWant
		running int
		name    string
	}
	var ws []want
	total := 0
	for _, dg := range d.delegates {
		if !dg.eligible() {
			continue
		}
		free := dg.credit
		for _, q := range d.queues {
			if dg.matches(q.scope, q.selectors) {
				free -= q.l.Len()
			}
		}
		if free <= 0 {
			continue
		}
		ws = append(ws, want{store.PullWant{Tags: dg.tags.sorted(), Scope: dg.scope, N: free, SelectedOnly: dg.internal},
			len(dg.running), dg.name})
		total += free
	}
	slices.SortFunc(ws, func(a, b want) int { return cmp.Or(cmp.Compare(a.running, b.running), strings.Compare(a.name, b.name)) })
	out := make([]store.PullWant, len(ws))
	for i, w := range ws {
		out[i] = w.w
	}
	return out, total
}

// admitPulled puts pulled tasks (queued, owned by this replica) in play
// as Recover puts stored ones, and dispatches them. A task whose payload
// this replica cannot open (another master key) is failed: no replica
// that pulls it could run it either.
func (d *Dispatcher) admitPulled(ts []*store.Task) {
	now := d.now()
	var (
		sends    []send
		admitted []*task
		bad      []*task
	)
	d.mu.Lock()
	for _, st := range ts {
		p, err := d.openPayload(st.ID, st.Payload)
		if cur := d.tasks[st.ID]; cur != nil {
			// Still in memory from before the store took it back (an
			// expired lease): the store's queued copy is the truth.
			d.retakeLocked(cur, st, now)
			continue
		}
		t := d.takeAwaitedLocked(st.ID)
		if err != nil {
			d.log.Error().Err(err).Str("task_id", st.ID).Msg("pulled task has an unreadable payload (is the master key the same on every replica?); failing it")
			if t == nil {
				t = &task{changed: make(chan struct{}), done: make(chan struct{})}
			}
			fillStored(t, st, &delegatev1.TaskPayload{})
			t.busy = true
			bad = append(bad, t)
			continue
		}
		if t == nil {
			t = &task{changed: make(chan struct{}), done: make(chan struct{})}
		}
		d.admitStoredLocked(t, st, p)
		if st.State == store.StateQueued {
			// Its timers are the store's, not restarted by the pull.
			t.deadline = st.Deadline
			if !st.QueueDeadline.IsZero() && t.elem != nil {
				t.queueDL = st.QueueDeadline
			}
		}
		admitted = append(admitted, t)
	}
	for _, t := range admitted {
		if !t.waiting && t.state == store.StateQueued {
			sends = append(sends, d.dispatchTaskLocked(t)...)
		}
	}
	d.mu.Unlock()
	d.deliver(sends)
	for _, t := range bad {
		d.spawn(func() {
			d.persistFinal(t, "", &delegatev1.Outcome{Code: delegatev1.Code_INTERNAL,
				Message: "the manager replica that took the task could not read its payload (see its log)"})
		})
	}
}

// admitStoredLocked puts stored unfinished task st, with its opened
// payload p, in memory as t (new, or a task's object callers hold):
// queued in its queue or waiting in its order chain, or leased. It is
// counted against its scope's limits (never refused: it exists).
func (d *Dispatcher) admitStoredLocked(t *task, st *store.Task, p *delegatev1.TaskPayload) {
	now := d.now()
	fillStored(t, st, p)
	d.tasks[t.id] = t
	t.size = proto.Size(p)
	if !t.held {
		d.limits.add(t.scope, t.size)
	}
	t.held = false // counted as a task in memory from now on (forgetLocked gives it back)
	if st.State == store.StateLeased {
		t.leaseExpiry = now.Add(d.cfg.LeaseDuration.D())
		d.chainLocked(t)
		return
	}
	d.admitLocked(t, now)
}

// fillStored sets t's fields from its stored row st and opened payload
// p (Recover, pulls, adoptions).
func fillStored(t *task, st *store.Task, p *delegatev1.TaskPayload) {
	// A task stored before scopes existed has none; a secret task's
	// scope is its connector's in any case.
	scope := taskScope(st.Scope, p)
	if t.id == "" {
		// A new object. Callers read an existing one's id, kind and
		// creation without the lock: they never change.
		t.id, t.kind, t.async, t.createdAt, t.requestID = st.ID, st.Kind, true, st.CreatedAt, st.Request.ID
	}
	t.selectors, t.scope, t.key, t.orderKey, t.origin = st.Selectors, scope, matchKey(scope, st.Selectors), st.OrderKey, st.Origin
	t.payload, t.state, t.attempt, t.maxAttempts = p, st.State, st.Attempt, st.MaxAttempts
	t.leaseID, t.holder, t.deadline, t.updatedAt = st.LeaseID, st.Delegate, st.Deadline, st.UpdatedAt
	t.busy, t.storing, t.waiting, t.outcome = false, false, false, nil
}

// retakeLocked brings cur, a task still in memory that the store has
// queued for this replica again (pulled), in line: a busy task's write in
// flight reconciles it with the store itself; otherwise a lease memory
// still has is dropped (the delegate is told to stop at its next
// heartbeat) and the task is queued.
func (d *Dispatcher) retakeLocked(cur *task, st *store.Task, now time.Time) {
	if cur.busy || cur.state == store.StateQueued || cur.waiting {
		return
	}
	if dg := d.delegates[cur.holder]; dg != nil && dg.running[cur.id] == cur {
		delete(dg.running, cur.id)
		d.touchLocked(dg)
	}
	cur.leaseID, cur.holder, cur.attempt = "", "", st.Attempt
	cur.updatedAt = now
	d.enqueueLocked(cur, now)
	if !st.QueueDeadline.IsZero() {
		cur.queueDL = st.QueueDeadline
	}
	d.notifyLocked(cur)
	d.deliver(d.dispatchTaskLocked(cur))
}

// disownUnrunnable gives back the owned queued tasks that no local
// delegate can take any more (none connected, or only draining ones,
// serves their scope and carries their selectors): another replica's
// delegate may. They leave memory once the store has them unowned.
func (d *Dispatcher) disownUnrunnable(ctx context.Context) error {
	c := d.cl
	c.pullMu.Lock()
	defer c.pullMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	var drop []*task
	for _, q := range d.queues {
		if d.takerLocked(q.scope, q.selectors) {
			continue
		}
		for e := q.l.Front(); e != nil; e = e.Next() {
			if t := e.Value.(*task); t.async {
				drop = append(drop, t)
			}
		}
	}
	if len(drop) == 0 {
		d.mu.Unlock()
		return nil
	}
	type timers struct{ enqueued, queueDL time.Time }
	saved := make(map[*task]timers, len(drop))
	for _, t := range drop {
		saved[t] = timers{t.enqueuedAt, t.queueDL}
		t.busy = true
		d.dequeueLocked(t)
	}
	keep := make([]string, 0, len(d.tasks))
	for id, t := range d.tasks {
		if _, dropped := saved[t]; !dropped {
			keep = append(keep, id)
		}
	}
	d.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, clusterCallTimeout)
	_, err := c.st.Disown(cctx, c.replica, keep)
	cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range drop {
		if err == nil {
			d.forgetLocked(t)
			continue
		}
		// Not given back: it stays queued here, with its timers.
		t.busy = false
		d.enqueueLocked(t, saved[t].enqueued)
		t.queueDL = saved[t].queueDL
	}
	if err == nil {
		d.log.Info().Int("tasks", len(drop)).Msg("gave back queued tasks no delegate of this replica can take any more")
	}
	return err
}

// takerLocked reports whether a live, not draining local delegate may
// run tasks of this scope and selector set (credit or not).
func (d *Dispatcher) takerLocked(scope store.Scope, selectors []string) bool {
	for _, dg := range d.delegates {
		if !dg.draining && dg.matches(scope, selectors) {
			return true
		}
	}
	return false
}
