package postgres

import (
	"context"
	"time"
)

// defaultPruneChunk caps the tasks one prune statement deletes, so that a
// prune of a long history is many short transactions rather than one that
// holds row locks and bloats the WAL at once.
const defaultPruneChunk = 2000

// Prune deletes the final (succeeded or failed) tasks that finished, by
// UpdatedAt, before cutoff, and returns how many it deleted; their request
// ids are then free for new tasks. Queued and leased tasks are never
// deleted.
//
// Prune is not part of store.Store: retention is each implementation's
// concern. Options.KeepFinished runs it periodically; several managers
// pruning one database at once only share the work. It deletes at most a
// few thousand tasks per statement and checks ctx between them, so a
// cancelled ctx stops it part-way with ctx's error and the count deleted
// so far. It returns store.ErrClosed after Close.
func (db *DB) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	total := 0
	for {
		n, err := db.pruneChunkOnce(ctx, cutoff)
		total += n
		if err != nil {
			return total, err
		}
		if n < db.pruneChunk {
			return total, nil
		}
	}
}

// pruneChunkOnce deletes up to db.pruneChunk prunable tasks in a call of
// its own (so that Close need not wait for a whole prune).
func (db *DB) pruneChunkOnce(ctx context.Context, cutoff time.Time) (int, error) {
	ctx, done, err := db.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	tag, err := db.pool.Exec(ctx, `
		DELETE FROM tasks WHERE id IN (
			SELECT id FROM tasks
			WHERE state IN ('succeeded', 'failed') AND updated_at < $1
			LIMIT $2)`,
		cutoff, db.pruneChunk)
	if err != nil {
		return 0, wrapErr("prune", err)
	}
	return int(tag.RowsAffected()), nil
}
