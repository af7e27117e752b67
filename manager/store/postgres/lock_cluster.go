package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The lock rule for clusters. A single manager takes the manager lock
// exclusively (LockInstance); the replicas of a cluster take it shared
// (LockCluster), on the same key, and record their cluster's name in
// manager_lock.cluster. So:
//
//   - a replica is refused while a single manager holds the lock (the
//     shared lock is not granted), and a single manager while any
//     replica holds it (the exclusive lock is not granted);
//   - a replica is refused while replicas of another cluster hold it:
//     every replica decides under the record's row lock, after taking
//     the shared lock, whether other sessions hold it too and, if so,
//     whether the record names its cluster. Deciding under the row lock
//     keeps two clusters starting at once from both recording theirs.
//
// The record's epoch moves when the lock changes hands between a single
// manager and a cluster, or between clusters, not when replicas of one
// cluster come and go: a replica that lost its session and takes the
// lock again finds its view stale (ErrLockStale) only if a single
// manager or another cluster held the lock meanwhile.

var _ store.ClusterLocker = (*DB)(nil)

// LockCluster takes the manager lock shared, for a replica of cluster
// (LockOptions.Cluster) described by owner, with the default options; it
// makes DB a store.ClusterLocker.
func (db *DB) LockCluster(ctx context.Context, owner, cluster string) (store.InstanceLock, error) {
	if cluster == "" {
		return nil, fmt.Errorf("postgres: lock for a cluster: empty cluster name: %w", errInvalid)
	}
	l, err := db.Lock(ctx, LockOptions{Owner: owner, Cluster: cluster, Logger: db.log})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// takeShared makes one attempt at the shared lock on conn, in a
// transaction holding the record's row lock. It reports false, holding
// nothing, while a single manager holds the lock or replicas of another
// cluster do. Taken first (by Lock), it records this cluster if the
// record names another (a new epoch); taken again (by Run), it fails
// with ErrLockStale, keeping the lock, if the epoch moved since.
func (l *Lock) takeShared(ctx context.Context, conn *pgx.Conn, first bool) (taken bool, err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	// A session lock outlives the transaction: let go of it, once the
	// transaction is over, on every way out but success.
	defer func() {
		_ = tx.Rollback(context.Background())
		if !taken {
			_, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock_shared($1)", l.key)
		}
	}()
	var (
		epoch    int64
		owner    string
		at       *time.Time
		recorded string
	)
	if err := tx.QueryRow(ctx, "SELECT epoch, owner, acquired_at, cluster FROM manager_lock FOR UPDATE").Scan(&epoch, &owner, &at, &recorded); err != nil {
		return false, fmt.Errorf("read the lock's record: %w", err)
	}
	var ok bool
	if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_lock_shared($1)", l.key).Scan(&ok); err != nil || !ok {
		return false, err // a single manager holds it
	}
	var others int
	if err := tx.QueryRow(ctx, `
		SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid <> pg_backend_pid()
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND classid::bigint = $1 AND objid::bigint = $2`,
		int64(uint64(l.key)>>32), int64(uint32(l.key))).Scan(&others); err != nil {
		return false, err
	}
	if others > 0 && recorded != l.opts.Cluster {
		return false, nil // replicas of another cluster hold it
	}
	switch {
	case !first && epoch != l.epoch:
		// Keep the lock until Close, as an exclusive one is kept.
		taken = true
		return true, fmt.Errorf("%w: %q took it at %s (acquisition %d; this replica's was %d); its tasks in memory may be out of date: restart it",
			ErrLockStale, owner, fromNull(at).Format(time.RFC3339), epoch, l.epoch)
	case !first:
	case recorded != l.opts.Cluster:
		now := time.Now().UTC().Truncate(time.Microsecond)
		if err := tx.QueryRow(ctx, `UPDATE manager_lock SET epoch = epoch + 1, owner = $1, acquired_at = $2, cluster = $3 RETURNING epoch`,
			l.opts.Owner, now, l.opts.Cluster).Scan(&epoch); err != nil {
			return false, fmt.Errorf("record the lock: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("record the lock: %w", err)
	}
	l.epoch, taken = epoch, true
	return true, nil
}
