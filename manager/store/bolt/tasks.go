package bolt

import (
	"context"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/smdelegate/smdelegate/manager/store"
)

// errInvalid is wrapped by errors for arguments no store could accept (an
// empty id or lease id, a non-final Final). The store package has no
// sentinel for these: they are programming errors, not conditions to handle.
var errInvalid = errors.New("invalid argument")

// batch runs fn in a shared write transaction (committer.do) and returns
// fn's result once the transaction is durable.
//
// fn returns two errors. result is the outcome for the caller (ErrNotFound,
// ErrConflict, ...): fn must not have written anything when it returns one,
// and the transaction still commits for the other callers in the batch.
// err is a failure of the transaction itself: bbolt rolls the batch back and
// re-runs fn alone.
//
// Returning domain outcomes as results rather than errors matters twice: a
// failing fn would make bbolt roll back and retry the whole batch without it
// and then run it again in a transaction of its own (an extra writer turn for
// every conflict, which under contention is most calls), and fn may be called
// several times, so result is reset on every call and only the value from
// the run that committed reaches the caller.
func (db *DB) batch(fn func(tx *bbolt.Tx) (result, err error)) error {
	var result error
	err := db.commit.do(func(tx *bbolt.Tx) error {
		var err error
		result, err = fn(tx)
		return err
	})
	if err != nil {
		return err
	}
	return result
}

// CreateTask persists a copy of t in StateQueued, whatever t.State says. A
// zero CreatedAt is set to the current time and a zero UpdatedAt to
// CreatedAt; t itself is not modified or retained. It returns an error
// wrapping store.ErrExists if the id is taken, a *store.DuplicateRequestError
// if t.Request.ID is not empty and a task with the same Request.Owner and
// Request.ID exists (looked up in the transaction that would insert t),
// store.ErrClosed after Close, and ctx's error if ctx is done before the
// call starts. When it returns nil the task has been fsynced.
func (db *DB) CreateTask(ctx context.Context, t *store.Task) error {
	if t == nil || t.ID == "" {
		return fmt.Errorf("bolt: create task: empty id: %w", errInvalid)
	}
	if err := db.enter(ctx); err != nil {
		return err
	}
	defer db.exit()

	nt := *t
	nt.State = store.StateQueued
	if nt.CreatedAt.IsZero() {
		nt.CreatedAt = time.Now()
	}
	if nt.UpdatedAt.IsZero() {
		nt.UpdatedAt = nt.CreatedAt
	}
	// Everything the transaction writes is computed here, once: bbolt may
	// run the function more than once, and each run must write the same.
	val, err := encodeTask(make([]byte, 0, encodedSize(&nt)), &nt)
	if err != nil {
		return err
	}
	id := []byte(nt.ID)
	ckey := creationKey(nt.CreatedAt, nt.ID)
	var rkey []byte // nil: no request id, nothing to index
	if nt.Request.ID != "" {
		rkey = requestKey(nt.Request)
	}
	err = db.batch(func(tx *bbolt.Tx) (error, error) {
		tasks := tx.Bucket(bucketTasks)
		if tasks.Get(id) != nil {
			return fmt.Errorf("bolt: create task %s: %w", nt.ID, store.ErrExists), nil
		}
		if rkey != nil {
			requests := tx.Bucket(bucketRequests)
			if other := requests.Get(rkey); other != nil {
				v := tasks.Get(other)
				if v == nil {
					return nil, fmt.Errorf("%w: request index entry for missing task %q", errCorrupt, other)
				}
				existing, err := decodeTask(v)
				if err != nil {
					return nil, err
				}
				return &store.DuplicateRequestError{Task: existing}, nil
			}
			if err := requests.Put(rkey, id); err != nil {
				return nil, err
			}
		}
		if err := tasks.Put(id, val); err != nil {
			return nil, err
		}
		if err := tx.Bucket(bucketCreated).Put(ckey, nil); err != nil {
			return nil, err
		}
		return nil, tx.Bucket(bucketUnfinished).Put(ckey, nil)
	})
	if err != nil && !isStoreErr(err) {
		return fmt.Errorf("bolt: create task %s: %w", nt.ID, err)
	}
	return err
}

