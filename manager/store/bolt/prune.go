package bolt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"
)

// defaultPruneChunk caps the tasks one prune transaction examines, so that
// Prune holds the single writer lock (and so delays claims and completions)
// for a few milliseconds at a time, not for the whole history.
const defaultPruneChunk = 2000

// Prune deletes the final (succeeded or failed) tasks that finished, by
// UpdatedAt, before cutoff, and returns how many it deleted, with their
// request ids (which are then free for new tasks). Queued and leased tasks
// are never deleted. Only tasks created before cutoff are
// examined, found through the creation index; since a task finishes after it
// is created this misses nothing, unless a caller gave a task a CreatedAt
// in the future, which is then pruned once cutoff passes it.
//
// Prune is not part of store.Store: retention is each implementation's
// concern (manager/store/postgres has a Prune of its own).
// Options.KeepFinished runs it periodically. It works in transactions of
// at most a few thousand examined tasks and checks ctx between them, so a
// cancelled ctx stops it part-way with ctx's error and the count deleted
// so far. It returns store.ErrClosed after Close.
func (db *DB) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	if err := db.enter(ctx); err != nil {
		return 0, err
	}
	defer db.exit()

	limit := make([]byte, timeKeyLen)
	putTimeKey(limit, cutoff)
	var from []byte // where the next chunk starts; nil: the beginning
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var deleted int
		var next []byte
		err := db.bdb.Update(func(tx *bbolt.Tx) error {
			tasks := tx.Bucket(bucketTasks)
			created := tx.Bucket(bucketCreated)
			requests := tx.Bucket(bucketRequests)
			c := created.Cursor()
			k, _ := c.First()
			if from != nil {
				k, _ = c.Seek(from)
			}
			// Delete after the walk: deleting under a cursor can make
			// it skip keys.
			var dead [][]byte
			var deadRequests [][2][]byte // request key, task id
			for examined := 0; k != nil; k, _ = c.Next() {
				if bytes.Compare(k[:min(len(k), timeKeyLen)], limit) >= 0 {
					break
				}
				if examined == db.pruneChunk {
					next = bytes.Clone(k)
					break
				}
				examined++
				v, err := indexed(tasks, k)
				if err != nil {
					return err
				}
				st, err := stateOf(v)
				if err != nil {
					return err
				}
				if !st.Final() {
					continue
				}
				t, err := decodeTask(v)
				if err != nil {
					return err
				}
				if t.UpdatedAt.Before(cutoff) {
					dead = append(dead, bytes.Clone(k))
					if t.Request.ID != "" {
						deadRequests = append(deadRequests, [2][]byte{requestKey(t.Request), []byte(t.ID)})
					}
				}
			}
			for _, r := range deadRequests {
				if !bytes.Equal(requests.Get(r[0]), r[1]) {
					continue // not this task's entry (CreateTask never makes such)
				}
				if err := requests.Delete(r[0]); err != nil {
					return err
				}
			}
			for _, k := range dead {
				if err := tasks.Delete(k[timeKeyLen:]); err != nil {
					return err
				}
				if err := created.Delete(k); err != nil {
					return err
				}
			}
			deleted = len(dead)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("bolt: prune: %w", err)
		}
		total += deleted
		if next == nil {
			return total, nil
		}
		from = next
	}
}
