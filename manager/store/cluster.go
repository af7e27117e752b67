package store

import (
	"context"
	"time"
)

// Several managers on one database (replicas of one cluster) share what
// one manager keeps in memory through the store: who is alive (Replica),
// which delegate is connected where (DelegateRecord), and the queue of
// asynchronous tasks. A Store that supports it implements Cluster;
// PostgreSQL does, bolt (one process per file) does not.
//
// The shared queue. Every async task has an owner: the replica whose
// dispatcher holds it in memory and dispatches it to its own delegates,
// or none (Task.Owner ""), when it waits in the store for a replica to
// Pull it. A replica pulls queued tasks its delegates can take (their
// tags and scope), as many as they have free slots, with FOR UPDATE SKIP
// LOCKED so that replicas pulling at once take different tasks. Claim,
// Requeue and Complete are fenced by the owner as well as the lease
// (ErrConflict when another replica owns the task), so a replica whose
// view is stale changes nothing. Leases are durable: Claim stores the
// lease's expiry, RenewLeases extends it (batched from heartbeats), and
// ExpireLeases, run by any replica, takes back a task whose lease lapsed
// whoever owns it. A replica that stops or dies gives its queued tasks
// back (Disown, by itself at shutdown or by a survivor once its Replica
// record is stale); its leased tasks stay leased to their delegates,
// which Adopt on the replica they reconnect to, or expire.
//
// A store opened for a replica (postgres.Options.Replica, with its
// LeaseDuration) fences Claim and Requeue by the owner as well: Claim
// takes only a task the replica owns and stores the lease's expiry (the
// store's now plus LeaseDuration), Requeue puts back only a task the
// replica owns (it stays the replica's). Complete stays fenced by the
// lease alone: the result of the current lease is the task's result,
// whichever replica's stream carried it. CreateTask stores Task.Owner as
// given: a replica creates async tasks unowned, and pulls them like any
// other (an EventQueued follows the insert).
//
// Times in this file are the store's clock (PostgreSQL's now()), so that
// replicas never compare their own clocks.

// Replica is one manager process of a cluster, as its heartbeat row has
// it.
type Replica struct {
	// ID is unique per process start.
	ID string
	// Cluster is the cluster name (cluster.name): replicas of other
	// clusters may not share the store.
	Cluster string
	// Advertise is the host:port its peers dial (cluster.advertise).
	Advertise string
	// Host and PID describe the process, for operators.
	Host string
	PID  int
	// StartedAt is when it joined; LastSeen its latest Beat (store clock).
	StartedAt time.Time
	LastSeen  time.Time
	// Age is how long ago LastSeen was, by the store's clock when
	// Replicas read it.
	Age time.Duration
}

// DelegateRecord is a delegate connected to some replica: cluster-wide,
// a delegate name is held by one stream.
type DelegateRecord struct {
	// Name is the delegate's name (normalized like a tag).
	Name string
	// Replica is the ID of the replica holding its stream.
	Replica string
	// InstanceID, TokenName and Scope decide whether a new stream under
	// Name is the same agent reconnecting (it may take the name over)
	// or another one (refused while Replica is alive).
	InstanceID string
	TokenName  string
	Scope      Scope
	// Tags are its effective tags (declared and operator tags).
	Tags     []string
	Capacity int
	// Running is how many tasks it ran at its replica's last update.
	Running  int
	Draining bool
	Version  string
	Hostname string
	// ConnectedAt is when this stream connected; UpdatedAt its last
	// update (store clock).
	ConnectedAt time.Time
	UpdatedAt   time.Time
}

// PullWant is what one local delegate can take: up to N tasks whose
// selectors are all among Tags and whose scope Scope serves (a task with
// no scope is served by every delegate; a delegate with no scope serves
// every task).
type PullWant struct {
	Tags  []string
	Scope Scope
	N     int
	// SelectedOnly takes only tasks with at least one selector: the
	// manager's own platform delegate runs only the tasks that select it
	// (its tag), never one without selectors.
	SelectedOnly bool
}

// LeaseRef names a task under a lease, as a heartbeat or a Hello lists it.
type LeaseRef struct {
	TaskID  string
	LeaseID string
}

// Event is a change another replica (or this one) made that a replica
// may act on, delivered by Cluster.Listen.
type Event struct {
	Kind EventKind
	// TaskID, for EventFinal: the task that became final.
	TaskID string
	// Name, for EventDelegate: the delegate whose record changed.
	Name string
}

// EventKind is an Event's kind.
type EventKind int

