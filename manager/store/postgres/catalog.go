package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Catalog writes are rare (an operator editing configuration, a key
// rotation): each is one statement, committed on its own.

// connectorColumns are the columns scanConnector reads, in its order.
const connectorColumns = `scope_account, scope_org, scope_project, id, is_default, data, created_at, updated_at`

// scopeIs matches the rows of exactly the scope in $1, $2, $3.
const scopeIs = `scope_account = $1 AND scope_org = $2 AND scope_project = $3`

func scanConnector(row pgx.Row) (*store.Connector, error) {
	var c store.Connector
	err := row.Scan(&c.Scope.Account, &c.Scope.Org, &c.Scope.Project, &c.ID, &c.Default, &c.Data,
		&c.CreatedAt, &c.UpdatedAt)
	if err != nil {
		return nil, err
	}
	c.CreatedAt = c.CreatedAt.UTC()
	c.UpdatedAt = c.UpdatedAt.UTC()
	return &c, nil
}

// CreateConnector stores a copy of c with CreatedAt and UpdatedAt set to the
// current time; c itself is not modified. It returns an error wrapping
// store.ErrExists if c.Scope already has a connector c.ID,
// store.ErrDefaultTaken if c.Default and another connector is the scope's
// default, store.ErrClosed after Close. Of concurrent creates only one can
// win either race: the primary key and the unique index on the scope's
// default decide.
func (db *DB) CreateConnector(ctx context.Context, c *store.Connector) error {
	if c == nil {
		return fmt.Errorf("postgres: create connector: nil connector: %w", errInvalid)
	}
	what := fmt.Sprintf("create connector %q in %q", c.ID, c.Scope.String())
	if err := checkScope(what, c.Scope, c.ID); err != nil {
		return err
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	now := time.Now()
	// ON CONFLICT on the primary key only: a taken id is ErrExists even
	// when the default slot is taken too (the primary key, the arbiter,
	// is checked first), and a taken default slot is a unique violation.
	tag, err := db.pool.Exec(ctx, `
		INSERT INTO connectors (`+connectorColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
		ON CONFLICT (scope_account, scope_org, scope_project, id) DO NOTHING`,
		c.Scope.Account, c.Scope.Org, c.Scope.Project, c.ID, c.Default, orEmpty(c.Data), now)
	if uniqueViolation(err) == "connectors_one_default" {
		// A create racing another of the same id can still lose on the
		// default slot first: say ErrExists if the id is taken now.
		var exists bool
		if qerr := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM connectors WHERE `+scopeIs+` AND id = $4)`,
			c.Scope.Account, c.Scope.Org, c.Scope.Project, c.ID).Scan(&exists); qerr == nil && exists {
			return fmt.Errorf("postgres: %s: %w", what, store.ErrExists)
		}
		return fmt.Errorf("postgres: %s: %w", what, store.ErrDefaultTaken)
	}
	if err != nil {
		return wrapErr(what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", what, store.ErrExists)
	}
	return nil
}

// UpdateConnector replaces the connector c.Scope/c.ID with a copy of c,
// keeping its CreatedAt and setting UpdatedAt to the current time. It
// returns an error wrapping store.ErrNotFound if there is none,
// store.ErrDefaultTaken if c.Default and another connector is the scope's
// default, store.ErrClosed after Close. Clearing Default frees the scope's
// default slot.
func (db *DB) UpdateConnector(ctx context.Context, c *store.Connector) error {
	if c == nil {
		return fmt.Errorf("postgres: update connector: nil connector: %w", errInvalid)
	}
	what := fmt.Sprintf("update connector %q in %q", c.ID, c.Scope.String())
	if err := checkScope(what, c.Scope, c.ID); err != nil {
		return err
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	// A missing connector matches no row, so the default index is never
	// consulted: ErrNotFound comes first.
	tag, err := db.pool.Exec(ctx, `
		UPDATE connectors SET is_default = $5, data = $6, updated_at = $7
		WHERE `+scopeIs+` AND id = $4`,
		c.Scope.Account, c.Scope.Org, c.Scope.Project, c.ID, c.Default, orEmpty(c.Data), time.Now())
	if uniqueViolation(err) == "connectors_one_default" {
		return fmt.Errorf("postgres: %s: %w", what, store.ErrDefaultTaken)
	}
	if err != nil {
		return wrapErr(what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", what, store.ErrNotFound)
	}
	return nil
}

// GetConnector returns the connector id of exactly scope s, or an error
// wrapping store.ErrNotFound. It returns store.ErrClosed after Close.
func (db *DB) GetConnector(ctx context.Context, s store.Scope, id string) (*store.Connector, error) {
	what := fmt.Sprintf("get connector %q in %q", id, s.String())
	return db.oneConnector(ctx, what, `SELECT `+connectorColumns+` FROM connectors WHERE `+scopeIs+` AND id = $4`,
		s.Account, s.Org, s.Project, id)
}

// DefaultConnector returns the default connector of exactly scope s, or an
// error wrapping store.ErrNotFound. It returns store.ErrClosed after Close.
func (db *DB) DefaultConnector(ctx context.Context, s store.Scope) (*store.Connector, error) {
	what := fmt.Sprintf("default connector in %q", s.String())
	return db.oneConnector(ctx, what, `SELECT `+connectorColumns+` FROM connectors WHERE `+scopeIs+` AND is_default`,
		s.Account, s.Org, s.Project)
}

func (db *DB) oneConnector(ctx context.Context, what, query string, args ...any) (*store.Connector, error) {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	c, err := scanConnector(db.pool.QueryRow(ctx, query, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: %s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return nil, wrapErr(what, err)
	}
	return c, nil
}

// ListConnectors returns the connectors of exactly scope s (not of the
// scopes under or above it), by ID in byte order. It returns
// store.ErrClosed after Close.
func (db *DB) ListConnectors(ctx context.Context, s store.Scope) ([]*store.Connector, error) {
	what := fmt.Sprintf("list connectors in %q", s.String())
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := db.pool.Query(ctx, `SELECT `+connectorColumns+` FROM connectors WHERE `+scopeIs+` ORDER BY id`,
		s.Account, s.Org, s.Project)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Connector, error) { return scanConnector(row) })
	if err != nil {
		return nil, wrapErr(what, err)
	}
	return out, nil
}

// AllConnectors returns the connectors of every scope, by account, org,
// project and ID, each in byte order (the columns' "C" collation). It
// returns store.ErrClosed after Close.
func (db *DB) AllConnectors(ctx context.Context) ([]*store.Connector, error) {
	const what = "list all connectors"
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := db.pool.Query(ctx, `SELECT `+connectorColumns+` FROM connectors ORDER BY scope_account, scope_org, scope_project, id`)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Connector, error) { return scanConnector(row) })
	if err != nil {
		return nil, wrapErr(what, err)
	}
	return out, nil
}

// DeleteConnector removes the connector id of scope s, which frees the
// scope's default slot if it held it. It returns an error wrapping
// store.ErrNotFound if there is none, store.ErrClosed after Close.
func (db *DB) DeleteConnector(ctx context.Context, s store.Scope, id string) error {
	what := fmt.Sprintf("delete connector %q in %q", id, s.String())
	return db.deleteOne(ctx, what, `DELETE FROM connectors WHERE `+scopeIs+` AND id = $4`, s.Account, s.Org, s.Project, id)
}

// deleteOne runs a DELETE of at most one row, and returns ErrNotFound if
// it deleted none.
func (db *DB) deleteOne(ctx context.Context, what, query string, args ...any) error {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	tag, err := db.pool.Exec(ctx, query, args...)
	if err != nil {
		return wrapErr(what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", what, store.ErrNotFound)
	}
	return nil
}
