package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// PutSigningKey creates or replaces the key k.ID with a copy of k. A zero
// CreatedAt is set to the current time on create; on replace the stored
// CreatedAt is kept, whatever k says. It returns store.ErrClosed after
// Close. Errors never hold k.Private.
func (db *DB) PutSigningKey(ctx context.Context, k *store.SigningKey) error {
	if k == nil || k.ID == "" {
		return fmt.Errorf("postgres: put signing key: empty id: %w", errInvalid)
	}
	what := fmt.Sprintf("put signing key %q", k.ID)
	created := k.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	_, err = db.pool.Exec(ctx, `
		INSERT INTO signing_keys (id, private, public, created_at, retired_at, expires)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (id) DO UPDATE SET private = EXCLUDED.private, public = EXCLUDED.public,
			retired_at = EXCLUDED.retired_at, expires = EXCLUDED.expires`,
		k.ID, orEmpty(k.Private), orEmpty(k.Public), created, nullTime(k.RetiredAt), nullTime(k.Expires))
	return wrapErr(what, err)
}

// ListSigningKeys returns every key, oldest first (by CreatedAt, then ID).
// It returns store.ErrClosed after Close.
func (db *DB) ListSigningKeys(ctx context.Context) ([]*store.SigningKey, error) {
	const what = "list signing keys"
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := db.pool.Query(ctx, `
		SELECT id, private, public, created_at, retired_at, expires FROM signing_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.SigningKey, error) {
		var (
			k                store.SigningKey
			retired, expires *time.Time
		)
		if err := row.Scan(&k.ID, &k.Private, &k.Public, &k.CreatedAt, &retired, &expires); err != nil {
			return nil, err
		}
		k.CreatedAt = k.CreatedAt.UTC()
		k.RetiredAt, k.Expires = fromNull(retired), fromNull(expires)
		return &k, nil
	})
	if err != nil {
		return nil, wrapErr(what, err)
	}
	return out, nil
}

// DeleteSigningKey removes the key id. It returns an error wrapping
// store.ErrNotFound if there is none, store.ErrClosed after Close.
func (db *DB) DeleteSigningKey(ctx context.Context, id string) error {
	return db.deleteOne(ctx, fmt.Sprintf("delete signing key %q", id), `DELETE FROM signing_keys WHERE id = $1`, id)
}

// SetDelegateTags replaces the operator tags of delegate name with a copy of
// tags; nil or empty removes its entry, if any. It returns store.ErrClosed
// after Close.
func (db *DB) SetDelegateTags(ctx context.Context, name string, tags []string) error {
	if name == "" {
		return fmt.Errorf("postgres: set delegate tags: empty delegate name: %w", errInvalid)
	}
	what := fmt.Sprintf("set tags of delegate %q", name)
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	if len(tags) == 0 {
		_, err = db.pool.Exec(ctx, `DELETE FROM delegate_tags WHERE name = $1`, name) // none is fine
	} else {
		_, err = db.pool.Exec(ctx, `
			INSERT INTO delegate_tags (name, tags) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET tags = EXCLUDED.tags`, name, tags)
	}
	return wrapErr(what, err)
}

// DelegateTags returns the operator tags of every delegate that has some, by
// name, each in the order they were set. It returns store.ErrClosed after
// Close.
func (db *DB) DelegateTags(ctx context.Context) (map[string][]string, error) {
	const what = "delegate tags"
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := db.pool.Query(ctx, `SELECT name, tags FROM delegate_tags`)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out := make(map[string][]string)
	var (
		name string
		tags []string
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &tags}, func() error {
		out[name] = tags
		tags = nil // the next row scans into a slice of its own
		return nil
	})
	if err != nil {
		return nil, wrapErr(what, err)
	}
	return out, nil
}
