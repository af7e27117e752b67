package bolt

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Catalog buckets. See catalog_codec.go for keys and values.
var (
	// bucketConnectors: scope key + connector id → connector.
	bucketConnectors = []byte("connectors")
	// bucketDefaults: scope key → id of the scope's default connector, so
	// that DefaultConnector is one lookup and "one default per scope" is a
	// single key, checked and written in the connector's transaction.
	bucketDefaults = []byte("connector_defaults")
	// bucketCredentials: scope key + credential name → credential.
	bucketCredentials = []byte("credentials")
	// bucketSigningKeys: key id → signing key.
	bucketSigningKeys = []byte("signing_keys")
	// bucketDelegateTags: delegate name → its operator tags.
	bucketDelegateTags = []byte("delegate_tags")
)

// catalogBuckets are created by Open beside the task buckets.
var catalogBuckets = [][]byte{
	bucketConnectors, bucketDefaults, bucketCredentials, bucketSigningKeys, bucketDelegateTags,
}

// Catalog writes are rare (an operator editing configuration, a key
// rotation), so they use plain DB.Update rather than the batching the task
// hot path needs: a store sentinel returned from fn rolls back only that
// call's own transaction, which has written nothing when it returns one.

// update runs fn in a write transaction of its own. what names the call for
// errors other than the store sentinels, which fn wraps itself.
func (db *DB) update(ctx context.Context, what string, fn func(tx *bbolt.Tx) error) error {
	if err := db.enter(ctx); err != nil {
		return err
	}
	defer db.exit()
	return wrapErr(what, db.bdb.Update(fn))
}

// view runs fn in a read transaction, like update.
func (db *DB) view(ctx context.Context, what string, fn func(tx *bbolt.Tx) error) error {
	if err := db.enter(ctx); err != nil {
		return err
	}
	defer db.exit()
	return wrapErr(what, db.bdb.View(fn))
}

func wrapErr(what string, err error) error {
	if err != nil && !isStoreErr(err) {
		return fmt.Errorf("bolt: %s: %w", what, err)
	}
	return err
}

// checkScope rejects a scope that breaks store.Scope's rules (Org requires
// Account, Project requires Org) and an empty id or name.
func checkScope(what string, s store.Scope, name string) error {
	switch {
	case s.Org != "" && s.Account == "":
		return fmt.Errorf("bolt: %s: scope %q has an org but no account: %w", what, s.String(), errInvalid)
	case s.Project != "" && s.Org == "":
		return fmt.Errorf("bolt: %s: scope %q has a project but no org: %w", what, s.String(), errInvalid)
	case name == "":
		return fmt.Errorf("bolt: %s: empty id: %w", what, errInvalid)
	}
	return nil
}

// CreateConnector stores a copy of c with CreatedAt and UpdatedAt set to the
// current time; c itself is not modified. It returns an error wrapping
// store.ErrExists if c.Scope already has a connector c.ID,
// store.ErrDefaultTaken if c.Default and another connector is the scope's
// default, store.ErrClosed after Close. The check and the write are one
// transaction, so of concurrent creates only one can win either race.
func (db *DB) CreateConnector(ctx context.Context, c *store.Connector) error {
	if c == nil {
		return fmt.Errorf("bolt: create connector: nil connector: %w", errInvalid)
	}
	what := fmt.Sprintf("create connector %q in %q", c.ID, c.Scope.String())
	if err := checkScope(what, c.Scope, c.ID); err != nil {
		return err
	}
	now := time.Now()
	val := encodeConnector(c, now, now)
	sk := scopeKey(c.Scope)
	key := itemKey(sk, c.ID)
	return db.update(ctx, what, func(tx *bbolt.Tx) error {
		conns := tx.Bucket(bucketConnectors)
		if conns.Get(key) != nil {
			return fmt.Errorf("bolt: %s: %w", what, store.ErrExists)
		}
		if c.Default {
			defaults := tx.Bucket(bucketDefaults)
			if cur := defaults.Get(sk); cur != nil {
				return fmt.Errorf("bolt: %s: %q is the default: %w", what, cur, store.ErrDefaultTaken)
			}
			if err := defaults.Put(sk, []byte(c.ID)); err != nil {
				return err
			}
		}
		return conns.Put(key, val)
	})
}

