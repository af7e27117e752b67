package bolt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/smdelegate/smdelegate/manager/store"
)

// PutCredential creates or replaces the credential c.Scope/c.Name with a copy
// of c. CreatedAt is set to the current time on create and kept on replace;
// UpdatedAt is set to the current time. c itself is not modified. It returns
// store.ErrClosed after Close. Errors never hold c.Sealed.
func (db *DB) PutCredential(ctx context.Context, c *store.Credential) error {
	if c == nil {
		return fmt.Errorf("bolt: put credential: nil credential: %w", errInvalid)
	}
	what := fmt.Sprintf("put credential %q in %q", c.Name, c.Scope.String())
	if err := checkScope(what, c.Scope, c.Name); err != nil {
		return err
	}
	now := time.Now()
	key := itemKey(scopeKey(c.Scope), c.Name)
	return db.update(ctx, what, func(tx *bbolt.Tx) error {
		creds := tx.Bucket(bucketCredentials)
		created := now
		if old := creds.Get(key); old != nil {
			prev, err := decodeCredential(old, c.Scope, c.Name, false)
			if err != nil {
				return err
			}
			created = prev.CreatedAt
		}
		return creds.Put(key, encodeCredential(c, created, now))
	})
}

// GetCredential returns the credential name of exactly scope s, Sealed
// included, or an error wrapping store.ErrNotFound. It returns
// store.ErrClosed after Close.
func (db *DB) GetCredential(ctx context.Context, s store.Scope, name string) (*store.Credential, error) {
	what := fmt.Sprintf("get credential %q in %q", name, s.String())
	key := itemKey(scopeKey(s), name)
	var c *store.Credential
	err := db.view(ctx, what, func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketCredentials).Get(key)
		if v == nil {
			return fmt.Errorf("bolt: %s: %w", what, store.ErrNotFound)
		}
		var err error
		c, err = decodeCredential(v, s, name, true)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ListCredentials returns the credentials of exactly scope s, by name, with
// Sealed left empty. It returns store.ErrClosed after Close.
func (db *DB) ListCredentials(ctx context.Context, s store.Scope) ([]*store.Credential, error) {
	what := fmt.Sprintf("list credentials in %q", s.String())
	sk := scopeKey(s)
	var out []*store.Credential
	err := db.view(ctx, what, func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketCredentials).Cursor()
		for k, v := c.Seek(sk); k != nil && bytes.HasPrefix(k, sk); k, v = c.Next() {
			cred, err := decodeCredential(v, s, string(k[len(sk):]), false)
			if err != nil {
				return err
			}
			out = append(out, cred)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteCredential removes the credential name of scope s. It returns an
// error wrapping store.ErrNotFound if there is none, store.ErrClosed after
// Close.
func (db *DB) DeleteCredential(ctx context.Context, s store.Scope, name string) error {
	what := fmt.Sprintf("delete credential %q in %q", name, s.String())
	key := itemKey(scopeKey(s), name)
	return db.update(ctx, what, func(tx *bbolt.Tx) error {
		creds := tx.Bucket(bucketCredentials)
		if creds.Get(key) == nil {
			return fmt.Errorf("bolt: %s: %w", what, store.ErrNotFound)
		}
		return creds.Delete(key)
	})
}
