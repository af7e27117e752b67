package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The directory: the cluster-wide registry of delegates, for a replica of
// a cluster. Each replica keeps its own delegates' streams in memory, as a
// single manager does (registry.go), and records each one in the store
// (store.Cluster's delegate records) so that a delegate name is held by
// one stream in the whole cluster, other replicas can forward sync tasks
// to it (forward.go), and ListDelegates shows every replica's delegates:
//
//   - Hello: ConnectDelegate, before the Welcome. Another live replica's
//     record of the name for another agent process refuses the stream
//     (*NameHeldError, AlreadyExists to the agent), as a local holder
//     does; the same agent process reconnecting here takes the record
//     over, and the replica that held it closes its stream (as Replaced)
//     when it hears EventDelegate. Connects of one name are serialized on
//     this replica (lockName), so a stream's end and a new stream's Hello
//     never interleave their store calls.
//   - Every refresh interval (and on EventDelegate): UpdateDelegates with
//     the running counts, draining and tags that changed, then Delegates
//     read again: the others' records (remote) are what forwarding and
//     ListDelegates use; a local stream whose record another replica now
//     holds is closed as Replaced; one whose record is gone (this replica
//     was found dead and dropped) is recorded again, or closed if the
//     name was taken meanwhile.
//   - Stream end: DisconnectDelegate (deletes the record only if this
//     replica still holds it).
//   - Operator tags changed here: Notify(EventTags); on EventTags every
//     replica reloads them from the store and re-applies them to its
//     connected delegates (optags.go, reloadTags).

// ReplicaSet is what the directory needs of the cluster's membership:
// the replicas found dead (whose records a Hello may take over) and
// whether a replica is alive (its delegates can be forwarded to).
type ReplicaSet interface {
	Dead() []string
	Alive(id string) bool
}

// DirectoryConfig wires the dispatcher of a replica to the cluster-wide
// registry of delegates.
type DirectoryConfig struct {
	// Replica is this replica's ID.
	Replica string
	// Store holds the delegate records.
	Store   store.Cluster
	Members ReplicaSet
	// Refresh is how often the records are updated and read again
	// (default 1s).
	Refresh time.Duration
}

// dirTimeout bounds each store call of the directory.
const dirTimeout = 10 * time.Second

// directory is the dispatcher's view of the cluster-wide registry.
type directory struct {
	replica string
	st      store.Cluster
	members ReplicaSet
	refresh time.Duration
	// kick and tags wake the loop: a delegate record changed elsewhere,
	// operator tags changed elsewhere (buffered, one pending each).
	kick, tags chan struct{}

	nameMu sync.Mutex // guards names
	names  map[string]*nameLock

	// Guarded by Dispatcher.mu:
	// remote are the records other replicas hold, as last read.
	remote []remoteDelegate
	// inflight counts the sync tasks forwarded to each replica that have
	// not ended (forward.go): load the records do not show yet.
	inflight map[string]int
	// seq counts completed ConnectDelegate calls; a delegate's dirSeq is
	// the count after its own, so a refresh acts only on delegates whose
	// record was written before it read the records.
	seq uint64

	// sent is what UpdateDelegates last stored per local delegate name
	// (touched only by the directory loop).
	sent map[string]store.DelegateRecord
}

// remoteDelegate is a record another replica holds, with its tags as a
// set (matched against every forwardable task's selectors).
type remoteDelegate struct {
	store.DelegateRecord
	tags tagSet
}

// nameLock serializes the connects and disconnects of one name.
type nameLock struct {
	mu   sync.Mutex
	refs int
}

// SetDirectory makes the dispatcher a replica of a cluster: its delegates
// are recorded in the store, and other replicas' delegates are known
// (before it takes streams; never for a single manager). RunDirectory
// keeps the records up to date.
func (d *Dispatcher) SetDirectory(c DirectoryConfig) {
	if c.Refresh <= 0 {
		c.Refresh = time.Second
	}
	d.dir = &directory{
		replica: c.Replica, st: c.Store, members: c.Members, refresh: c.Refresh,
		kick: make(chan struct{}, 1), tags: make(chan struct{}, 1),
		names: map[string]*nameLock{}, inflight: map[string]int{}, sent: map[string]store.DelegateRecord{},
	}
}

// DirectoryEvent hands the directory an event of the cluster (the
// membership's subscriber; it never blocks): EventDelegate refreshes the
// records, EventTags reloads operator tags, EventResync both.
func (d *Dispatcher) DirectoryEvent(e store.Event) {
	if d.dir == nil {
		return
	}
	signal := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	switch e.Kind {
	case store.EventDelegate:
		signal(d.dir.kick)
	case store.EventTags:
		signal(d.dir.tags)
	case store.EventResync:
		signal(d.dir.kick)
		signal(d.dir.tags)
	}
}

