// Package bolt is the embedded store.Store: one bbolt file, no setup. It is
// the manager's default store; a single manager process owns the file, which
// is locked against a second process.
//
// # Layout
//
// Four buckets hold tasks:
//
//   - "tasks": task id → the task, in the binary layout described in codec.go.
//   - "created": creation key → empty, one entry per task. ListTasks walks it
//     backwards (newest first) and Prune forwards (oldest first).
//   - "unfinished": creation key → empty, one entry per queued or leased
//     task, so ListUnfinished never scans finished history.
//   - "requests": request key → task id, one entry per task with a
//     Request.ID, so that CreateTask finds the task of a retried request
//     in the transaction that would insert it. A request key is
//     Request.Owner's length (uvarint), Owner, then Request.ID. Prune
//     deletes a task's entry with the task.
//
// A creation key is the task's CreatedAt (8 bytes of Unix seconds with the
// sign bit flipped, then 4 bytes of nanoseconds, both big-endian, so byte
// order is time order) followed by the task id. Tasks created at the same
// instant are therefore ordered by id.
//
// Five more hold the store.Catalog (catalog.go; keys and values in
// catalog_codec.go): "connectors", "connector_defaults" (scope → the id of
// its default connector), "credentials", "signing_keys" and
// "delegate_tags". Buckets missing from an older file are created by Open.
//
// # Durability and throughput
//
// Every mutation returns only after its transaction has been committed and
// fsynced. Task mutations go through a group commit (committer), so concurrent
// callers share one transaction and one fsync. Catalog
// mutations are rare and each has a transaction of its own.
//
// # Replaced payloads
//
// Complete replaces a task's payload (the manager's holds no secret
// value), and ScrubFinished rewrites what an older version completed.
// bbolt copies a page on write and does not zero the page it frees: the
// replaced bytes stay in the file's free space until bbolt reuses the
// page for a later write.
//
// # Times
//
// Times keep nanosecond precision and come back in UTC (compare with
// time.Time.Equal). CreateTask sets a zero CreatedAt to the current time and
// a zero UpdatedAt to CreatedAt; Claim, Requeue and Complete set UpdatedAt to
// the current time. Catalog timestamps are as store.Catalog documents.
package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/smdelegate/smdelegate/manager/store"
)

var _ store.Store = (*DB)(nil)

// Errors returned by this package, beside the store sentinels. Compare with
// errors.Is.
var (
	// ErrInUse: Open could not lock the file within Options.LockTimeout,
	// because another process (or another Open in this one) holds it.
	ErrInUse = errors.New("bolt: database file in use")
)

// FileName is the name of the database file inside a data directory, for
// callers that are given a directory: Open(filepath.Join(dir, FileName), ...).
const FileName = "smd.db"

// Defaults for Options fields left zero. See the fields for why.
const (
	DefaultLockTimeout   = 1 * time.Second
	DefaultPruneInterval = 10 * time.Minute
)

var (
	bucketTasks      = []byte("tasks")
	bucketCreated    = []byte("created")
	bucketUnfinished = []byte("unfinished")
	bucketRequests   = []byte("requests")
)

// Options configures Open. The zero value is usable.
type Options struct {
	// LockTimeout is how long Open waits for the file lock held by another
	// process before it fails with ErrInUse. Zero means DefaultLockTimeout;
	// negative means fail at once.
	LockTimeout time.Duration

	// MaxBatchSize caps the mutations committed in one transaction (see
	// committer: mutations that arrive while a transaction commits join
	// the next one). Zero means DefaultMaxBatchSize.
	MaxBatchSize int

	// KeepFinished, when positive, makes the DB delete final tasks that
	// finished (UpdatedAt) more than KeepFinished ago, every PruneInterval,
	// from a goroutine that Close stops. Zero keeps history forever; callers
	// may still call Prune themselves.
	KeepFinished time.Duration

	// PruneInterval is how often KeepFinished is applied. Zero means
	// DefaultPruneInterval.
	PruneInterval time.Duration

	// Logger receives the errors of the background prune. The zero value
	// logs nothing.
	Logger zerolog.Logger
}

