package postgres

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
)

// SchemaVersion is the layout version this package writes.
var SchemaVersion = schemaVersion

// SetPruneChunk makes each prune statement delete at most n tasks.
func (db *DB) SetPruneChunk(n int) { db.pruneChunk = n }

// Setting reads a setting of one of the pool's sessions.
func (db *DB) Setting(ctx context.Context, name string) (string, error) {
	var v string
	err := db.pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
	return v, err
}

func (db *DB) SetScrubChunk(n int) { db.scrubChunk = n }

// MigrationV1 is the first step of the schema: the layout of version 1.
var MigrationV1 = migrations[0]

// BackendPID is the server process of the lock's session, 0 once closed.
func (l *Lock) BackendPID() uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return 0
	}
	return l.conn.PgConn().PID()
}

// PullQuery is Pull's statement for one want.
const PullQuery = pullQuery

// Explain returns the plan of sql with args, one line per row.
func (db *DB) Explain(ctx context.Context, sql string, args ...any) (string, error) {
	rows, err := db.pool.Query(ctx, "EXPLAIN "+sql, args...)
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(lines, "\n"), err
}

// Exec runs sql on one of the pool's sessions (the store's schema).
func (db *DB) Exec(ctx context.Context, sql string, args ...any) error {
	_, err := db.pool.Exec(ctx, sql, args...)
	return err
}