// RunDirectory updates and reads the delegate records every refresh
// interval and on events until ctx is done.
func (d *Dispatcher) RunDirectory(ctx context.Context) {
	if d.dir == nil {
		return
	}
	tick := time.NewTicker(d.dir.refresh)
	defer tick.Stop()
	d.dirRefresh(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.dirUpdate(ctx)
			d.dirRefresh(ctx)
		case <-d.dir.kick:
			d.dirRefresh(ctx)
		case <-d.dir.tags:
			if err := d.reloadTags(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn().Err(err).Msg("could not reload operator tags changed on another replica; retrying")
				time.AfterFunc(d.dir.refresh, func() { d.DirectoryEvent(store.Event{Kind: store.EventTags}) })
			}
		}
	}
}

// lockName serializes this replica's connects and disconnects of name;
// it returns the unlock. A no-op for a single manager.
func (d *Dispatcher) lockName(name string) func() {
	if d.dir == nil {
		return func() {}
	}
	dir := d.dir
	dir.nameMu.Lock()
	l := dir.names[name]
	if l == nil {
		l = &nameLock{}
		dir.names[name] = l
	}
	l.refs++
	dir.nameMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		dir.nameMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(dir.names, name)
		}
		dir.nameMu.Unlock()
	}
}

// recordOf is dg's record as this replica stores it. Call with
// Dispatcher.mu held (tags and running change under it).
func (d *Dispatcher) recordOfLocked(dg *delegate) store.DelegateRecord {
	return store.DelegateRecord{
		Name: dg.name, Replica: d.dir.replica, InstanceID: dg.instance, TokenName: dg.token, Scope: dg.scope,
		Tags: dg.tags.sorted(), Capacity: dg.capacity, Running: len(dg.running), Draining: dg.draining,
		Version: dg.version, Hostname: dg.hostname,
	}
}

// dirConnect records dg (about to be registered here) cluster-wide. Its
// name held by another agent process on a live replica refuses it with
// a *NameHeldError; a store failure is returned as is (the agent retries).
// Call with dg's name locked (lockName).
func (d *Dispatcher) dirConnect(dg *delegate, rec store.DelegateRecord) error {
	ctx, cancel := context.WithTimeout(context.Background(), dirTimeout)
	defer cancel()
	for try := 0; ; try++ {
		holder, err := d.dir.st.ConnectDelegate(ctx, rec, d.dir.members.Dead())
		switch {
		case err == nil:
			d.mu.Lock()
			d.dir.seq++
			dg.dirSeq = d.dir.seq
			d.mu.Unlock()
			d.dirNotify(dg.name)
			return nil
		case errors.Is(err, store.ErrExists) && holder != nil && holder.Replica == d.dir.replica && try == 0 && !d.holdsLocal(holder):
			// This replica's own record, of a stream that ended here
			// (its disconnect did not reach the store): stale.
			if err := d.dir.st.DisconnectDelegate(ctx, d.dir.replica, rec.Name); err != nil {
				return fmt.Errorf("register the delegate in the cluster: %w", err)
			}
		case errors.Is(err, store.ErrExists) && holder != nil:
			e := &NameHeldError{Name: dg.name}
			if holder.Scope == dg.scope {
				e.HolderToken = holder.TokenName
			}
			if holder.Replica != d.dir.replica {
				e.Replica = holder.Replica
			}
			d.log.Warn().Str("delegate", dg.name).Str("token", dg.token).Str("holder_token", holder.TokenName).Str("replica", holder.Replica).
				Msg("refused a stream claiming the name of a delegate another agent process holds in the cluster")
			return e
		default:
			return fmt.Errorf("register the delegate in the cluster: %w", err)
		}
	}
}

// holdsLocal reports whether the stream rec describes is connected here.
func (d *Dispatcher) holdsLocal(rec *store.DelegateRecord) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	dg := d.delegates[rec.Name]
	return dg != nil && dg.instance == rec.InstanceID && dg.token == rec.TokenName && dg.scope == rec.Scope
}

// dirDisconnect deletes name's record if this replica holds it. Call
// with the name locked. A failure is logged: the record then goes when a
// refresh finds no stream for it (dirRefresh) or the replica leaves.
func (d *Dispatcher) dirDisconnect(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), dirTimeout)
	defer cancel()
	if err := d.dir.st.DisconnectDelegate(ctx, d.dir.replica, name); err != nil {
		d.log.Warn().Err(err).Str("delegate", name).Msg("could not remove the delegate's record from the cluster")
		return
	}
	d.dirNotify(name)
}

