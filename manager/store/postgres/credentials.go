package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/smdelegate/smdelegate/manager/store"
)

// PutCredential creates or replaces the credential c.Scope/c.Name with a copy
// of c. CreatedAt is set to the current time on create and kept on replace;
// UpdatedAt is set to the current time. c itself is not modified. It returns
// store.ErrClosed after Close. Errors never hold c.Sealed.
func (db *DB) PutCredential(ctx context.Context, c *store.Credential) error {
	if c == nil {
		return fmt.Errorf("postgres: put credential: nil credential: %w", errInvalid)
	}
	what := fmt.Sprintf("put credential %q in %q", c.Name, c.Scope.String())
	if err := checkScope(what, c.Scope, c.Name); err != nil {
		return err
	}
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	_, err = db.pool.Exec(ctx, `
		INSERT INTO credentials (scope_account, scope_org, scope_project, name, sealed, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $6)
		ON CONFLICT (scope_account, scope_org, scope_project, name)
		DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = EXCLUDED.updated_at`,
		c.Scope.Account, c.Scope.Org, c.Scope.Project, c.Name, orEmpty(c.Sealed), time.Now())
	return wrapErr(what, err)
}

// GetCredential returns the credential name of exactly scope s, Sealed
// included, or an error wrapping store.ErrNotFound. It returns
// store.ErrClosed after Close.
func (db *DB) GetCredential(ctx context.Context, s store.Scope, name string) (*store.Credential, error) {
	what := fmt.Sprintf("get credential %q in %q", name, s.String())
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	c := store.Credential{Scope: s, Name: name}
	err = db.pool.QueryRow(ctx, `SELECT sealed, created_at, updated_at FROM credentials WHERE `+scopeIs+` AND name = $4`,
		s.Account, s.Org, s.Project, name).Scan(&c.Sealed, &c.CreatedAt, &c.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: %s: %w", what, store.ErrNotFound)
	}
	if err != nil {
		return nil, wrapErr(what, err)
	}
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return &c, nil
}

// ListCredentials returns the credentials of exactly scope s, by name in
// byte order, with Sealed left empty (it is not even read). It returns
// store.ErrClosed after Close.
func (db *DB) ListCredentials(ctx context.Context, s store.Scope) ([]*store.Credential, error) {
	what := fmt.Sprintf("list credentials in %q", s.String())
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	rows, err := db.pool.Query(ctx, `SELECT name, created_at, updated_at FROM credentials WHERE `+scopeIs+` ORDER BY name`,
		s.Account, s.Org, s.Project)
	if err != nil {
		return nil, wrapErr(what, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Credential, error) {
		c := store.Credential{Scope: s}
		if err := row.Scan(&c.Name, &c.CreatedAt, &c.UpdatedAt); err != nil {
			return nil, err
		}
		c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
		return &c, nil
	})
	if err != nil {
		return nil, wrapErr(what, err)
	}
	return out, nil
}

// DeleteCredential removes the credential name of scope s. It returns an
// error wrapping store.ErrNotFound if there is none, store.ErrClosed after
// Close.
func (db *DB) DeleteCredential(ctx context.Context, s store.Scope, name string) error {
	what := fmt.Sprintf("delete credential %q in %q", name, s.String())
	return db.deleteOne(ctx, what, `DELETE FROM credentials WHERE `+scopeIs+` AND name = $4`, s.Account, s.Org, s.Project, name)
}
