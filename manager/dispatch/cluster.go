package dispatch

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Cluster mode: the dispatcher of one replica of a cluster (several
// managers on one PostgreSQL database, store.Cluster). Sync tasks stay in
// memory as for a single manager. Async tasks live in the shared queue:
//
//   - Submit stores an async task unowned and wakes the puller; the task
//     is in no replica's memory until one pulls it. The caller's
//     Submitted follows it as an awaited task (clusterwait.go).
//   - The puller (pull.go) takes from the store as many tasks as the
//     local delegates have free credit for, least loaded first, and admits
//     them as Recover admits stored tasks: from there the engine of a
//     single manager dispatches them (Claim, fenced by owner).
//   - A write that finds the task changed under it (ErrConflict) and
//     reads back another owner, or none, takes the task out of memory
//     (release): it is another replica's, or the queue's, now.
//   - Leases are durable: heartbeats' renewals are batched into
//     RenewLeases once per heartbeat interval, and every replica sweeps
//     the store every second (ExpireLeases, ExpireQueued) for tasks whose
//     owner is gone (clustersweep.go).
//   - A delegate that reconnects here with running tasks another replica
//     owned has them adopted (Adopt), kept and not dispatched again; its
//     results are accepted here.
//   - Owned queued tasks no local delegate can take any more are given
//     back (Disown); Close gives back every queued one. Leased tasks stay
//     leased: their delegates resume them on another replica.

// Members is the cluster's membership as the dispatcher needs it
// (manager/cluster implements it).
type Members interface {
	// Dead returns the IDs of replicas found dead.
	Dead() []string
	// Alive reports whether replica id is alive.
	Alive(id string) bool
}

// ClusterConfig makes a dispatcher a replica's (SetCluster).
type ClusterConfig struct {
	// Replica is this replica's ID (the store was opened for it).
	Replica string
	// Store is the store's cluster side.
	Store store.Cluster
	// Members is the membership.
	Members Members
	// PollInterval is the puller's safety poll (cluster.poll_interval):
	// it pulls at least this often, events or not.
	PollInterval time.Duration
}

// Bounds of the cluster's store calls.
const (
	// clusterCallTimeout bounds one store call of the puller, sweep and
	// adoption (the store has its own call timeout as well).
	clusterCallTimeout = 30 * time.Second
	// disownTimeout bounds giving the queued tasks back at Close.
	disownTimeout = 5 * time.Second
	// clusterSweepEvery is how often the store is swept.
	clusterSweepEvery = time.Second
	// defaultPollInterval is the safety poll when none is configured.
	defaultPollInterval = 5 * time.Second
)

// clusterState is the dispatcher's cluster mode; nil for a single
// manager.
type clusterState struct {
	replica string
	st      store.Cluster
	members Members
	poll    time.Duration

	// wake is the puller's coalesced wakeup (capacity 1).
	wake chan struct{}
	// pullMu is held by a pull (from Pull until its tasks are in
	// memory) and by every Disown: the tasks a Disown keeps are those in
	// memory, so a pull must not be halfway.
	pullMu sync.Mutex

	// Guarded by Dispatcher.mu:
	//
	// awaited are the async tasks not in memory that callers wait for:
	// submitted here and not pulled here, or left memory unfinished
	// (clusterwait.go).
	awaited map[string]*awaitedTask
	// finalWake are the channels GetTask handed out for tasks not in
	// memory, closed at the task's EventFinal (or EventResync).
	finalWake map[string]chan struct{}
	// renew are the leases heartbeats renewed since the last
	// RenewLeases.
	renew map[store.LeaseRef]struct{}
}

// SetCluster makes d a replica's dispatcher (call it before Recover;
// never for a single manager).
func (d *Dispatcher) SetCluster(c ClusterConfig) {
	poll := c.PollInterval
	if poll <= 0 {
		poll = defaultPollInterval
	}
	d.cl = &clusterState{
		replica: c.Replica, st: c.Store, members: c.Members, poll: poll,
		wake:      make(chan struct{}, 1),
		awaited:   map[string]*awaitedTask{},
		finalWake: map[string]chan struct{}{},
		renew:     map[store.LeaseRef]struct{}{},
	}
}

// OnEvent acts on an event of the cluster (the membership's
// subscriber): EventQueued wakes the puller, EventFinal wakes the
// waiters of a task this replica does not hold, EventResync does both
// for everything. It never blocks on the store.
func (d *Dispatcher) OnEvent(e store.Event) {
	if d.cl == nil {
		return
	}
	switch e.Kind {
	case store.EventQueued:
		d.wakePull()
	case store.EventFinal:
		d.finalEvent(e.TaskID)
	case store.EventResync:
		d.wakePull()
		d.resync()
	}
}

// wakePull wakes the puller (coalesced: one pending wakeup at most).
func (d *Dispatcher) wakePull() {
	if d.cl == nil {
		return
	}
	select {
	case d.cl.wake <- struct{}{}:
	default:
	}
}

// ownedElsewhere reports whether st, a task's stored row read back
// after a write failed, is not this replica's to drive: in cluster mode,
// owned by another replica or by none.
func (d *Dispatcher) ownedElsewhere(st *store.Task) bool {
	return d.cl != nil && st.Owner != d.cl.replica
}

// runCluster starts the replica's loops until ctx is done: the puller
// (which stops as soon as the dispatcher closes), the lease renewals and
// the store sweep (which go on while the streams drain). The returned
// func waits for them.
func (d *Dispatcher) runCluster(ctx context.Context) (wait func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){d.pullLoop, d.renewLoop, d.clusterSweepLoop} {
		wg.Add(1)
		go func() { defer wg.Done(); loop(ctx) }()
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// closeCluster gives the queued tasks back to the shared queue as the
// dispatcher closes (closed is set): the puller stops, the queued tasks
// leave memory, and Disown makes them anyone's. Leased tasks stay leased
// to their delegates, which resume them on another replica. A Disown the
// store refuses until disownTimeout is left to the replica's death (the
// survivors drop it and disown its tasks).
func (d *Dispatcher) closeCluster() {
	c := d.cl
	c.pullMu.Lock()
	defer c.pullMu.Unlock()
	d.mu.Lock()
	var queued []*task
	for _, t := range d.tasks {
		if t.async && !t.busy && t.state == store.StateQueued {
			t.busy = true
			d.dequeueLocked(t)
			queued = append(queued, t)
		}
	}
	d.mu.Unlock()
	d.disownAll("close")
	d.mu.Lock()
	for _, t := range queued {
		d.forgetLocked(t) // awaited: its waiters learn its end from the store
	}
	d.mu.Unlock()
}

// disownAll gives back every queued task this replica owns, retrying
// for up to disownTimeout.
func (d *Dispatcher) disownAll(why string) {
	c := d.cl
	deadline := time.Now().Add(disownTimeout)
	for n := 1; ; n++ {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		k, err := c.st.Disown(ctx, c.replica, nil)
		cancel()
		if err == nil {
			if k > 0 {
				d.log.Info().Int("tasks", k).Str("when", why).Msg("gave the queued tasks back to the cluster's queue")
			}
			return
		}
		if errors.Is(err, store.ErrClosed) || time.Now().Add(retryDelay(n)).After(deadline) {
			d.log.Warn().Err(err).Str("when", why).
				Msg("could not give the queued tasks back to the cluster's queue; the other replicas take them once this one is found dead")
			return
		}
		time.Sleep(retryDelay(n))
	}
}

// pauseCtx waits before try n+1 of a failed store call of a loop; false
// when ctx ends first.
func pauseCtx(ctx context.Context, n int) bool {
	t := time.NewTimer(retryDelay(n))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