// dirNotify tells the other replicas that name's record changed. Best
// effort: they read the records every refresh interval anyway.
func (d *Dispatcher) dirNotify(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), dirTimeout)
	defer cancel()
	if err := d.dir.st.Notify(ctx, store.Event{Kind: store.EventDelegate, Name: name}); err != nil {
		d.log.Debug().Err(err).Str("delegate", name).Msg("could not notify the replicas of a delegate's change")
	}
}

// dirUpdate stores the running counts, draining and tags of the local
// delegates that changed since the last update.
func (d *Dispatcher) dirUpdate(ctx context.Context) {
	var changed []store.DelegateRecord
	local := map[string]bool{}
	d.mu.Lock()
	for _, dg := range d.delegates {
		if dg.internal {
			continue
		}
		local[dg.name] = true
		r := d.recordOfLocked(dg)
		if s, ok := d.dir.sent[dg.name]; ok && s.Running == r.Running && s.Draining == r.Draining && slices.Equal(s.Tags, r.Tags) {
			continue
		}
		changed = append(changed, r)
	}
	d.mu.Unlock()
	for n := range d.dir.sent {
		if !local[n] {
			delete(d.dir.sent, n)
		}
	}
	if len(changed) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, dirTimeout)
	defer cancel()
	if err := d.dir.st.UpdateDelegates(cctx, d.dir.replica, changed); err != nil {
		if ctx.Err() == nil {
			d.log.Debug().Err(err).Int("delegates", len(changed)).Msg("could not update the delegate records; retrying")
		}
		return
	}
	for _, r := range changed {
		d.dir.sent[r.Name] = r
	}
}

// dirRefresh reads every delegate record: the others' become remote;
// local streams whose record another replica holds are closed as
// Replaced; those whose record is gone are recorded again.
func (d *Dispatcher) dirRefresh(ctx context.Context) {
	d.mu.Lock()
	seq := d.dir.seq
	d.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, dirTimeout)
	recs, err := d.dir.st.Delegates(cctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			d.log.Debug().Err(err).Msg("could not read the delegate records")
		}
		return
	}
	byName := make(map[string]*store.DelegateRecord, len(recs))
	remote := make([]remoteDelegate, 0, len(recs))
	for i := range recs {
		byName[recs[i].Name] = &recs[i]
		if recs[i].Replica != d.dir.replica {
			remote = append(remote, remoteDelegate{recs[i], newTagSet(recs[i].Tags)})
		}
	}
	var lost []*delegate
	d.mu.Lock()
	d.dir.remote = remote
	for _, dg := range d.delegates {
		if dg.internal || dg.dirSeq > seq {
			continue
		}
		r := byName[dg.name]
		switch {
		case r == nil:
			lost = append(lost, dg)
		case r.Replica != d.dir.replica:
			d.log.Info().Str("delegate", dg.name).Str("replica", r.Replica).Msg("the delegate reconnected to another replica; closing its stream here")
			d.kickLocked(dg)
		}
	}
	d.mu.Unlock()
	for _, dg := range lost {
		d.reclaim(dg)
	}
}

// reclaim records again a local delegate whose record is gone (this
// replica was found dead and dropped, or a disconnect raced it); if
// another agent process took the name meanwhile, its stream is closed.
func (d *Dispatcher) reclaim(dg *delegate) {
	unlock := d.lockName(dg.name)
	defer unlock()
	d.mu.Lock()
	if d.delegates[dg.name] != dg {
		d.mu.Unlock()
		return
	}
	rec := d.recordOfLocked(dg)
	d.mu.Unlock()
	err := d.dirConnect(dg, rec)
	var held *NameHeldError
	switch {
	case errors.As(err, &held):
		d.mu.Lock()
		if d.delegates[dg.name] == dg {
			d.kickLocked(dg)
		}
		d.mu.Unlock()
	case err != nil:
		d.log.Debug().Err(err).Str("delegate", dg.name).Msg("could not record the delegate again")
	default:
		d.log.Info().Str("delegate", dg.name).Msg("recorded the delegate in the cluster again")
	}
}

// kickLocked closes dg's stream as Replaced: another replica holds its
// name now. Its leases stay, as at a disconnect.
func (d *Dispatcher) kickLocked(dg *delegate) {
	if d.delegates[dg.name] != dg {
		return
	}
	delete(d.delegates, dg.name)
	d.leavePoolsLocked(dg)
	dg.out.Close()
	close(dg.kicked)
	d.metrics.delegates.Set(float64(d.connectedLocked()))
}

// remoteLocked returns the records of other replicas that are alive.
func (d *Dispatcher) remoteLocked() []store.DelegateRecord {
	if d.dir == nil {
		return nil
	}
	out := make([]store.DelegateRecord, 0, len(d.dir.remote))
	for _, r := range d.dir.remote {
		if d.dir.members.Alive(r.Replica) {
			out = append(out, r.DelegateRecord)
		}
	}
	return out
}