// GetTask returns the task, or an error wrapping store.ErrNotFound. It
// returns store.ErrClosed after Close.
func (db *DB) GetTask(ctx context.Context, id string) (*store.Task, error) {
	if err := db.enter(ctx); err != nil {
		return nil, err
	}
	defer db.exit()
	var t *store.Task
	err := db.bdb.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketTasks).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("bolt: get task %s: %w", id, store.ErrNotFound)
		}
		var err error
		t, err = decodeTask(v)
		if err != nil {
			return fmt.Errorf("bolt: get task %s: %w", id, err)
		}
		return nil
	})
	return t, err
}

// Claim moves a queued task to StateLeased under l, setting LeaseID,
// Delegate, Attempt (to l.Attempt) and UpdatedAt. It returns an error
// wrapping store.ErrNotFound for an unknown id, store.ErrConflict if the task
// is not queued, store.ErrClosed after Close. l.ID must not be empty: an
// empty lease id means "no lease" to Complete.
func (db *DB) Claim(ctx context.Context, id string, l store.Lease) error {
	if l.ID == "" {
		return fmt.Errorf("bolt: claim %s: empty lease id: %w", id, errInvalid)
	}
	now := time.Now()
	return db.modify(ctx, "claim", id, func(t *store.Task) error {
		if t.State != store.StateQueued {
			return fmt.Errorf("bolt: claim %s: task is %s: %w", id, t.State, store.ErrConflict)
		}
		t.State = store.StateLeased
		t.LeaseID = l.ID
		t.Delegate = l.Delegate
		t.Attempt = l.Attempt
		t.UpdatedAt = now
		return nil
	})
}

// Requeue moves a leased task back to StateQueued, keeping Attempt and
// clearing LeaseID and Delegate. It returns an error wrapping
// store.ErrConflict unless the task is leased under leaseID,
// store.ErrNotFound for an unknown id, store.ErrClosed after Close.
func (db *DB) Requeue(ctx context.Context, id, leaseID string) error {
	now := time.Now()
	return db.modify(ctx, "requeue", id, func(t *store.Task) error {
		switch {
		case t.State != store.StateLeased:
			return fmt.Errorf("bolt: requeue %s: task is %s: %w", id, t.State, store.ErrConflict)
		case t.LeaseID != leaseID:
			return fmt.Errorf("bolt: requeue %s: stale lease: %w", id, store.ErrConflict)
		}
		t.State = store.StateQueued
		t.LeaseID = ""
		t.Delegate = ""
		t.UpdatedAt = now
		return nil
	})
}

// Complete makes a task final with f's state, code and outcome, keeping its
// lease and delegate, and replaces its payload with f.Payload in the same
// transaction. With a non-empty leaseID the task must be leased under
// it; with an empty one it may be queued or leased. Otherwise, and for a task
// that is already final, it returns an error wrapping store.ErrConflict. It
// returns store.ErrNotFound for an unknown id and store.ErrClosed after
// Close. f.State must be final.
func (db *DB) Complete(ctx context.Context, id, leaseID string, f store.Final) error {
	if !f.State.Final() {
		return fmt.Errorf("bolt: complete %s: state %q is not final: %w", id, f.State, errInvalid)
	}
	now := time.Now()
	return db.modify(ctx, "complete", id, func(t *store.Task) error {
		switch {
		case t.State.Final():
			return fmt.Errorf("bolt: complete %s: task is already %s: %w", id, t.State, store.ErrConflict)
		case leaseID != "" && (t.State != store.StateLeased || t.LeaseID != leaseID):
			return fmt.Errorf("bolt: complete %s: stale lease: %w", id, store.ErrConflict)
		}
		t.State = f.State
		t.Code = f.Code
		t.Outcome = f.Outcome
		t.Payload = f.Payload
		t.UpdatedAt = now
		return nil
	})
}

