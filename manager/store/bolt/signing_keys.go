package bolt

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/smdelegate/smdelegate/manager/store"
)

// PutSigningKey creates or replaces the key k.ID with a copy of k. A zero
// CreatedAt is set to the current time on create; on replace the stored
// CreatedAt is kept, whatever k says. It returns store.ErrClosed after
// Close. Errors never hold k.Private.
func (db *DB) PutSigningKey(ctx context.Context, k *store.SigningKey) error {
	if k == nil || k.ID == "" {
		return fmt.Errorf("bolt: put signing key: empty id: %w", errInvalid)
	}
	what := fmt.Sprintf("put signing key %q", k.ID)
	created := k.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	id := []byte(k.ID)
	return db.update(ctx, what, func(tx *bbolt.Tx) error {
		keys := tx.Bucket(bucketSigningKeys)
		created := created
		if old := keys.Get(id); old != nil {
			prev, err := decodeSigningKey(old, k.ID)
			if err != nil {
				return err
			}
			created = prev.CreatedAt
		}
		return keys.Put(id, encodeSigningKey(k, created))
	})
}

// ListSigningKeys returns every key, oldest first (by CreatedAt, then ID).
// It returns store.ErrClosed after Close.
func (db *DB) ListSigningKeys(ctx context.Context) ([]*store.SigningKey, error) {
	var out []*store.SigningKey
	err := db.view(ctx, "list signing keys", func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketSigningKeys).ForEach(func(k, v []byte) error {
			key, err := decodeSigningKey(v, string(k))
			if err != nil {
				return err
			}
			out = append(out, key)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	// A handful of keys: sorting them beats keeping a creation index.
	slices.SortFunc(out, func(a, b *store.SigningKey) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// DeleteSigningKey removes the key id. It returns an error wrapping
// store.ErrNotFound if there is none, store.ErrClosed after Close.
func (db *DB) DeleteSigningKey(ctx context.Context, id string) error {
	what := fmt.Sprintf("delete signing key %q", id)
	key := []byte(id)
	return db.update(ctx, what, func(tx *bbolt.Tx) error {
		keys := tx.Bucket(bucketSigningKeys)
		if id == "" || keys.Get(key) == nil {
			return fmt.Errorf("bolt: %s: %w", what, store.ErrNotFound)
		}
		return keys.Delete(key)
	})
}
