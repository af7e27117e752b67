package bolt

import (
	"bytes"
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/smdelegate/smdelegate/manager/store"
)

// defaultScrubChunk caps the tasks one ScrubFinished transaction rewrites.
const defaultScrubChunk = 500

// ScrubFinished rewrites the payload of every final task of codec version
// 3 or older (made final by a Complete that kept the payload whole) with
// what scrub returns, as the current version (4 or later marks it done). It walks the
// tasks bucket in id order, a chunk at a time: the payloads of a chunk
// are read in one read transaction, scrubbed outside any transaction, and
// written in one write transaction (a task pruned meanwhile is skipped).
// It returns how many it rewrote, store.ErrClosed after Close, and ctx's
// or scrub's error with the count so far.
func (db *DB) ScrubFinished(ctx context.Context, scrub store.ScrubFunc) (int, error) {
	if err := db.enter(ctx); err != nil {
		return 0, err
	}
	defer db.exit()
	total := 0
	var after []byte // the last id examined; nil: start at the first
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var found []*store.Task
		var next []byte
		err := db.bdb.View(func(tx *bbolt.Tx) error {
			c := tx.Bucket(bucketTasks).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil; k, v = c.Next() {
				if len(found) == db.scrubChunk {
					return nil
				}
				next = bytes.Clone(k)
				if payloadScrubbed(v) {
					continue
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
				found = append(found, t)
			}
			next = nil // walked to the end
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("bolt: scrub finished tasks: %w", err)
		}
		vals := make([][]byte, len(found))
		for i, t := range found {
			p, err := scrub(t.ID, t.Payload)
			if err != nil {
				return total, fmt.Errorf("bolt: scrub task %s: %w", t.ID, err)
			}
			t.Payload = p
			if vals[i], err = encodeTask(make([]byte, 0, encodedSize(t)), t); err != nil {
				return total, err
			}
		}
		var n int
		if len(found) > 0 {
			err = db.bdb.Update(func(tx *bbolt.Tx) error {
				n = 0
				tasks := tx.Bucket(bucketTasks)
				for i, t := range found {
					v := tasks.Get([]byte(t.ID))
					if v == nil || payloadScrubbed(v) {
						continue // pruned, or scrubbed by another call
					}
					if err := tasks.Put([]byte(t.ID), vals[i]); err != nil {
						return err
					}
					n++
				}
				return nil
			})
			if err != nil {
				return total, fmt.Errorf("bolt: scrub finished tasks: %w", err)
			}
		}
		total += n
		if next == nil {
			return total, nil
		}
		after = next
	}
}
