package bolt

import (
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"
)

// SetDelegateTags replaces the operator tags of delegate name with a copy of
// tags; nil or empty removes its entry, if any. It returns store.ErrClosed
// after Close.
func (db *DB) SetDelegateTags(ctx context.Context, name string, tags []string) error {
	if name == "" {
		return fmt.Errorf("bolt: set delegate tags: empty delegate name: %w", errInvalid)
	}
	what := fmt.Sprintf("set tags of delegate %q", name)
	key := []byte(name)
	var val []byte
	if len(tags) > 0 {
		val = encodeTags(tags)
	}
	return db.update(ctx, what, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketDelegateTags)
		if val == nil {
			return b.Delete(key) // no error for a missing key
		}
		return b.Put(key, val)
	})
}

// DelegateTags returns the operator tags of every delegate that has some, by
// name, each in the order they were set. It returns store.ErrClosed after
// Close.
func (db *DB) DelegateTags(ctx context.Context) (map[string][]string, error) {
	out := make(map[string][]string)
	err := db.view(ctx, "delegate tags", func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketDelegateTags).ForEach(func(k, v []byte) error {
			tags, err := decodeTags(v, string(k))
			if err != nil {
				return err
			}
			out[string(k)] = tags
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