// modify applies change to task id in a batched write transaction. change
// gets a freshly decoded task on every run (bbolt may run it more than once)
// and either edits it or returns the caller's error without editing it.
func (db *DB) modify(ctx context.Context, op, id string, change func(t *store.Task) error) error {
	if err := db.enter(ctx); err != nil {
		return err
	}
	defer db.exit()
	key := []byte(id)
	err := db.batch(func(tx *bbolt.Tx) (error, error) {
		tasks := tx.Bucket(bucketTasks)
		v := tasks.Get(key)
		if v == nil {
			return fmt.Errorf("bolt: %s %s: %w", op, id, store.ErrNotFound), nil
		}
		t, err := decodeTask(v)
		if err != nil {
			return nil, err
		}
		wasFinal := t.State.Final()
		if res := change(t); res != nil {
			return res, nil
		}
		val, err := encodeTask(make([]byte, 0, encodedSize(t)), t)
		if err != nil {
			return nil, err
		}
		if err := tasks.Put(key, val); err != nil {
			return nil, err
		}
		if t.State.Final() && !wasFinal {
			return nil, tx.Bucket(bucketUnfinished).Delete(creationKey(t.CreatedAt, t.ID))
		}
		return nil, nil
	})
	if err != nil && !isStoreErr(err) {
		return fmt.Errorf("bolt: %s %s: %w", op, id, err)
	}
	return err
}

// isStoreErr reports whether err is one of the store sentinels, already
// wrapped with its context.
func isStoreErr(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) ||
		errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrClosed) ||
		errors.Is(err, store.ErrDefaultTaken)
}

// ListTasks returns the tasks matching f, newest first (by CreatedAt, then
// id descending), after f.After when it is set. A negative f.Limit is
// treated as no limit. It returns
// store.ErrClosed after Close.
func (db *DB) ListTasks(ctx context.Context, f store.Filter) ([]*store.Task, error) {
	if err := db.enter(ctx); err != nil {
		return nil, err
	}
	defer db.exit()

	want := make(map[store.State]bool, len(f.States))
	onlyUnfinished := len(f.States) > 0
	for _, s := range f.States {
		want[s] = true
		if s.Final() {
			onlyUnfinished = false
		}
	}
	// Only queued and leased tasks wanted: walk the smaller index.
	index := bucketCreated
	if onlyUnfinished {
		index = bucketUnfinished
	}
	var out []*store.Task
	err := db.bdb.View(func(tx *bbolt.Tx) error {
		tasks := tx.Bucket(bucketTasks)
		c := tx.Bucket(index).Cursor()
		k, _ := c.Last()
		if f.After != nil {
			// The first key below the cursor's: Seek finds the first at
			// or above it (nil past the end, where Last is the one).
			if at, _ := c.Seek(creationKey(f.After.CreatedAt, f.After.ID)); at != nil {
				k, _ = c.Prev()
			}
		}
		n := 0
		for ; k != nil; k, _ = c.Prev() {
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			v, err := indexed(tasks, k)
			if err != nil {
				return err
			}
			if len(want) > 0 {
				st, err := stateOf(v)
				if err != nil {
					return err
				}
				if !want[st] {
					continue
				}
			}
			t, err := decodeTask(v)
			if err != nil {
				return err
			}
			if !f.Scope.IsZero() && !f.Scope.Contains(t.Scope) {
				continue
			}
			out = append(out, t)
			if f.Limit > 0 && len(out) >= f.Limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: list tasks: %w", err)
	}
	return out, nil
}

// ListUnfinished returns every queued or leased task, oldest first (by
// CreatedAt, then id). It reads only the unfinished index, never the
// finished history. It returns store.ErrClosed after Close.
func (db *DB) ListUnfinished(ctx context.Context) ([]*store.Task, error) {
	if err := db.enter(ctx); err != nil {
		return nil, err
	}
	defer db.exit()
	var out []*store.Task
	err := db.bdb.View(func(tx *bbolt.Tx) error {
		tasks := tx.Bucket(bucketTasks)
		c := tx.Bucket(bucketUnfinished).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			v, err := indexed(tasks, k)
			if err != nil {
				return err
			}
			t, err := decodeTask(v)
			if err != nil {
				return err
			}
			out = append(out, t)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: list unfinished: %w", err)
	}
	return out, nil
}

// indexed returns the encoded task an index key points to.
func indexed(tasks *bbolt.Bucket, k []byte) ([]byte, error) {
	if len(k) <= timeKeyLen {
		return nil, fmt.Errorf("%w: short index key %x", errCorrupt, k)
	}
	v := tasks.Get(k[timeKeyLen:])
	if v == nil {
		return nil, fmt.Errorf("%w: index entry for missing task %q", errCorrupt, k[timeKeyLen:])
	}
	return v, nil
}