// DB is a store.Store in one bbolt file. Create it with Open; it is safe for
// concurrent use.
type DB struct {
	bdb    *bbolt.DB
	commit *committer // group commit of task mutations
	path   string
	log    zerolog.Logger

	// life gates every call (so Close waits for calls in flight and no
	// call ever reaches a closed bbolt.DB) and runs the prune loop.
	life store.Lifetime

	// pruneChunk is how many tasks one prune transaction examines.
	pruneChunk int
	// scrubChunk is how many tasks one ScrubFinished transaction rewrites.
	scrubChunk int
}

// Open opens or creates the database file at path (creating its directory
// with mode 0700 if needed) and takes an exclusive lock on it. It returns an
// error wrapping ErrInUse if another process holds the lock for longer than
// opts.LockTimeout.
func Open(path string, opts Options) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	timeout := opts.LockTimeout
	switch {
	case timeout == 0:
		timeout = DefaultLockTimeout
	case timeout < 0:
		// bbolt treats 0 as "wait forever"; the smallest positive value
		// makes it try once more and give up.
		timeout = time.Nanosecond
	}
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: timeout,
		// The freelist is rebuilt by scanning at open instead of being
		// written on every commit: smaller commits on the hot path.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("bolt: open %s: %w: another smd process is using this data directory (gave up after %s)",
			path, ErrInUse, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	maxBatch := DefaultMaxBatchSize
	if opts.MaxBatchSize > 0 {
		maxBatch = opts.MaxBatchSize
	}
	err = bdb.Update(func(tx *bbolt.Tx) error {
		for _, name := range append([][]byte{bucketTasks, bucketCreated, bucketUnfinished, bucketRequests}, catalogBuckets...) {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("bolt: open %s: create buckets: %w", path, err)
	}

	db := &DB{
		bdb:    bdb,
		commit: &committer{db: bdb, maxBatch: maxBatch},
		path:   path,
		log:    opts.Logger.With().Str("component", "store.bolt").Logger(),

		pruneChunk: defaultPruneChunk,
		scrubChunk: defaultScrubChunk,
	}
	interval := opts.PruneInterval
	if interval <= 0 {
		interval = DefaultPruneInterval
	}
	db.life.StartPrune(db.log, opts.KeepFinished, interval, db.Prune)
	return db, nil
}

// Path returns the database file's path.
func (db *DB) Path() string { return db.path }

// Close stops the prune loop, waits for calls in flight, and closes the
// file, releasing its lock. Calls after Close, Close included, return
// store.ErrClosed.
func (db *DB) Close() error {
	return db.life.Close(func() error {
		if err := db.bdb.Close(); err != nil {
			return fmt.Errorf("bolt: close %s: %w", db.path, err)
		}
		return nil
	})
}

// enter starts a call: it returns ErrClosed after Close, or ctx's error if it
// is done; otherwise the caller must call db.exit when finished.
func (db *DB) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.life.Enter()
}

func (db *DB) exit() { db.life.Exit() }

// creationKey returns the "created"/"unfinished" key of a task: CreatedAt in
// an order-preserving 12-byte form, then the id.
func creationKey(createdAt time.Time, id string) []byte {
	k := make([]byte, timeKeyLen, timeKeyLen+len(id))
	putTimeKey(k, createdAt)
	return append(k, id...)
}

// requestKey returns the "requests" key of a task's request.
func requestKey(r store.Request) []byte {
	k := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(r.Owner)+len(r.ID)), uint64(len(r.Owner)))
	k = append(k, r.Owner...)
	return append(k, r.ID...)
}

// timeKeyLen is the length of the time prefix of a creation key.
const timeKeyLen = 12

func putTimeKey(k []byte, t time.Time) {
	binary.BigEndian.PutUint64(k, uint64(t.Unix())^(1<<63))
	binary.BigEndian.PutUint32(k[8:], uint32(t.Nanosecond()))
}