// UpdateConnector replaces the connector c.Scope/c.ID with a copy of c,
// keeping its CreatedAt and setting UpdatedAt to the current time. It
// returns an error wrapping store.ErrNotFound if there is none,
// store.ErrDefaultTaken if c.Default and another connector is the scope's
// default, store.ErrClosed after Close. Clearing Default frees the scope's
// default slot.
func (db *DB) UpdateConnector(ctx context.Context, c *store.Connector) error {
	if c == nil {
		return fmt.Errorf("bolt: update connector: nil connector: %w", errInvalid)
	}
	what := fmt.Sprintf("update connector %q in %q", c.ID, c.Scope.String())
	if err := checkScope(what, c.Scope, c.ID); err != nil {
		return err
	}
	now := time.Now()
	sk := scopeKey(c.Scope)
	key := itemKey(sk, c.ID)
	id := []byte(c.ID)
	return db.update(ctx, what, func(tx *bbolt.Tx) error {
		conns := tx.Bucket(bucketConnectors)
		old := conns.Get(key)
		if old == nil {
			return fmt.Errorf("bolt: %s: %w", what, store.ErrNotFound)
		}
		prev, err := decodeConnector(old, c.Scope, c.ID)
		if err != nil {
			return err
		}
		defaults := tx.Bucket(bucketDefaults)
		cur := defaults.Get(sk)
		switch {
		case c.Default && cur != nil && !bytes.Equal(cur, id):
			return fmt.Errorf("bolt: %s: %q is the default: %w", what, cur, store.ErrDefaultTaken)
		case c.Default && cur == nil:
			err = defaults.Put(sk, id)
		case !c.Default && bytes.Equal(cur, id):
			err = defaults.Delete(sk)
		}
		if err != nil {
			return err
		}
		return conns.Put(key, encodeConnector(c, prev.CreatedAt, now))
	})
}

// GetConnector returns the connector id of exactly scope s, or an error
// wrapping store.ErrNotFound. It returns store.ErrClosed after Close.
func (db *DB) GetConnector(ctx context.Context, s store.Scope, id string) (*store.Connector, error) {
	what := fmt.Sprintf("get connector %q in %q", id, s.String())
	key := itemKey(scopeKey(s), id)
	var c *store.Connector
	err := db.view(ctx, what, func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketConnectors).Get(key)
		if v == nil {
			return fmt.Errorf("bolt: %s: %w", what, store.ErrNotFound)
		}
		var err error
		c, err = decodeConnector(v, s, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// DefaultConnector returns the default connector of exactly scope s, or an
// error wrapping store.ErrNotFound. It returns store.ErrClosed after Close.
func (db *DB) DefaultConnector(ctx context.Context, s store.Scope) (*store.Connector, error) {
	what := fmt.Sprintf("default connector in %q", s.String())
	sk := scopeKey(s)
	var c *store.Connector
	err := db.view(ctx, what, func(tx *bbolt.Tx) error {
		id := tx.Bucket(bucketDefaults).Get(sk)
		if id == nil {
			return fmt.Errorf("bolt: %s: %w", what, store.ErrNotFound)
		}
		v := tx.Bucket(bucketConnectors).Get(itemKey(sk, string(id)))
		if v == nil {
			return fmt.Errorf("%w: default index names missing connector %q", errCorrupt, id)
		}
		var err error
		c, err = decodeConnector(v, s, string(id))
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ListConnectors returns the connectors of exactly scope s (not of the
// scopes under or above it), by ID. It returns store.ErrClosed after Close.
func (db *DB) ListConnectors(ctx context.Context, s store.Scope) ([]*store.Connector, error) {
	what := fmt.Sprintf("list connectors in %q", s.String())
	sk := scopeKey(s)
	var out []*store.Connector
	err := db.view(ctx, what, func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketConnectors).Cursor()
		for k, v := c.Seek(sk); k != nil && bytes.HasPrefix(k, sk); k, v = c.Next() {
			conn, err := decodeConnector(v, s, string(k[len(sk):]))
			if err != nil {
				return err
			}
			out = append(out, conn)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AllConnectors returns the connectors of every scope, by account, org,
// project and ID, each in byte order (the keys' length prefixes order
// them otherwise, so they are sorted here). It returns store.ErrClosed
// after Close.
func (db *DB) AllConnectors(ctx context.Context) ([]*store.Connector, error) {
	const what = "list all connectors"
	var out []*store.Connector
	err := db.view(ctx, what, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketConnectors).ForEach(func(k, v []byte) error {
			s, id, err := splitItemKey(k)
			if err != nil {
				return err
			}
			conn, err := decodeConnector(v, s, id)
			if err != nil {
				return err
			}
			out = append(out, conn)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *store.Connector) int {
		return cmp.Or(cmp.Compare(a.Scope.Account, b.Scope.Account), cmp.Compare(a.Scope.Org, b.Scope.Org),
			cmp.Compare(a.Scope.Project, b.Scope.Project), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// DeleteConnector removes the connector id of scope s, and frees the scope's
// default slot if it held it. It returns an error wrapping
// store.ErrNotFound if there is none, store.ErrClosed after Close.
func (db *DB) DeleteConnector(ctx context.Context, s store.Scope, id string) error {
	what := fmt.Sprintf("delete connector %q in %q", id, s.String())
	sk := scopeKey(s)
	key := itemKey(sk, id)
	return db.update(ctx, what, func(tx *bbolt.Tx) error {
		conns := tx.Bucket(bucketConnectors)
		if conns.Get(key) == nil {
			return fmt.Errorf("bolt: %s: %w", what, store.ErrNotFound)
		}
		if err := conns.Delete(key); err != nil {
			return err
		}
		defaults := tx.Bucket(bucketDefaults)
		if bytes.Equal(defaults.Get(sk), []byte(id)) {
			return defaults.Delete(sk)
		}
		return nil
	})
}
