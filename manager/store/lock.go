package store

import "context"

// InstanceLocker is implemented by a Store that several processes can open
// at once (PostgreSQL), so that the manager, not Open, keeps a second
// manager off it: tests and tools open several stores on one database, a
// manager takes the lock once for its life. bolt does not implement it:
// its file lock, taken at Open, already admits one process.
type InstanceLocker interface {
	// LockInstance takes the store's manager lock for owner, a
	// description of this process ("smd manager HOST pid PID") that a
	// refused manager's error shows. When another process holds it, it
	// waits a few seconds for it to go (a killed manager's session ends
	// once the server notices), then fails with an error naming that
	// process as far as the store can tell.
	LockInstance(ctx context.Context, owner string) (InstanceLock, error)
}

// ClusterLocker is implemented by a Store that replicas of a cluster can
// share (PostgreSQL). A single manager takes its lock exclusively
// (InstanceLocker); the replicas of one cluster take it together.
type ClusterLocker interface {
	// LockCluster takes the store's manager lock for owner (as
	// LockInstance's owner) as a replica of cluster: replicas of one
	// cluster hold it together. It is refused, after the same wait as
	// LockInstance, with an error naming the holders as far as the
	// store can tell, while a single manager holds the lock or replicas
	// of another cluster do; a single manager's LockInstance is refused
	// while any replica holds it. The lock is watched and released as
	// LockInstance's; Run reports it stale when a single manager or
	// another cluster held it while it was lost.
	LockCluster(ctx context.Context, owner, cluster string) (InstanceLock, error)
}

// InstanceLock is a held manager lock (InstanceLocker). While it is lost,
// the store it came from fails every call (a transient error: the
// manager's retries and the API's Unavailable apply), so that a manager
// that may no longer be the only one writes nothing.
type InstanceLock interface {
	// Run watches the lock until ctx is done, then returns nil. When the
	// lock is lost, Run calls changed(false, cause), takes the lock again
	// (retrying with backoff) and calls changed(true, nil). If another
	// manager held the lock in between, this manager's view of the store
	// is stale: Run returns an error and the store stays unusable.
	// changed is called from Run's goroutine.
	Run(ctx context.Context, changed func(held bool, cause error)) error
	// Close releases the lock. Call it after Run has returned, and after
	// the store is closed, so that no successor starts while this
	// manager still writes. Close is idempotent.
	Close(ctx context.Context) error
}