// Event kinds.
const (
	// EventQueued: an unowned task became queued (created, requeued,
	// disowned, or the head of its order chain): pull.
	EventQueued EventKind = iota + 1
	// EventFinal: task TaskID became final: wake its waiters.
	EventFinal
	// EventDelegate: delegate Name's record changed (connected elsewhere,
	// tagged, gone).
	EventDelegate
	// EventTags: operator tags changed: reload them.
	EventTags
	// EventResync: notifications may have been missed (the listening
	// connection was lost and is back): re-read what matters.
	EventResync
)

// Cluster is what replicas of one cluster share through the store (see
// above). Every method is safe for concurrent use and, like Store's,
// returns errors matching ErrUnavailable when the store cannot be
// reached.
type Cluster interface {
	// Beat records r alive now (inserting or updating its row; the store
	// sets LastSeen).
	Beat(ctx context.Context, r Replica) error
	// Replicas returns every replica row with its Age.
	Replicas(ctx context.Context) ([]Replica, error)
	// Leave deletes replica id's row (a clean shutdown).
	Leave(ctx context.Context, id string) error

	// Pull gives replica up to each want's N unowned queued tasks that
	// want's delegate may run, oldest first, as the replica's: their
	// Owner becomes replica. Only the head of an order chain (no earlier
	// unfinished task with its OrderKey) is pulled. Tasks are locked
	// with SKIP LOCKED: concurrent pulls take different tasks.
	Pull(ctx context.Context, replica string, wants []PullWant) ([]*Task, error)
	// Disown gives back the queued tasks replica owns (Owner ""),
	// except those in keep, and reports how many; an EventQueued
	// follows.
	Disown(ctx context.Context, replica string, keep []string) (int, error)
	// Adopt makes replica the owner of each listed task that is leased
	// under the listed lease, and renews those leases by d; it returns
	// the adopted tasks (a delegate's Hello on another replica).
	Adopt(ctx context.Context, replica string, leases []LeaseRef, d time.Duration) ([]*Task, error)
	// RenewLeases extends by d each listed lease that is current and
	// owned by replica; it returns the refs that were not.
	RenewLeases(ctx context.Context, replica string, leases []LeaseRef, d time.Duration) ([]LeaseRef, error)
	// ExpireLeases requeues, unowned, every leased task whose lease
	// expired more than margin ago (ordered tasks: plus orderMargin), or
	// fails it DELEGATE_LOST when it used its attempts, and returns the
	// tasks it changed (as they are now).
	ExpireLeases(ctx context.Context, margin, orderMargin time.Duration) ([]*Task, error)
	// ExpireQueued fails every unowned queued task past its queue
	// deadline (NO_ELIGIBLE_DELEGATE) or its deadline (TIMEOUT) and
	// returns them as they are now. A task waiting behind an earlier one
	// of its order chain does not expire (its timers start when it
	// becomes the head).
	ExpireQueued(ctx context.Context) ([]*Task, error)

	// ConnectDelegate records d as held by d.Replica and returns the
	// record as stored, with an EventDelegate. If another record holds
	// d.Name, it is replaced when its replica is d.Replica (whose own
	// registry decided already), or is in dead (IDs of replicas the
	// caller found stale), or when d has the same InstanceID (not
	// empty), TokenName and Scope (a reconnect); else nothing changes
	// and the holder is returned with ErrExists.
	ConnectDelegate(ctx context.Context, d DelegateRecord, dead []string) (*DelegateRecord, error)
	// UpdateDelegates updates the Running, Draining and Tags of records
	// held by replica (batched from its registry); a record whose
	// Draining or Tags changed gets an EventDelegate.
	UpdateDelegates(ctx context.Context, replica string, ds []DelegateRecord) error
	// DisconnectDelegate deletes name's record if replica holds it (an
	// EventDelegate follows).
	DisconnectDelegate(ctx context.Context, replica, name string) error
	// Delegates returns every record.
	Delegates(ctx context.Context) ([]DelegateRecord, error)
	// DropReplica deletes the delegate records and the row of replica
	// (found dead) and disowns its queued tasks (an EventDelegate per
	// record, an EventQueued).
	DropReplica(ctx context.Context, replica string) error

	// Notify sends e to every replica's Listen (the Kinds a caller
	// raises itself: EventDelegate, EventTags). Store methods that cause
	// an event send it in their own transaction.
	Notify(ctx context.Context, e Event) error
	// Listen calls fn for each event until ctx is done, from one
	// goroutine; after a lost connection it reconnects and calls fn with
	// EventResync. It returns nil when ctx is done.
	Listen(ctx context.Context, fn func(Event)) error
}
